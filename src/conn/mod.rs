//! The connection layer: every stream connection of one loop, in one table that owns
//! all they need — the slab of entries, the output they owe, their deadlines, the list
//! of connections to close as soon as possible, the loop's clock, and the limits.
//!
//! The loop (`event_loop/`) asks the table what a connection wants next
//! ([`Conns::next_step`]) and does it; a service reaches the table only through its
//! [`Context`](crate::Context). Every rule about one connection's bytes and life is a
//! method here: `sendall` and the slow-consumer limit ([`Conns::send`]), flushing and
//! backpressure, the idle timer's touch, the lifecycle in `entry.rs`, and closing.
//!
//! # Closing as soon as possible
//! A connection that must end while a service callback is running — a chat receiver
//! that a fan-out found to be a slow consumer, a write that failed — cannot be removed
//! there: the callback may still hold its id, and the loop above may still be walking
//! its events. Like Redis's `CLIENT_CLOSE_ASAP`, it is marked [`Phase::Closed`], its
//! output is dropped at once (that is the memory worth getting back), and its reason
//! goes on a list that the loop empties as soon as the callback returns
//! ([`Conns::take_closed`]). Everything that ends a connection goes through that list,
//! so one function logs, counts and removes every close.
//!
//! # The PROXY protocol header
//! A connection accepted by a listener that expects a PROXY protocol header (see
//! `crate::proxy`) starts in [`Phase::Header`], on the handshake deadline, and its
//! service is not opened yet. Its input is read from the socket itself — beneath TLS,
//! whose handshake comes after the header — and parsed; bytes of a header still
//! incomplete are kept in a side table indexed like the slab, and nothing else is (so
//! a connection whose header trickles in costs its entry plus those bytes, at most
//! [`MAX_V2_HEADER`](crate::proxy::MAX_V2_HEADER), and about a hundred bytes of
//! bookkeeping). Once the header is whole it is taken off, the client it names takes
//! the same place in the side table and becomes the connection's peer, and the bytes
//! that came behind it go to the service — or, over TLS, back to the session as the
//! start of its handshake. A header is one read in the usual case, header and first
//! data together: no system call more than a connection without one, and a few
//! hundred instructions (callgrind: 2,190 per connection without a header, 2,850 with
//! one, next to the tens of thousands the kernel spends on a TCP connection).
//!
//! # Memory
//! An entry is 48 bytes: the socket, a ticket to its output queue, its readiness, its
//! sequence number, its listener, its phase and flags, and its place in a deadline
//! list. Buffers are the [`Outboxes`]'s, and only while output is owed.

mod connection;
mod entry;
mod outbox;
mod timer;

use std::fmt;
use std::io;

use log::{debug, trace, warn};
use mio::Token;
use slab::Slab;

pub(crate) use connection::{Connection, Input};
pub(crate) use entry::{Phase, Reason, Step};
pub(crate) use outbox::Outboxes;

use entry::{Entry, Flags};
use timer::{Deadlines, TIMER_KINDS, Timer};

use crate::proxy::{self, Parsed, ProxyHeader, ProxyProtocol};
use crate::readiness::Readiness;
use crate::service::ConnId;
use crate::stats::Stats;
use crate::tls::TlsInfo;
use crate::token;
use crate::transport::{PeerAddr, Transport};

/// How stale an idle-timer stamp may get before traffic moves the connection to the
/// tail of the idle list. Touching at most this often keeps list surgery off the
/// per-message path; the idle deadline is lengthened by the same amount, so a
/// connection is never closed before it has been idle for the full timeout.
const TOUCH_GRANULARITY_MS: u64 = 100;

/// The limits a table enforces (from the loop's [`Config`](crate::Config)).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Most connections at once.
    pub(crate) max_conns: usize,
    /// Unsent bytes one connection may owe before it is a slow consumer.
    pub(crate) max_outbuf: usize,
    /// Unsent bytes all connections together may owe before the biggest are closed.
    pub(crate) max_outbuf_total: usize,
    /// Stop reading a connection that owes at least this much.
    pub(crate) high_water: usize,
    /// Read it again once it owes at most this much.
    pub(crate) low_water: usize,
    /// Idle timeout in milliseconds; `None`: never.
    pub(crate) idle_ms: Option<u64>,
    pub(crate) linger_ms: u64,
    pub(crate) handshake_ms: u64,
    /// Most bytes of spare output chunks kept between bursts.
    pub(crate) spare_output: usize,
}

