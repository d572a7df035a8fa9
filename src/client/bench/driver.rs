//! One client thread's machinery: its poll loop, the output buffers of its connections,
//! what it counts, and the steps every load shape shares — connect, issue messages,
//! write what is owed, read and check what comes back.
//!
//! Each connection is a [`Lane`]: the same [`Connection`] the server uses (sticky
//! readiness, the short-read rule, `sendall` with an outbox), and the messages in flight
//! on it. The load shapes — the ramp-up (`ramp.rs`), the closed and open loops
//! (`messages.rs`) and reconnecting (`reconnect.rs`) — are functions over a driver and
//! its lanes.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Barrier;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll};

use super::pattern::Pattern;
use super::{Fault as Kind, Share, Tally, Window, messages, ramp, reconnect};
use crate::client::proxy::{self, Preamble};
use crate::conn::{Connection, Input, Outboxes};
use crate::readiness::Readiness;
use crate::socket;
use crate::stats::Stats;
use crate::token;
use crate::transport::Fault;

/// Loopback addresses the connections to a loopback server are spread over: with
/// thousands of connections to one address and port, the kernel's search for a free
/// ephemeral port in `connect` gets slow.
const SOURCE_ADDRS: u8 = 16;

/// Spare output buffer a client thread keeps between bursts.
const SPARE_OUTPUT: usize = 1024 * 1024;

/// One load connection: its [`Connection`] and the messages in flight on it.
pub(super) struct Lane {
    /// The connection's number across all threads: its messages' pattern differs
    /// from every other connection's.
    pub(super) id: u32,
    pub(super) conn: Connection,
    /// Messages issued so far; the next one's sequence number.
    pub(super) issued: u64,
    /// Bytes echoed back so far.
    pub(super) received: u64,
    /// When each outstanding message was issued (or due, in open loop), oldest first.
    pub(super) since: VecDeque<Instant>,
    pub(super) alive: bool,
    /// A TLS connection's connect call, until its handshake is done and its connect
    /// time recorded.
    pub(super) handshake_from: Option<Instant>,
    /// When it was established, until its first reply's time is recorded.
    pub(super) established: Option<Instant>,
}

/// A connection being opened: connected, then its PROXY header (when the run sends
/// them) written, before it becomes a [`Lane`] and carries messages. The ramp-up opens
/// every connection this way, and `keep_going` its replacements.
pub(super) struct Opening {
    pub(super) conn: Connection,
    /// When the connect call was made.
    pub(super) started: Instant,
    /// When the connect completed.
    established: Option<Instant>,
    /// Once established: the PROXY header, until the socket has taken all of it.
    header: Option<Preamble>,
}

/// Why an [`Opening`] failed.
pub(super) enum OpenFailed {
    /// The connect itself.
    Connect(io::Error),
    /// Writing the PROXY header after it.
    Header(Fault),
}

impl Opening {
    pub(super) fn new(conn: Connection, started: Instant) -> Opening {
        Opening {
            conn,
            started,
            established: None,
            header: None,
        }
    }

    /// The lane of connection `id`, once [`Driver::open`] said it is open. A plain
    /// stream's connect time was recorded when it connected; a TLS one's is once its
    /// handshake is done (see [`Driver::serve`]).
    pub(super) fn into_lane(self, id: u32) -> Lane {
        let mut lane = Lane::new(id, self.conn);
        if lane.conn.transport().is_tls() {
            lane.handshake_from = Some(self.started);
        } else {
            lane.established = self.established;
        }
        lane
    }
}

impl Lane {
    pub(super) fn new(id: u32, conn: Connection) -> Self {
        Lane {
            id,
            conn,
            issued: 0,
            received: 0,
            since: VecDeque::new(),
            alive: true,
            handshake_from: None,
            established: None,
        }
    }

