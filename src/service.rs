//! The boundary between the loop and a protocol.
//!
//! The loop owns the sockets and calls a [`Service`] with the bytes it has read; the
//! service answers through a [`Context`], which writes with `sendall` semantics without
//! ever blocking. A service never sees a socket, a token or a readiness event, so the
//! same service runs unchanged over TCP, Unix sockets or TLS.

use std::fmt;
use std::io;

use log::debug;

use crate::conn::{Conns, Phase};
use crate::endpoint::Endpoint;
use crate::proxy::ProxyHeader;
use crate::stats::Stats;
use crate::tls::TlsInfo;
use crate::transport::PeerAddr;

/// Identifies one stream connection for the life of its loop.
///
/// It pairs the connection's slot in the loop's slab with its accept sequence number, so
/// an id kept after its connection closed never names the connection that reuses the
/// slot. `Display` shows the sequence number (`7`), which is what chat prints as `<7>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) seq: u32,
    pub(crate) key: u32,
}

impl ConnId {
    /// The accept sequence number: 1 for the loop's first connection, then counting up.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The connection's slot in the loop's connection table. Slots are reused once a
    /// connection closes, which is why an id also carries the sequence number.
    pub fn slot(&self) -> usize {
        self.key as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.seq)
    }
}

/// A protocol served by the loop: echo, line, or one of your own.
///
/// The loop calls these methods on its own thread, one at a time. Each stream
/// connection gets a value of [`Service::State`] from [`open`](Service::open), which the
/// loop stores and hands back to every later call for that connection, and finally to
/// [`close`](Service::close).
///
/// # Contract
/// - `data` receives bytes in the order the peer sent them, in chunks of any size: a
///   message may be split across calls or several may arrive in one. Keep whatever you
///   cannot use yet (an unterminated line) in your `State`, and keep it small: an idle
///   connection should own no buffers.
/// - Writes through the [`Context`] never block and are never lost: what the socket does
///   not take at once is queued and written when it can. While a connection's queued
///   output is above the loop's high-water mark the loop stops reading from it
///   (backpressure), so a service that only answers what it reads needs no flow control.
/// - `eof` is called once when no more input will come: the peer shut down its sending
///   side, or the server is shutting down. What you write in it is still delivered.
/// - After [`Context::close`] no more `data` arrives for that connection.
/// - A service that produces output on its own (chargen) rather than in answer to input
///   asks for [`writable`](Service::writable) with [`Context::want_writable`] and writes
///   one chunk per call: the loop calls it again only once the socket has taken that
///   chunk, so output goes exactly as fast as the peer reads.
/// - On a TLS connection, `open` runs before the handshake: what it writes waits for the
///   handshake, and what it cannot know yet (the session, [`Context::tls`]) it learns in
///   [`writable`](Service::writable), which is never called before the handshake is
///   over.
pub trait Service {
    /// Per-connection state.
    type State;

    /// A connection was accepted. Returns its state; may already write a greeting.
    fn open(&mut self, ctx: &mut Context<'_>) -> Self::State;

    /// Bytes arrived on a connection.
    fn data(&mut self, state: &mut Self::State, data: &[u8], ctx: &mut Context<'_>);

    /// No more input will arrive on this connection (see the trait docs).
    fn eof(&mut self, state: &mut Self::State, ctx: &mut Context<'_>) {
        let _ = (state, ctx);
    }

    /// The connection can take more output: everything written so far has gone to the
    /// socket. Called only after [`Context::want_writable`], once per request: a
    /// producer writes a chunk and asks again. Never called while output is queued, so
    /// a peer that stops reading stops the calls, and nothing piles up — nor during a
    /// TLS handshake, when nothing could go out anyway.
    fn writable(&mut self, state: &mut Self::State, ctx: &mut Context<'_>) {
        let _ = (state, ctx);
    }

    /// The connection is gone; its state is handed back for any cleanup.
    fn close(&mut self, state: Self::State, id: ConnId) {
        let _ = (state, id);
    }

    /// The bytes sent to a connection refused because the server is full
    /// (`--max-conns`), before it is closed. Empty (the default) sends nothing.
    fn reject_message(&self, listener: usize) -> &[u8] {
        let _ = listener;
        &[]
    }

    /// A datagram arrived on a datagram socket (UDP, Unix datagram). Answer it, if at
    /// all, with [`DatagramContext::reply`]. The default drops it.
    ///
    /// A datagram is a whole message: there is no connection and no per-peer state in
    /// the loop. A zero-length datagram arrives as an empty slice.
    fn datagram(&mut self, data: &[u8], ctx: &mut DatagramContext<'_>) {
        let _ = (data, ctx);
    }
}

/// What a service can do with one datagram: answer it, once.
pub struct DatagramContext<'a> {
    pub(crate) socket: usize,
    /// The socket's bound address.
    pub(crate) local: &'a Endpoint,
    pub(crate) peer: &'a PeerAddr,
    pub(crate) request_len: usize,
    /// Where the reply is copied; the loop sends it after the callback returns.
    pub(crate) arena: &'a mut Vec<u8>,
    pub(crate) reply: Option<(usize, usize)>,
    pub(crate) stats: &'a mut Stats,
}

impl DatagramContext<'_> {
    /// The index of the socket the datagram arrived on, in the order the sockets were
    /// given to the [`Builder`](crate::Builder) (the numbering [`Context::listener`]
    /// uses for stream listeners).
    pub fn socket(&self) -> usize {
        self.socket
    }