/// Every stream connection of one loop.
pub(crate) struct Conns {
    entries: Slab<Entry>,
    outboxes: Outboxes,
    timers: [Deadlines; TIMER_KINDS],
    /// Connections to close as soon as the current callback returns, and why.
    closing: Vec<(usize, u32, Reason)>,
    limits: Limits,
    /// The loop's clock: milliseconds since it started, read once per turn.
    now_ms: u64,
    next_seq: u32,
    /// The output queued for all connections passed the total limit during the last
    /// callback: [`take_closed`](Self::take_closed) picks whom to close.
    over_total: bool,
    /// By slot, for connections that owe or owed a PROXY header: the bytes of one not
    /// yet complete, then the header that named the client. Indexed like the slab and
    /// grown only when such a connection arrives, so a loop without them pays
    /// nothing, and one with them no hashing.
    proxy: Vec<Option<Box<ProxyState>>>,
    /// Connections not read because of backpressure, now.
    paused: usize,
    /// Connections waiting for their PROXY header or TLS handshake, now.
    waiting: usize,
}

/// What the connection table keeps of a connection's PROXY header.
enum ProxyState {
    /// The bytes of a header not yet complete.
    Partial(Vec<u8>),
    /// The header that named the client.
    Named(ProxyHeader),
}

/// What reading a PROXY protocol header came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderRead {
    /// Not complete yet: wait for more.
    Waiting,
    /// Taken off; the connection is open. This many bytes that came behind it are at
    /// the front of the buffer, for the service.
    Done(usize),
    /// The connection was closed: a bad header, an early end, an error.
    Closed,
}

impl Conns {
    /// An empty table, with room reserved (not touched) for `limits.max_conns`.
    pub(crate) fn new(limits: Limits) -> Self {
        let idle = limits.idle_ms.map_or(0, |ms| ms + TOUCH_GRANULARITY_MS);
        Conns {
            // Address space only: pages are touched as connections arrive, and the
            // table never has to be copied while it grows.
            entries: Slab::with_capacity(limits.max_conns.min(1 << 20)),
            outboxes: Outboxes::new(limits.spare_output),
            timers: [
                Deadlines::new(idle),
                Deadlines::new(limits.linger_ms),
                Deadlines::new(limits.handshake_ms),
            ],
            closing: Vec::new(),
            limits,
            now_ms: 0,
            next_seq: 0,
            over_total: false,
            proxy: Vec::new(),
            paused: 0,
            waiting: 0,
        }
    }

    /// Connections in the table.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no connection is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True while slot `key` holds a connection.
    pub(crate) fn contains(&self, key: usize) -> bool {
        self.entries.contains(key)
    }

    /// The connection limit.
    pub(crate) fn max_conns(&self) -> usize {
        self.limits.max_conns
    }