    /// Records that the connection started at `started` has connected: for a plain
    /// stream, now (its connect time is recorded); for TLS, once its handshake is done
    /// (see [`Driver::serve`]).
    pub(super) fn connected(&mut self, tally: &mut Tally, started: Instant) {
        if self.conn.transport().is_tls() {
            self.handshake_from = Some(started);
        } else {
            let now = Instant::now();
            tally.connect_time(started, now);
            self.established = Some(now);
        }
    }
}

/// A client thread: its share of the work, its poll loop, and its buffers.
pub(super) struct Driver<'a> {
    pub(super) share: &'a Share,
    pub(super) tally: &'a mut Tally,
    poll: Poll,
    events: Events,
    outboxes: Outboxes,
    /// The thread's own I/O counters, kept as the server keeps its own.
    stats: Stats,
    pattern: Pattern,
    /// Messages are built here, then sent in one write.
    message: Vec<u8>,
    read_buf: Vec<u8>,
}

impl<'a> Driver<'a> {
    pub(super) fn new(share: &'a Share, tally: &'a mut Tally) -> io::Result<Self> {
        Ok(Driver {
            share,
            tally,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            outboxes: Outboxes::new(SPARE_OUTPUT),
            stats: Stats::default(),
            pattern: Pattern::new(),
            message: Vec::new(),
            read_buf: vec![0u8; 64 * 1024],
        })
    }

    /// Runs the thread's part: connect (unless every message gets a connection of its
    /// own), wait for the others, then load.
    pub(super) fn run(mut self, ready: &Barrier, window: &Receiver<Window>) {
        if self.share.cfg.reconnect {
            ready.wait();
            if let Ok(w) = window.recv() {
                self.tally.begin_intervals(&w);
                reconnect::run(&mut self, &w);
            }
            return;
        }
        let started = Instant::now();
        let mut lanes = ramp::run(&mut self);
        self.tally.ramp = started.elapsed();
        ready.wait();
        if let Ok(w) = window.recv() {
            self.tally.begin_intervals(&w);
            messages::run(&mut self, &w, &mut lanes);
        }
    }