    /// The sender.
    pub fn peer(&self) -> &PeerAddr {
        self.peer
    }

    /// The socket the datagram arrived on, as its URL reads in the ready line
    /// (`udp://127.0.0.1:5001`, port 0 resolved): which of several sockets answered.
    pub fn socket_addr(&self) -> &Endpoint {
        self.local
    }

    /// The address the datagram was sent to, as far as the socket knows it: its bound
    /// address (a socket bound to `0.0.0.0` reports that, not the interface address
    /// the datagram came in on). No system call: the address was read at bind time.
    pub fn local_addr(&self) -> io::Result<PeerAddr> {
        endpoint_addr(self.local)
    }

    /// Answers the datagram with `bytes`. Returns false, and sends nothing, when the
    /// datagram was already answered or when `bytes` is longer than the request: a
    /// datagram server must never amplify what it is sent (such a reply is counted as
    /// dropped).
    pub fn reply(&mut self, bytes: &[u8]) -> bool {
        if self.reply.is_some() {
            return false;
        }
        if bytes.len() > self.request_len {
            self.stats.datagrams_dropped += 1;
            debug!(
                "reply of {} bytes to a {}-byte datagram from {} refused: larger than the request",
                bytes.len(),
                self.request_len,
                self.peer
            );
            return false;
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.reply = Some((start, bytes.len()));
        true
    }
}

/// What a service callback can do: write to the connection it was called for (or to
/// another by its [`ConnId`]), ask to be told when it can take more, close it, and
/// learn where it comes from.
///
/// It borrows the loop's connection table for the length of one callback; every
/// method is a call into that table, which owns the rules (`conn/mod.rs`).
pub struct Context<'a> {
    conns: &'a mut Conns,
    stats: &'a mut Stats,
    /// Every listener's bound address, by index (looked up only when asked for).
    listeners: &'a [Endpoint],
    key: usize,
}

impl<'a> Context<'a> {
    /// The context of a callback for connection `key`.
    pub(crate) fn new(
        conns: &'a mut Conns,
        stats: &'a mut Stats,
        listeners: &'a [Endpoint],
        key: usize,
    ) -> Self {
        Context {
            conns,
            stats,
            listeners,
            key,
        }
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        self.conns.id(self.key)
    }

    /// The index of the listener that accepted this connection, in the order the
    /// listeners were given to the [`Builder`](crate::Builder).
    pub fn listener(&self) -> usize {
        self.conns.listener(self.key)
    }

    /// The listener that accepted this connection, as its URL reads in the ready line
    /// (`tcp://127.0.0.1:5001`, port 0 resolved): which of several listeners — or,
    /// behind a balancer, which server — a client reached. No system call.
    pub fn listener_addr(&self) -> &Endpoint {
        &self.listeners[self.listener()]
    }

    /// What this connection's TLS session negotiated and the client certificate's
    /// subject (see [`TlsInfo`]); `None` on a plain connection, and on a TLS one until
    /// its handshake is over (in [`Service::open`], always: ask in
    /// [`Service::writable`]). Built on each call, the certificate parsed then: ask
    /// once, not per message.
    pub fn tls(&self) -> Option<TlsInfo> {
        self.conns.tls_info(self.key)
    }

