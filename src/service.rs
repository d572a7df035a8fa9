//! The boundary between the loop and a protocol.
//!
//! The loop owns the sockets and calls a [`Service`] with the bytes it has read; the
//! service answers through a [`Context`], which writes with `sendall` semantics without
//! ever blocking. A service never sees a socket, a token or a readiness event, so the
//! same service runs unchanged over TCP, Unix sockets or TLS.

use std::fmt;
use std::io;

use log::debug;
use slab::Slab;

use crate::conn::{Conn, Phase};
use crate::stats::Stats;
use crate::timer::{Deadlines, TIMER_KINDS, Timer};
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
/// connection gets a value of [`Service::Conn`] from [`open`](Service::open), which the
/// loop stores and hands back to every later call for that connection, and finally to
/// [`close`](Service::close).
///
/// # Contract
/// - `data` receives bytes in the order the peer sent them, in chunks of any size: a
///   message may be split across calls or several may arrive in one. Keep whatever you
///   cannot use yet (an unterminated line) in your `Conn`, and keep it small: an idle
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
pub trait Service {
    /// Per-connection state.
    type Conn;

    /// A connection was accepted. Returns its state; may already write a greeting.
    fn open(&mut self, ctx: &mut Context<'_>) -> Self::Conn;

    /// Bytes arrived on a connection.
    fn data(&mut self, conn: &mut Self::Conn, data: &[u8], ctx: &mut Context<'_>);

    /// No more input will arrive on this connection (see the trait docs).
    fn eof(&mut self, conn: &mut Self::Conn, ctx: &mut Context<'_>) {
        let _ = (conn, ctx);
    }

    /// The connection can take more output: everything written so far has gone to the
    /// socket. Called only after [`Context::want_writable`], once per request: a
    /// producer writes a chunk and asks again. Never called while output is queued, so
    /// a peer that stops reading stops the calls, and nothing piles up.
    fn writable(&mut self, conn: &mut Self::Conn, ctx: &mut Context<'_>) {
        let _ = (conn, ctx);
    }

    /// The connection is gone; its state is handed back for any cleanup.
    fn close(&mut self, conn: Self::Conn, id: ConnId) {
        let _ = (conn, id);
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
    pub(crate) listener: usize,
    pub(crate) peer: &'a PeerAddr,
    pub(crate) request_len: usize,
    /// Where the reply is copied; the loop sends it after the callback returns.
    pub(crate) arena: &'a mut Vec<u8>,
    pub(crate) reply: Option<(usize, usize)>,
    pub(crate) stats: &'a mut Stats,
}

impl DatagramContext<'_> {
    /// The index of the socket the datagram arrived on (see [`Context::listener`]).
    pub fn listener(&self) -> usize {
        self.listener
    }

    /// The sender.
    pub fn peer(&self) -> &PeerAddr {
        self.peer
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
pub struct Context<'a> {
    pub(crate) conns: &'a mut Slab<Conn>,
    pub(crate) timers: &'a mut [Deadlines; TIMER_KINDS],
    pub(crate) key: usize,
    pub(crate) stats: &'a mut Stats,
    pub(crate) now_ms: u64,
    pub(crate) max_outbuf: usize,
    /// Other connections this callback ended (a slow consumer of a fan-out, a write
    /// error): the loop closes them when the callback returns.
    pub(crate) ended: &'a mut Vec<ConnId>,
}

impl Context<'_> {
    fn conn(&self) -> &Conn {
        &self.conns[self.key]
    }

    /// This connection's id.
    pub fn id(&self) -> ConnId {
        let c = self.conn();
        ConnId {
            seq: c.seq,
            key: self.key as u32,
        }
    }

    /// The index of the listener that accepted this connection, in the order the
    /// listeners were given to the [`Builder`](crate::Builder).
    pub fn listener(&self) -> usize {
        self.conn().listener as usize
    }

    /// The peer's address (asks the kernel: a `getpeername` call).
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        self.conn().stream.peer_addr()
    }

    /// Bytes written by this connection's service but not yet taken by the socket.
    pub fn queued(&self) -> usize {
        self.conn().out.len()
    }

    /// True once the connection is finishing: after [`close`](Self::close), on a
    /// socket error, or during server shutdown. Writes are then ignored or only flushed.
    pub fn is_closing(&self) -> bool {
        self.conn().phase != Phase::Open
    }

    /// Sends bytes to the peer with `sendall` semantics: all of them, in order, without
    /// blocking (see [`Service`]).
    pub fn write(&mut self, bytes: &[u8]) {
        self.write_vectored(&[bytes]);
    }

    /// Sends several slices as if concatenated, in one `writev` when nothing is queued.
    pub fn write_vectored(&mut self, parts: &[&[u8]]) {
        self.send(self.key, parts);
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
        let key = to.key as usize;
        match self.conns.get(key) {
            Some(c) if c.seq == to.seq && c.phase == Phase::Open => {
                self.send(key, parts);
                true
            }
            _ => false,
        }
    }

    /// Asks for one call of [`Service::writable`] as soon as this connection has no
    /// output queued: within this turn if the socket took everything, else once a
    /// writable event has drained the queue.
    pub fn want_writable(&mut self) {
        self.conns[self.key].wants_writable = true;
    }

    fn send(&mut self, key: usize, parts: &[&[u8]]) {
        let conn = &mut self.conns[key];
        if !matches!(conn.phase, Phase::Open | Phase::Closing) {
            return;
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return;
        }
        let before = conn.out.len();
        // Skip empty parts so that a single real slice becomes a plain write().
        let mut inline: [&[u8]; 4] = [&[]; 4];
        let mut n = 0;
        let parts: &[&[u8]] = if parts.len() <= inline.len() {
            for p in parts.iter().filter(|p| !p.is_empty()) {
                inline[n] = p;
                n += 1;
            }
            &inline[..n]
        } else {
            parts
        };
        let ended = match conn.send(parts, self.stats) {
            Ok(()) => {
                let queued = conn.out.len();
                if queued > self.max_outbuf {
                    self.stats.slow_consumers += 1;
                    debug!(
                        "conn {}: {queued} bytes unsent, over the {} byte limit: slow consumer, closing",
                        conn.seq, self.max_outbuf
                    );
                    conn.out.clear();
                    conn.phase = Phase::Dead;
                    true
                } else {
                    if total + before > queued {
                        touch(self.conns, self.timers, key, self.now_ms);
                    }
                    false
                }
            }
            Err(e) => {
                self.stats.conn_errors += 1;
                debug!("conn {}: write: {e}", conn.seq);
                conn.phase = Phase::Dead;
                true
            }
        };
        if ended && key != self.key {
            let seq = self.conns[key].seq;
            self.ended.push(ConnId {
                seq,
                key: key as u32,
            });
        }
    }

    /// Finishes the connection: no more input is delivered, what was written is still
    /// sent, then the server shuts down its sending side and closes.
    pub fn close(&mut self) {
        let conn = &mut self.conns[self.key];
        if conn.phase == Phase::Open {
            conn.phase = Phase::Closing;
        }
    }
}

/// How stale an idle-timer stamp may get before traffic moves the connection to the
/// tail of the idle list. Touching at most this often keeps list surgery off the
/// per-message path; the idle deadline is lengthened by the same amount, so a
/// connection is never closed before it has been idle for the full timeout.
pub(crate) const TOUCH_GRANULARITY_MS: u64 = 100;

/// Records traffic on a connection for its idle timer.
pub(crate) fn touch(
    conns: &mut Slab<Conn>,
    timers: &mut [Deadlines; TIMER_KINDS],
    key: usize,
    now_ms: u64,
) {
    let links = &conns[key].links;
    if links.on() == Some(Timer::Idle) && now_ms >= links.stamp + TOUCH_GRANULARITY_MS {
        let idle = &mut timers[Timer::Idle as usize];
        idle.unlink(key, conns);
        idle.push(Timer::Idle, key, now_ms, conns);
    }
}