    /// Starts connection `index` of this thread, registered under `generation` (a
    /// slot reused for a new connection gets a new generation, so the old one's stale
    /// events are recognised).
    pub(super) fn connect(&mut self, index: usize, generation: u32) -> io::Result<Connection> {
        let id = self.share.first + index as u32;
        let transport = socket::connect(
            &self.share.cfg.endpoint,
            self.share.addr,
            source_for(self.share.addr, id, &self.share.cfg.bind),
            self.share.cfg.tls.as_ref(),
        )?;
        let mut conn = Connection::new(transport, Readiness::NONE);
        self.poll.registry().register(
            conn.transport_mut().source(),
            token::conn(index, generation),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(conn)
    }

    /// The PROXY header of the run's `n`th connection (counting reconnections), naming
    /// a made-up client of its own; `None` when the run sends no headers.
    pub(super) fn proxy_header(&self, n: u64) -> Option<Preamble> {
        let version = self.share.cfg.proxy?;
        let target = self.share.addr;
        Some(Preamble::new(proxy::header(
            version,
            proxy::made_up_source(target, n),
            target,
        )))
    }

    /// Takes event `ev` for a connection being opened, `n`th of the run (for its PROXY
    /// header): `Ok(true)` once it is connected and its header, if any, has gone, so
    /// that it may become a lane ([`Opening::into_lane`]); `Ok(false)` while not yet.
    pub(super) fn open(&mut self, o: &mut Opening, ev: &Event, n: u64) -> Result<bool, OpenFailed> {
        if o.established.is_none() {
            if !socket::connect_settled(ev) {
                return Ok(false);
            }
            socket::finish_connect(o.conn.transport()).map_err(OpenFailed::Connect)?;
            let now = Instant::now();
            if !o.conn.transport().is_tls() {
                self.tally.connect_time(o.started, now);
            }
            o.established = Some(now);
            o.header = self.proxy_header(n);
        }
        o.conn.add_event(ev);
        // The PROXY header goes first, alone; the lane's session starts after it.
        match o.header.as_mut() {
            Some(h) => self
                .write_header(&mut o.conn, h)
                .map_err(OpenFailed::Header),
            None => Ok(true),
        }
    }

    /// Writes what is left of a connection's PROXY header while its socket takes it;
    /// `Ok(true)` once all of it has gone and the connection may start its session.
    pub(super) fn write_header(
        &mut self,
        conn: &mut Connection,
        header: &mut Preamble,
    ) -> Result<bool, Fault> {
        header.write(conn, &mut self.stats)
    }

    /// Waits for events at most `timeout`; false when polling failed (counted).
    pub(super) fn poll(&mut self, timeout: Duration) -> bool {
        self.tally.publish();
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                self.tally.error(|| format!("poll: {e}"));
                false
            }
        }
    }

    /// The events of the last [`poll`](Self::poll), taken out so that the driver can
    /// be used while walking them; give them back with [`put_events`](Self::put_events).
    pub(super) fn take_events(&mut self) -> Events {
        std::mem::replace(&mut self.events, Events::with_capacity(0))
    }

    pub(super) fn put_events(&mut self, events: Events) {
        self.events = events;
    }

    /// Issues `count` messages on a lane, due at `due`: built back to back and handed
    /// to the connection in one write (with 16 in flight, one `write` for all 16).
    pub(super) fn issue(&mut self, lane: &mut Lane, count: usize, due: Instant) {
        self.issue_after(lane, count, due, &[]);
    }

    /// [`issue`](Self::issue) with `prefix` (a PROXY header on a plain stream) written
    /// ahead of the messages by the same system call, so that it reaches the server in
    /// the same segment as the first message rather than costing both sides a system
    /// call and a wake-up of its own.
    pub(super) fn issue_after(
        &mut self,
        lane: &mut Lane,
        count: usize,
        due: Instant,
        prefix: &[u8],
    ) {
        let size = self.share.cfg.size;
        self.message.resize(count * size, 0);
        for m in self.message.chunks_exact_mut(size) {
            self.pattern.fill(lane.id, lane.issued, m);
            lane.issued += 1;
            lane.since.push_back(due);
        }
        if lane.alive {
            let sent = if prefix.is_empty() {
                lane.conn
                    .send(&[&self.message], &mut self.outboxes, &mut self.stats)
            } else {
                lane.conn.send(
                    &[prefix, &self.message],
                    &mut self.outboxes,
                    &mut self.stats,
                )
            };
            if let Err(e) = sent {
                lane.alive = false;
                self.tally
                    .fail(kind(&e), || format!("conn {}: write: {e}", lane.id));
            }
            // A TLS client's first flight is held by the transport, waiting for a
            // write: no event will ask for it.
            self.flush(lane);
        }
    }

    /// Records an event and does what the lane's readiness allows: writes what it owes,
    /// reads and checks what came back (which also moves a TLS handshake along), and
    /// writes again if the handshake just let queued messages go. Returns how many
    /// messages completed.
    pub(super) fn serve(&mut self, lane: &mut Lane, ev: &Event, window: &Window) -> usize {
        lane.conn.add_event(ev);
        self.flush(lane);
        let done = self.receive(lane, window);
        self.flush(lane);
        if lane.handshake_from.is_some() {
            self.handshake_progress(lane);
        }
        done
    }

    /// A TLS lane whose handshake is done gets its connect time recorded.
    #[cold]
    fn handshake_progress(&mut self, lane: &mut Lane) {
        if lane.alive && !lane.conn.transport().is_handshaking() {
            if let Some(from) = lane.handshake_from.take() {
                let now = Instant::now();
                self.tally.connect_time(from, now);
                lane.established = Some(now);
            }
        }
    }

    /// Writes what the lane owes, if its socket is writable (the check is all a lane
    /// that owes nothing pays).
    #[inline(always)]
    pub(super) fn flush(&mut self, lane: &mut Lane) {
        if lane.alive && lane.conn.can_flush() {
            self.write_owed(lane);
        }
    }

    #[inline(never)]
    fn write_owed(&mut self, lane: &mut Lane) {
        if let Err(e) = lane.conn.flush(&mut self.outboxes, &mut self.stats) {
            lane.alive = false;
            self.tally
                .fail(kind(&e), || format!("conn {}: write: {e}", lane.id));
        }
    }

    /// Reads and checks what came back, while the socket has something; returns how
    /// many messages completed.
    fn receive(&mut self, lane: &mut Lane, window: &Window) -> usize {
        let size = self.share.cfg.size as u64;
        let mut completed = 0;
        while lane.alive && lane.conn.readiness().readable() {
            let n = match lane.conn.read(&mut self.read_buf, &mut self.stats) {
                Input::Data(n) => n,
                Input::Nothing => break,
                Input::Eof => {
                    // With nothing in flight, a close is only early if more messages
                    // were still to come on this connection: before the end, unless
                    // each connection carries one message (reconnect).
                    let more = !self.share.cfg.reconnect && Instant::now() < window.end;
                    if !lane.since.is_empty() || more {
                        let outstanding = lane.since.len();
                        self.tally.fail(Kind::EofEarly, || {
                            format!(
                                "conn {}: closed by the server with {outstanding} messages outstanding",
                                lane.id
                            )
                        });
                    }
                    lane.alive = false;
                    break;
                }
                Input::Failed(f) => {
                    lane.alive = false;
                    self.tally
                        .fail(kind(&f), || format!("conn {}: read: {f}", lane.id));
                    break;
                }
            };
            let sent = lane.issued * size;
            if lane.received + n as u64 > sent {
                lane.alive = false;
                let extra = lane.received + n as u64 - sent;
                self.tally.fail(Kind::Corrupt, || {
                    format!("conn {}: {extra} bytes more than were sent", lane.id)
                });
                break;
            }
            if !self.pattern.check_stream(
                lane.id,
                size as usize,
                lane.received,
                &self.read_buf[..n],
            ) {
                lane.alive = false;
                let at = lane.received;
                self.tally.fail(Kind::Corrupt, || {
                    format!("conn {}: wrong bytes at stream offset {at}", lane.id)
                });
                break;
            }
            lane.received += n as u64;
            let now = Instant::now();
            let done = lane.received / size;
            while lane.issued - (lane.since.len() as u64) < done {
                let since = lane.since.pop_front().expect("an outstanding message");
                if let Some(established) = lane.established.take() {
                    self.tally.first_reply(established.max(since), now);
                }
                self.tally.completed(window, since, now);
                completed += 1;
            }
        }
        completed
    }

    /// Closes a lane: TLS says goodbye properly (`close_notify`), best effort, and
    /// whatever it still owed is dropped.
    pub(super) fn close(&mut self, mut lane: Lane) {
        lane.conn.transport_mut().say_goodbye();
        lane.conn.drop_output(&mut self.outboxes);
    }
}

/// The kind of a failed read or write.
fn kind(f: &Fault) -> Kind {
    match f {
        Fault::Socket(e) => Kind::of_io(e),
        Fault::Tls(_) => Kind::Other,
    }
}

/// The source address for connection `id`: the `--bind` addresses in turn, else one of
/// [`SOURCE_ADDRS`] loopback addresses when the server is on IPv4 loopback.
fn source_for(addr: Option<SocketAddr>, id: u32, bind: &[IpAddr]) -> Option<IpAddr> {
    if !bind.is_empty() {
        return Some(bind[id as usize % bind.len()]);
    }
    match addr {
        Some(SocketAddr::V4(a)) if a.ip().is_loopback() => Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (id % u32::from(SOURCE_ADDRS)) as u8,
        ))),
        _ => None,
    }
}

/// Errors worth another attempt while connecting: the server's accept queue was full
/// (a Unix listener says EAGAIN), or it was not ready yet.
pub(super) fn retriable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::AddrNotAvailable
    )
}