    /// The client's address: the one a PROXY protocol header named, when the listener
    /// expects one and it named a client; else the socket's peer (asks the kernel: a
    /// `getpeername` call).
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        self.conns.peer_addr(self.key)
    }

    /// Who passed the connection on when a PROXY protocol header named its client: the
    /// socket's own peer, the load balancer (a `getpeername` call). `None` for a
    /// connection without such a header — including a balancer's health check, whose
    /// `LOCAL` header names no client.
    pub fn proxied_by(&self) -> Option<io::Result<PeerAddr>> {
        self.conns.proxied_by(self.key)
    }

    /// The PROXY protocol header that named this connection's client: its addresses
    /// and, in version 2, its TLVs (ALPN, authority, unique id, TLS details).
    pub fn proxy_header(&self) -> Option<&ProxyHeader> {
        self.conns.proxy_header(self.key)
    }

    /// This end's address, the one the connection was accepted on (a `getsockname`
    /// call).
    pub fn local_addr(&self) -> io::Result<PeerAddr> {
        self.conns.local_addr(self.key)
    }

    /// The counters of the loop serving this connection, as they are now (the same as
    /// [`EventLoop::stats`](crate::EventLoop::stats), gauges included).
    pub fn loop_stats(&self) -> Stats {
        self.conns.with_gauges(self.stats)
    }

    /// Bytes written by this connection's service but not yet taken by the socket.
    pub fn queued(&self) -> usize {
        self.conns.queued(self.key)
    }

    /// True once the connection is finishing: after [`close`](Self::close), on a
    /// socket error, or during server shutdown. Writes are then ignored or only flushed.
    pub fn is_closing(&self) -> bool {
        self.conns.phase(self.key) != Phase::Open
    }

    /// Sends bytes to the peer with `sendall` semantics: all of them, in order, without
    /// blocking (see [`Service`]).
    pub fn write(&mut self, bytes: &[u8]) {
        self.write_vectored(&[bytes]);
    }

    /// Sends several slices as if concatenated, in one `writev` when nothing is queued.
    pub fn write_vectored(&mut self, parts: &[&[u8]]) {
        self.conns.send(self.key, parts, self.stats);
    }

    /// Sends bytes to another connection of this loop, with the same guarantees as
    /// [`write`](Self::write). Returns false, and sends nothing, when `to` is closed or
    /// closing. The receiver is subject to [`Config::max_outbuf`](crate::Config):
    /// when it does not read fast enough it is closed as a slow consumer, so a fan-out
    /// cannot grow memory without bound.
    pub fn write_to(&mut self, to: ConnId, bytes: &[u8]) -> bool {
        self.write_vectored_to(to, &[bytes])
    }

    /// [`write_vectored`](Self::write_vectored) to another connection (see
    /// [`write_to`](Self::write_to)).
    pub fn write_vectored_to(&mut self, to: ConnId, parts: &[&[u8]]) -> bool {
        match self.conns.open_slot(to) {
            Some(key) => {
                self.conns.send(key, parts, self.stats);
                true
            }
            None => false,
        }
    }

    /// Asks for one call of [`Service::writable`] as soon as this connection has no
    /// output queued: within this turn if the socket took everything, else once a
    /// writable event has drained the queue.
    pub fn want_writable(&mut self) {
        self.conns.want_writable(self.key);
    }

    /// Finishes the connection: no more input is delivered, what was written is still
    /// sent, then the server shuts down its sending side and closes.
    pub fn close(&mut self) {
        self.conns.close(self.key);
    }
}

/// The socket address of a bound endpoint: its host is an IP literal once bound.
fn endpoint_addr(ep: &Endpoint) -> io::Result<PeerAddr> {
    if let Some(path) = ep.path() {
        return Ok(PeerAddr::Unix(Some(path.to_path_buf())));
    }
    ep.host_port()
        .and_then(|hp| {
            let ip = hp.host().parse().ok()?;
            Some(PeerAddr::Inet(std::net::SocketAddr::new(ip, hp.port())))
        })
        .ok_or_else(|| io::Error::other(format!("{ep} has no socket address")))
}