    /// True at the connection limit.
    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.limits.max_conns
    }

    /// Sets the clock, once per turn.
    pub(crate) fn set_clock(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Every slot in use, for walking all connections.
    pub(crate) fn keys(&self) -> Vec<usize> {
        self.entries.iter().map(|(k, _)| k).collect()
    }

    /// Adds an accepted connection and starts its deadline: the handshake deadline for
    /// a connection that owes a PROXY header (`proxy`) or a TLS handshake, else the
    /// idle timer (if any). Returns its slot.
    pub(crate) fn insert(
        &mut self,
        transport: Transport,
        listener: usize,
        proxy: Option<ProxyProtocol>,
        short_lived: bool,
    ) -> usize {
        self.next_seq = self.next_seq.wrapping_add(1);
        let timer = if proxy.is_some() || short_lived || transport.is_handshaking() {
            Some(Timer::Handshake)
        } else {
            self.idle_timer()
        };
        let waiting = proxy.is_some() || transport.is_handshaking();
        let phase = proxy.map_or(Phase::Open, Phase::Header);
        let conn = Connection::new(transport, Readiness::WRITABLE);
        let listener = u16::try_from(listener).unwrap_or(u16::MAX);
        let key = self
            .entries
            .insert(Entry::new(conn, self.next_seq, listener, phase));
        let flags = &mut self.entries[key].flags;
        flags.set(Flags::SHORT_LIVED, short_lived);
        flags.set(Flags::WAITING, waiting);
        self.waiting += usize::from(waiting);
        self.start_timer(key, timer);
        key
    }

    /// The connection's token: its slot and sequence number (see `token.rs`).
    pub(crate) fn token(&self, key: usize) -> Token {
        token::conn(key, self.entries[key].seq)
    }

    /// True when `key` holds the connection whose token carried `seq`.
    #[inline]
    pub(crate) fn is_current(&self, key: usize, seq: usize) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| token::seq_bits(e.seq) == seq)
    }

    /// The connection's id, as services see it.
    #[inline]
    pub(crate) fn id(&self, key: usize) -> ConnId {
        ConnId {
            seq: self.entries[key].seq,
            key: key as u32,
        }
    }

    /// The slot of connection `id`, if it is still open (for writes to other
    /// connections: a departed or closing one is refused, never misdirected).
    pub(crate) fn open_slot(&self, id: ConnId) -> Option<usize> {
        let key = id.key as usize;
        self.entries
            .get(key)
            .filter(|e| e.seq == id.seq && e.phase == Phase::Open)
            .map(|_| key)
    }

    /// The listener that accepted the connection.
    pub(crate) fn listener(&self, key: usize) -> usize {
        usize::from(self.entries[key].listener)
    }

    /// Where the connection is in its life.
    #[inline]
    pub(crate) fn phase(&self, key: usize) -> Phase {
        self.entries[key].phase
    }

    /// The peer's address: the client a PROXY header named, else the socket's peer (a
    /// `getpeername` call).
    pub(crate) fn peer_addr(&self, key: usize) -> io::Result<PeerAddr> {
        match self.proxy_header(key) {
            Some(h) => Ok(h.source().clone()),
            None => self.entries[key].conn.transport().peer_addr(),
        }
    }

    /// The socket's peer when a PROXY header named someone else as the client: the
    /// balancer.
    pub(crate) fn proxied_by(&self, key: usize) -> Option<io::Result<PeerAddr>> {
        self.proxy_header(key)
            .map(|_| self.entries[key].conn.transport().peer_addr())
    }

    /// The PROXY header that named this connection's client.
    pub(crate) fn proxy_header(&self, key: usize) -> Option<&ProxyHeader> {
        match self.proxy.get(key)?.as_deref()? {
            ProxyState::Named(h) => Some(h),
            ProxyState::Partial(_) => None,
        }
    }

    /// This end's address (a `getsockname` call).
    pub(crate) fn local_addr(&self, key: usize) -> io::Result<PeerAddr> {
        self.entries[key].conn.transport().local_addr()
    }

    /// What the connection's TLS session negotiated (see [`TlsInfo`]).
    pub(crate) fn tls_info(&self, key: usize) -> Option<TlsInfo> {
        self.entries[key].conn.transport().tls_info()
    }

    /// The connection for the log: `conn 7 from 203.0.113.9:41000 via
    /// 127.0.0.1:55012` (via: the balancer, when a PROXY header named the client).
    /// Addresses are asked for only when it is formatted.
    pub(crate) fn describe(&self, key: usize) -> Described<'_> {
        Described { conns: self, key }
    }

    /// The connection's socket, to register it with `poll`.
    pub(crate) fn source(&mut self, key: usize) -> &mut dyn mio::event::Source {
        self.entries[key].conn.transport_mut().source()
    }

    /// The pending socket error, to say why an error event came.
    pub(crate) fn take_error(&self, key: usize) -> io::Error {
        match self.entries[key].conn.transport().take_error() {
            Ok(Some(e)) | Err(e) => e,
            Ok(None) => io::Error::other("error event without a socket error"),
        }
    }

    /// Bytes the connection owes and the socket has not taken.
    pub(crate) fn queued(&self, key: usize) -> usize {
        self.entries[key].conn.queued(&self.outboxes)
    }

    /// Records a readiness event.
    #[inline]
    pub(crate) fn add_event(&mut self, key: usize, ev: &mio::event::Event) {
        self.entries[key].conn.add_event(ev);
    }

    /// Puts the connection on the loop's list for next turn, unless it is there
    /// already; true when it was added.
    pub(crate) fn mark_ready_listed(&mut self, key: usize) -> bool {
        let flags = &mut self.entries[key].flags;
        let new = !flags.has(Flags::READY_LISTED);
        flags.set(Flags::READY_LISTED, true);
        new
    }

    /// Takes the connection off the loop's list for next turn.
    pub(crate) fn unmark_ready_listed(&mut self, key: usize) {
        self.entries[key].flags.set(Flags::READY_LISTED, false);
    }

    /// What the connection wants done next, given its phase and what its socket is
    /// ready for. This is where backpressure lives: an open connection that owes at
    /// least the high-water mark is not read (its peer's bytes wait in the kernel, and
    /// TCP slows the peer down) until it owes at most the low-water mark again — and
    /// then, its readable flag having been kept, it is read at once.
    #[inline]
    pub(crate) fn next_step(&mut self, key: usize, stats: &mut Stats) -> Step {
        let e = &mut self.entries[key];
        let ready = e.conn.readiness();
        // Older output first.
        if e.conn.can_flush() && e.phase != Phase::Closed {
            return Step::Flush;
        }
        match e.phase {
            Phase::Open => {}
            Phase::Header(_) if ready.readable() => return Step::ReadHeader,
            Phase::Header(_) => return Step::Wait,
            Phase::Closing if e.conn.owes() => return Step::Wait,
            Phase::Closing => return Step::Shutdown,
            Phase::Lingering if ready.readable() => return Step::Read,
            Phase::Lingering | Phase::Closed => return Step::Wait,
        }
        // The common case, kept short: nothing owed, not paused, nothing to produce —
        // read if there is input, else wait.
        if e.conn.nothing_queued()
            && !e
                .flags
                .has(Flags::PAUSED | Flags::PEER_EOF | Flags::WANTS_WRITABLE)
        {
            return if ready.readable() {
                Step::Read
            } else {
                Step::Wait
            };
        }
        self.open_step(key, stats)
    }

    /// [`next_step`](Self::next_step) for an open connection that owes output, is
    /// paused, or wants to produce.
    fn open_step(&mut self, key: usize, stats: &mut Stats) -> Step {
        let e = &mut self.entries[key];
        let ready = e.conn.readiness();
        let queued = e.conn.queued(&self.outboxes);
        if e.flags.has(Flags::PAUSED) && queued <= self.limits.low_water {
            e.flags.set(Flags::PAUSED, false);
            self.paused -= 1;
            stats.backpressure_resumes += 1;
            trace!("conn {}: resume reading, {queued} bytes unsent", e.seq);
        }
        if ready.readable() && !e.flags.has(Flags::PAUSED | Flags::PEER_EOF) {
            if queued < self.limits.high_water {
                return Step::Read;
            }
            e.flags.set(Flags::PAUSED, true);
            self.paused += 1;
            stats.backpressure_pauses += 1;
            trace!("conn {}: pause reading, {queued} bytes unsent", e.seq);
        }
        // Output asked for during a TLS handshake could only be queued (nothing goes
        // out before the handshake is over), and what it says may depend on how the
        // handshake ends (`who` reports the session): the read that completes the
        // handshake comes back here.
        if e.flags.has(Flags::WANTS_WRITABLE)
            && !e.conn.owes()
            && ready.writable()
            && !e.conn.transport().is_handshaking()
        {
            return Step::Produce;
        }
        Step::Wait
    }

    /// Reads once into `buf` (see [`Connection::read`]). Traffic on an open
    /// connection touches its idle timer; a read that completed a TLS handshake moves
    /// it from the handshake deadline to the idle timer.
    pub(crate) fn read(&mut self, key: usize, buf: &mut [u8], stats: &mut Stats) -> Input {
        let e = &mut self.entries[key];
        let input = e.conn.read(buf, stats);
        let open = e.phase == Phase::Open;
        if let Some(what) = e.conn.take_established() {
            stats.tls_handshakes += 1;
            debug!("conn {}: TLS established: {what}", e.seq);
            self.preamble_done(key);
        }
        if open && matches!(input, Input::Data(_)) {
            self.touch(key);
        }
        input
    }

    /// Reads the PROXY protocol header, or more of it (the [`Step::ReadHeader`] step;
    /// see the module docs). Every byte read is counted in `bytes_in` here, those
    /// handed on to the service included.
    pub(crate) fn read_header(
        &mut self,
        key: usize,
        buf: &mut [u8],
        stats: &mut Stats,
    ) -> HeaderRead {
        let e = &mut self.entries[key];
        let Phase::Header(expect) = e.phase else {
            return HeaderRead::Waiting;
        };
        let n = match e.conn.read_raw(buf, stats) {
            Input::Data(n) => n,
            Input::Nothing => return HeaderRead::Waiting,
            Input::Eof => {
                // Nothing at all is a port check (a balancer's plain TCP health check,
                // `nc -z`), not an error.
                let reason = match self.take_partial(key) {
                    None => Reason::PeerClosed,
                    Some(got) => Reason::ProxyError(format!(
                        "closed by the peer after {} bytes of an unfinished PROXY header",
                        got.len()
                    )),
                };
                self.close_asap(key, reason);
                return HeaderRead::Closed;
            }
            Input::Failed(fault) => {
                self.close_asap(key, fault.into());
                return HeaderRead::Closed;
            }
        };
        stats.bytes_in += n as u64;
        // The usual case: the whole header in one read, parsed where it landed, with
        // nothing kept. Otherwise the read is added to the bytes kept from earlier ones.
        let mut got = self.take_partial(key);
        if let Some(got) = &mut got {
            got.extend_from_slice(&buf[..n]);
        }
        let input = got.as_deref().unwrap_or(&buf[..n]);
        let total = input.len();
        let parsed = proxy::parse(input, expect);
        match (&parsed, got) {
            // What came behind a whole header goes to the front of `buf`. A header that
            // was not whole before this read leaves less than the read behind it: that
            // fits.
            (Parsed::Done(len, _), None) => buf.copy_within(*len..n, 0),
            (Parsed::Done(len, _), Some(got)) => buf[..total - len].copy_from_slice(&got[*len..]),
            (Parsed::Incomplete, got) => {
                let got = got.unwrap_or_else(|| buf[..n].to_vec());
                self.keep_proxy_state(key, ProxyState::Partial(got));
            }
            (Parsed::Invalid(_), _) => {}
        }
        match parsed {
            Parsed::Incomplete => HeaderRead::Waiting,
            Parsed::Invalid(what) => {
                self.close_asap(key, Reason::ProxyError(what));
                HeaderRead::Closed
            }
            Parsed::Done(len, header) => {
                let rest = total - len;
                self.header_taken(key, header, stats);
                let e = &mut self.entries[key];
                if rest > 0 && e.conn.transport().is_tls() {
                    e.conn.unread(&buf[..rest]);
                    return HeaderRead::Done(0);
                }
                HeaderRead::Done(rest)
            }
        }
    }

    /// The bytes of an unfinished header, taken out to be added to.
    fn take_partial(&mut self, key: usize) -> Option<Vec<u8>> {
        let slot = self.proxy.get_mut(key)?;
        match slot.take().map(|b| *b) {
            Some(ProxyState::Partial(got)) => Some(got),
            other => {
                *slot = other.map(Box::new);
                None
            }
        }
    }

    fn keep_proxy_state(&mut self, key: usize, state: ProxyState) {
        if self.proxy.len() <= key {
            self.proxy.resize_with(key + 1, || None);
        }
        self.proxy[key] = Some(Box::new(state));
    }

    /// A whole PROXY header was taken off: the connection is open, its client known.
    fn header_taken(&mut self, key: usize, header: Option<ProxyHeader>, stats: &mut Stats) {
        stats.proxy_headers += 1;
        let e = &mut self.entries[key];
        e.phase = Phase::Open;
        match header {
            Some(h) => {
                let version = h.version();
                self.keep_proxy_state(key, ProxyState::Named(h));
                debug!("{}: PROXY v{version} header", self.describe(key));
            }
            None => {
                stats.proxy_local += 1;
                debug!(
                    "conn {}: PROXY header names no client (LOCAL or UNKNOWN: a health \
                     check); the socket's addresses stand",
                    e.seq
                );
            }
        }
        self.preamble_done(key);
    }

    /// A PROXY header was taken off or a TLS handshake completed: unless a TLS
    /// handshake is still to come, the connection no longer waits, and it moves from
    /// the deadline counted from the accept to the idle timer — except a short-lived
    /// one, whose deadline from the accept holds for its whole life.
    fn preamble_done(&mut self, key: usize) {
        let e = &mut self.entries[key];
        if e.conn.transport().is_handshaking() {
            return;
        }
        if e.flags.has(Flags::WAITING) {
            e.flags.set(Flags::WAITING, false);
            self.waiting -= 1;
        }
        if e.flags.timer() == Some(Timer::Handshake) && !e.flags.has(Flags::SHORT_LIVED) {
            self.stop_timer(key);
            self.start_timer(key, self.idle_timer());
        }
    }

    /// `sendall` for a service (see [`Connection::send`]), with the per-connection
    /// limit: a connection that owes more than `max_outbuf` is a slow consumer — a
    /// receiver of output it did not ask for (a fan-out) that reads too slowly — and is
    /// closed rather than buffered for without bound. Writes to a closed connection
    /// are dropped.
    pub(crate) fn send(&mut self, key: usize, parts: &[&[u8]], stats: &mut Stats) {
        let e = &mut self.entries[key];
        if !matches!(e.phase, Phase::Open | Phase::Closing) {
            return;
        }
        match e.conn.send(parts, &mut self.outboxes, stats) {
            Ok(written) => {
                if !e.conn.nothing_queued() {
                    let queued = e.conn.queued(&self.outboxes);
                    if queued > self.limits.max_outbuf {
                        let limit = self.limits.max_outbuf;
                        self.close_asap(key, Reason::SlowConsumer { queued, limit });
                        return;
                    }
                    if self.outboxes.total() > self.limits.max_outbuf_total {
                        self.over_total = true;
                    }
                }
                if written > 0 {
                    self.touch(key);
                }
            }
            Err(fault) => self.close_asap(key, fault.into()),
        }
    }

    /// Writes what the connection owes (the [`Step::Flush`] step).
    pub(crate) fn flush(&mut self, key: usize, stats: &mut Stats) {
        match self.entries[key].conn.flush(&mut self.outboxes, stats) {
            Ok(0) => {}
            Ok(_) => self.touch(key),
            Err(fault) => self.close_asap(key, fault.into()),
        }
    }

    /// Shuts down the write side of a closing connection that owes nothing (the
    /// [`Step::Shutdown`] step). If the peer's end of file was read, nothing unread
    /// remains and the connection is done; else it lingers, discarding input, so
    /// that its close cannot turn into a reset that destroys the last bytes in flight.
    pub(crate) fn shutdown(&mut self, key: usize, stats: &mut Stats) {
        let e = &mut self.entries[key];
        match e.conn.shutdown_write(stats) {
            // TLS: close_notify waits for room in the socket; a writable event
            // flushes it and the next step comes back here.
            Ok(false) => {}
            Ok(true) if e.flags.has(Flags::PEER_EOF) => self.close_asap(key, Reason::PeerClosed),
            Ok(true) => {
                trace!("conn {}: write side shut, lingering", e.seq);
                e.phase = Phase::Lingering;
                self.stop_timer(key);
                self.start_timer(key, Some(Timer::Linger));
            }
            Err(fault) => self.close_asap(key, fault.into()),
        }
    }

    /// The peer's end of file was read: no more input will come.
    pub(crate) fn set_peer_eof(&mut self, key: usize) {
        self.entries[key].flags.set(Flags::PEER_EOF, true);
    }

    /// True once the peer's end of file was read.
    pub(crate) fn peer_eof(&self, key: usize) -> bool {
        self.entries[key].flags.has(Flags::PEER_EOF)
    }

    /// Asks for one [`Service::writable`](crate::Service::writable) call.
    pub(crate) fn want_writable(&mut self, key: usize) {
        self.entries[key].flags.set(Flags::WANTS_WRITABLE, true);
    }

    /// The [`Step::Produce`] step is being taken: the request is used up (the service
    /// asks again if it wants another call).
    pub(crate) fn take_writable_request(&mut self, key: usize) {
        self.entries[key].flags.set(Flags::WANTS_WRITABLE, false);
    }

    /// Finishes an open connection: no more input is served, what is owed is still
    /// written, then its write side is shut down.
    pub(crate) fn close(&mut self, key: usize) {
        let e = &mut self.entries[key];
        if e.phase == Phase::Open {
            e.phase = Phase::Closing;
        }
    }

    /// Ends a connection: its output is dropped now, and it is removed as soon as the
    /// current callback returns (see the module docs).
    pub(crate) fn close_asap(&mut self, key: usize, reason: Reason) {
        let e = &mut self.entries[key];
        if e.phase == Phase::Closed {
            return;
        }
        e.phase = Phase::Closed;
        e.conn.drop_output(&mut self.outboxes);
        self.closing.push((key, e.seq, reason));
    }

    /// True when a connection was closed since the last [`take_closed`](Self::take_closed).
    #[inline]
    pub(crate) fn has_closed(&self) -> bool {
        !self.closing.is_empty() || self.over_total
    }

    /// The next connection to remove and why: one closed as soon as possible, or, when
    /// the output of all connections passed its limit, the one that owes the most.
    pub(crate) fn take_closed(&mut self) -> Option<(usize, Reason)> {
        if self.over_total {
            self.over_total = false;
            self.evict();
        }
        while let Some((key, seq, reason)) = self.closing.pop() {
            if self.entries.get(key).is_some_and(|e| e.seq == seq) {
                return Some((key, reason));
            }
        }
        None
    }

    /// Closes the connections that owe the most until the output of all of them is a
    /// tenth below the total limit (so that the next line of a fan-out does not
    /// trigger it again at once). Redis 7's `maxmemory-clients` is the model: a
    /// ceiling for the sum, not only for each.
    fn evict(&mut self) {
        let limit = self.limits.max_outbuf_total;
        let target = limit - limit / 10;
        if self.outboxes.total() <= limit {
            return;
        }
        let mut biggest: Vec<(usize, usize)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.phase != Phase::Closed)
            .map(|(k, e)| (e.conn.queued(&self.outboxes), k))
            .filter(|&(q, _)| q > 0)
            .collect();
        biggest.sort_unstable_by(|a, b| b.cmp(a));
        for (queued, key) in biggest {
            let total = self.outboxes.total();
            if total <= target {
                break;
            }
            let reason = Reason::Evicted {
                queued,
                total,
                limit,
            };
            warn!(
                conn = self.entries[key].seq,
                peer = self.peer_addr(key).ok().map(|p| p.to_string()),
                reason:% = reason;
                "{}: closing, {reason}",
                self.describe(key)
            );
            self.close_asap(key, reason);
        }
    }

    /// Removes a connection (its socket closes when the entry is dropped, which also
    /// takes it out of the poll set).
    pub(crate) fn remove(&mut self, key: usize) -> (ConnId, Connection) {
        self.stop_timer(key);
        let flags = self.entries[key].flags;
        self.paused -= usize::from(flags.has(Flags::PAUSED));
        self.waiting -= usize::from(flags.has(Flags::WAITING));
        if let Some(state) = self.proxy.get_mut(key) {
            *state = None;
        }
        let id = self.id(key);
        let mut e = self.entries.remove(key);
        e.conn.drop_output(&mut self.outboxes);
        (id, e.conn)
    }

    /// A connection whose deadline has passed, and which deadline it was.
    pub(crate) fn expired(&mut self) -> Option<(usize, Reason)> {
        let now = self.now_ms;
        for (t, reason) in [
            (Timer::Idle, Reason::IdleTimeout),
            (Timer::Linger, Reason::LingerOver),
            (Timer::Handshake, Reason::HandshakeTimeout),
        ] {
            if let Some(key) = self.timers[t as usize].expired(now, &self.entries) {
                let e = &self.entries[key];
                if matches!(e.phase, Phase::Header(_)) {
                    return Some((key, Reason::ProxyTimeout));
                }
                if e.flags.has(Flags::SHORT_LIVED) && !e.conn.transport().is_handshaking() {
                    return Some((key, Reason::RequestTimeout));
                }
                return Some((key, reason));
            }
        }
        None
    }

    /// The earliest deadline, in milliseconds of the loop's clock.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.timers
            .iter()
            .filter_map(|d| d.next_deadline(&self.entries))
            .min()
    }

    /// Bytes of output chunks freed since the last call (see `outbox.rs`).
    pub(crate) fn take_freed(&mut self) -> usize {
        self.outboxes.take_freed()
    }

    /// The running totals `stats` with the gauges, which only the table knows, set to
    /// how things are now: connections open, output queued, paused, waiting.
    pub(crate) fn with_gauges(&self, stats: &Stats) -> Stats {
        Stats {
            active: self.entries.len() as u64,
            queued_bytes: self.outboxes.total() as u64,
            paused: self.paused as u64,
            handshaking: self.waiting as u64,
            ..stats.clone()
        }
    }

    /// Bytes queued for all connections, and bytes of chunks held (queued or spare).
    pub(crate) fn output_memory(&self) -> (usize, usize) {
        (self.outboxes.total(), self.outboxes.held())
    }

    /// Records traffic on a connection for its idle timer.
    #[inline]
    fn touch(&mut self, key: usize) {
        if self.limits.idle_ms.is_none() {
            return;
        }
        let e = &self.entries[key];
        if e.flags.timer() == Some(Timer::Idle)
            && self.now_ms >= e.links.stamp + TOUCH_GRANULARITY_MS
        {
            let idle = &mut self.timers[Timer::Idle as usize];
            idle.unlink(key, &mut self.entries);
            idle.push(key, self.now_ms, &mut self.entries);
        }
    }

    /// The idle timer, if there is an idle timeout.
    fn idle_timer(&self) -> Option<Timer> {
        self.limits.idle_ms.map(|_| Timer::Idle)
    }

    fn start_timer(&mut self, key: usize, timer: Option<Timer>) {
        if let Some(t) = timer {
            debug_assert!(self.entries[key].flags.timer().is_none());
            self.timers[t as usize].push(key, self.now_ms, &mut self.entries);
            self.entries[key].flags.set_timer(Some(t));
        }
    }

    fn stop_timer(&mut self, key: usize) {
        if let Some(t) = self.entries[key].flags.timer() {
            self.timers[t as usize].unlink(key, &mut self.entries);
            self.entries[key].flags.set_timer(None);
        }
    }
}

/// A connection as the log names it (see [`Conns::describe`]).
pub(crate) struct Described<'a> {
    conns: &'a Conns,
    key: usize,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (conns, key) = (self.conns, self.key);
        let Some(e) = conns.entries.get(key) else {
            return write!(f, "slot {key}");
        };
        write!(f, "conn {}", e.seq)?;
        let socket_peer = e.conn.transport().peer_addr();
        match (conns.proxy_header(key), socket_peer) {
            (Some(h), Ok(via)) => write!(f, " from {} via {via}", h.source()),
            (Some(h), Err(_)) => write!(f, " from {}", h.source()),
            (None, Ok(peer)) => write!(f, " from {peer}"),
            (None, Err(_)) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle connection costs the table, the figure the module docs give: the
    /// socket, and 32 bytes for everything else. (The socket is a 16-byte enum in a
    /// release build; in a debug build mio adds a registration check to every socket.)
    #[test]
    fn an_entry_is_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<Entry>() - size_of::<Transport>(), 32);
        if !cfg!(debug_assertions) {
            assert_eq!(size_of::<Entry>(), 48);
        }
    }
}
