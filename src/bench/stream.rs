//! The load generator over stream sockets: one poll loop per thread, every connection
//! non-blocking, output queued in a [`SendBuf`] exactly as the server queues its own.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Barrier;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::pattern::Pattern;
use super::{Share, Tally, Window};
use crate::buffer::SendBuf;
use crate::client::{connect, finish_connect};
use crate::transport::Stream;

/// Connections being set up at once during the ramp-up.
const RAMP_BATCH: usize = 256;
/// Give up connecting after this long.
const RAMP_TIMEOUT: Duration = Duration::from_secs(60);
/// Connection attempts per connection during the ramp-up.
const RAMP_ATTEMPTS: u32 = 12;
/// Loopback addresses the connections to a loopback server are spread over: with
/// thousands of connections to one address and port, the kernel's search for a free
/// ephemeral port in `connect` gets slow.
const SOURCE_ADDRS: u8 = 16;

struct Conn {
    stream: Stream,
    out: SendBuf,
    /// Messages issued so far; the next one's sequence number.
    issued: u64,
    /// Bytes echoed back so far.
    received: u64,
    /// When each outstanding message was issued (or due, in open loop), oldest first.
    since: VecDeque<Instant>,
    alive: bool,
}

/// Reused buffers of one thread.
struct Bufs {
    message: Vec<u8>,
    read: Vec<u8>,
}

pub(super) fn run(
    share: &Share,
    tally: &mut Tally,
    ready: &Barrier,
    window: &Receiver<super::Window>,
) {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            tally.error(|| format!("poll: {e}"));
            ready.wait();
            return;
        }
    };
    let mut events = Events::with_capacity(1024);
    let pattern = Pattern::new();
    let mut bufs = Bufs {
        message: vec![0u8; share.cfg.size],
        read: vec![0u8; 64 * 1024],
    };
    if share.cfg.reconnect {
        ready.wait();
        let Ok(w) = window.recv() else { return };
        return reconnect(
            share,
            tally,
            &w,
            &mut poll,
            &mut events,
            &pattern,
            &mut bufs,
        );
    }
    let started = Instant::now();
    let mut conns = ramp(share, tally, &mut poll, &mut events);
    tally.ramp = started.elapsed();
    ready.wait();
    let Ok(w) = window.recv() else { return };
    serve(
        share,
        tally,
        &w,
        &mut poll,
        &mut events,
        &pattern,
        &mut bufs,
        &mut conns,
    );
}

/// The source address for connection `i`, when the server is on IPv4 loopback.
fn source_for(addr: Option<SocketAddr>, i: u32) -> Option<IpAddr> {
    match addr {
        Some(SocketAddr::V4(a)) if a.ip().is_loopback() => Some(IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % u32::from(SOURCE_ADDRS)) as u8,
        ))),
        _ => None,
    }
}

/// Errors worth another attempt while ramping up: the server's accept queue was full
/// (a Unix listener says EAGAIN), or it was not ready yet.
fn retriable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::AddrNotAvailable
    )
}

/// Opens every connection of this share, [`RAMP_BATCH`] at a time, retrying refused or
/// overflowing attempts with back-off.
fn ramp(
    share: &Share,
    tally: &mut Tally,
    poll: &mut Poll,
    events: &mut Events,
) -> Vec<Option<Conn>> {
    let n = share.conns;
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let mut connecting: Vec<Option<(Stream, u32)>> = (0..n).map(|_| None).collect();
    // (index, attempts so far, not before)
    let mut queue: VecDeque<(usize, u32, Instant)> =
        (0..n).map(|i| (i, 0, Instant::now())).collect();
    let mut in_progress = 0;
    let deadline = Instant::now() + RAMP_TIMEOUT;
    let mut failed = 0;
    let retry = |queue: &mut VecDeque<(usize, u32, Instant)>,
                 i: usize,
                 attempt: u32,
                 e: &io::Error,
                 tally: &mut Tally,
                 failed: &mut usize| {
        if retriable(e) && attempt + 1 < RAMP_ATTEMPTS {
            let backoff = Duration::from_millis(10 << attempt.min(7));
            queue.push_back((i, attempt + 1, Instant::now() + backoff));
        } else {
            *failed += 1;
            tally.error(|| format!("connect: {e}"));
        }
    };
    while tally.connected + failed < n && Instant::now() < deadline {
        // Start attempts that are due, up to the batch size.
        let now = Instant::now();
        let mut tries = queue.len();
        while in_progress < RAMP_BATCH && tries > 0 {
            tries -= 1;
            let Some((i, attempt, not_before)) = queue.pop_front() else {
                break;
            };
            if not_before > now {
                queue.push_back((i, attempt, not_before));
                continue;
            }
            let id = share.first + i as u32;
            match connect(
                &share.cfg.endpoint,
                share.addr,
                source_for(share.addr, id),
                share.cfg.tls.as_ref(),
            ) {
                Ok(mut s) => {
                    if let Err(e) = poll.registry().register(
                        s.source(),
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        retry(&mut queue, i, attempt, &e, tally, &mut failed);
                        continue;
                    }
                    connecting[i] = Some((s, attempt));
                    in_progress += 1;
                }
                Err(e) => retry(&mut queue, i, attempt, &e, tally, &mut failed),
            }
        }
        if let Err(e) = poll.poll(events, Some(Duration::from_millis(10))) {
            if e.kind() != io::ErrorKind::Interrupted {
                tally.error(|| format!("poll: {e}"));
                break;
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if i >= n || !(ev.is_writable() || ev.is_error() || ev.is_write_closed()) {
                continue;
            }
            let Some((mut s, attempt)) = connecting[i].take() else {
                continue;
            };
            in_progress -= 1;
            match finish_connect(&s) {
                Ok(()) => {
                    tally.connected += 1;
                    conns[i] = Some(Conn {
                        stream: s,
                        out: SendBuf::new(),
                        issued: 0,
                        received: 0,
                        since: VecDeque::new(),
                        alive: true,
                    });
                }
                Err(e) => {
                    let _ = poll.registry().deregister(s.source());
                    retry(&mut queue, i, attempt, &e, tally, &mut failed);
                }
            }
        }
    }
    let missing = n - tally.connected - failed;
    if missing > 0 {
        tally.errors += missing as u64;
        tally.first_error.get_or_insert_with(|| {
            format!("{missing} connections not established within {RAMP_TIMEOUT:?}")
        });
    }
    conns
}

/// Issues message `c.issued` on a connection: it goes into the connection's queue,
/// and [`flush`] writes everything queued in as few writes as the socket allows — with
/// 16 messages in flight, one `write` for all 16 rather than one each.
fn issue(id: u32, c: &mut Conn, due: Instant, pattern: &Pattern, msg: &mut [u8]) {
    pattern.fill(id, c.issued, msg);
    c.issued += 1;
    c.since.push_back(due);
    c.out.push(msg);
}

/// Writes what is queued until the socket is full (TLS records held back from last
/// time first).
fn flush(id: u32, c: &mut Conn, tally: &mut Tally) {
    if !c.alive {
        return;
    }
    // While held-back records are still waiting, the socket is full: the queue waits.
    let r = c.stream.flush_pending().and_then(|flushed| {
        if flushed && !c.out.is_empty() {
            c.out.write_to(&mut c.stream).map(|_| ())
        } else {
            Ok(())
        }
    });
    if let Err(e) = r {
        c.alive = false;
        tally.error(|| format!("conn {id}: write: {e}"));
    }
}

/// After a read: when it completed a TLS handshake, writes the messages queued while
/// it ran (no writable event will come for them).
fn after_handshake(id: u32, c: &mut Conn, tally: &mut Tally) {
    if c.stream.take_established().is_some() {
        flush(id, c, tally);
    }
}

/// Reads and checks what came back; returns how many messages completed.
#[allow(clippy::too_many_arguments)]
fn receive(
    id: u32,
    c: &mut Conn,
    size: usize,
    window: &Window,
    pattern: &Pattern,
    buf: &mut [u8],
    tally: &mut Tally,
) -> usize {
    let mut completed = 0;
    loop {
        match c.stream.read(buf) {
            Ok(0) => {
                if !c.since.is_empty() {
                    tally.error(|| {
                        format!(
                            "conn {id}: closed by the server with {} messages outstanding",
                            c.since.len()
                        )
                    });
                }
                c.alive = false;
                return completed;
            }
            Ok(n) => {
                let sent = c.issued * size as u64;
                if c.received + n as u64 > sent {
                    c.alive = false;
                    tally.error(|| {
                        format!(
                            "conn {id}: {} bytes more than were sent",
                            c.received + n as u64 - sent
                        )
                    });
                    return completed;
                }
                if !pattern.check_stream(id, size, c.received, &buf[..n]) {
                    c.alive = false;
                    tally.error(|| {
                        format!("conn {id}: wrong bytes at stream offset {}", c.received)
                    });
                    return completed;
                }
                c.received += n as u64;
                let now = Instant::now();
                let done = c.received / size as u64;
                while c.issued - (c.since.len() as u64) < done {
                    let since = c.since.pop_front().expect("an outstanding message");
                    tally.completed(window, since, now);
                    completed += 1;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return completed,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                c.alive = false;
                tally.error(|| format!("conn {id}: read: {e}"));
                return completed;
            }
        }
    }
}

/// The closed or open loop over established connections.
#[allow(clippy::too_many_arguments)]
fn serve(
    share: &Share,
    tally: &mut Tally,
    window: &Window,
    poll: &mut Poll,
    events: &mut Events,
    pattern: &Pattern,
    bufs: &mut Bufs,
    conns: &mut [Option<Conn>],
) {
    let size = share.cfg.size;
    let open_loop = share.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_due = window.start;
    let mut slot = 0usize;
    let ids: Vec<u32> = (0..conns.len()).map(|i| share.first + i as u32).collect();
    if open_loop.is_none() {
        for (i, c) in conns.iter_mut().enumerate() {
            if let Some(c) = c {
                for _ in 0..share.cfg.depth {
                    issue(ids[i], c, Instant::now(), pattern, &mut bufs.message);
                }
                flush(ids[i], c, tally);
            }
        }
    }
    loop {
        let now = Instant::now();
        if now >= window.drain_until {
            break;
        }
        if now >= window.end
            && conns
                .iter()
                .flatten()
                .all(|c| c.since.is_empty() || !c.alive)
        {
            break;
        }
        // Open loop: everything that is due leaves now, stamped with when it was due.
        let mut timeout = Duration::from_millis(100);
        if let Some(interval) = open_loop {
            while next_due <= now && next_due < window.end && !conns.is_empty() {
                let i = slot % conns.len();
                slot += 1;
                if let Some(c) = conns[i].as_mut().filter(|c| c.alive) {
                    issue(ids[i], c, next_due, pattern, &mut bufs.message);
                    flush(ids[i], c, tally);
                }
                next_due += interval;
            }
            if next_due < window.end {
                timeout = timeout.min(next_due.saturating_duration_since(now));
            }
        }
        if let Err(e) = poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tally.error(|| format!("poll: {e}"));
                return;
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if !c.alive {
                continue;
            }
            if ev.is_writable() {
                flush(ids[i], c, tally);
            }
            let done = receive(ids[i], c, size, window, pattern, &mut bufs.read, tally);
            after_handshake(ids[i], c, tally);
            if open_loop.is_none() && Instant::now() < window.end && done > 0 {
                let now = Instant::now();
                for _ in 0..done {
                    issue(ids[i], c, now, pattern, &mut bufs.message);
                }
                flush(ids[i], c, tally);
            }
        }
    }
    for (i, c) in conns.iter().enumerate() {
        if let Some(c) = c.as_ref().filter(|c| c.alive && !c.since.is_empty()) {
            tally.error(|| {
                format!(
                    "conn {}: {} messages never came back",
                    ids[i],
                    c.since.len()
                )
            });
        }
    }
}

/// Reconnect mode: each of the share's slots connects, sends one message, reads its
/// echo, closes, and starts over.
fn reconnect(
    share: &Share,
    tally: &mut Tally,
    window: &Window,
    poll: &mut Poll,
    events: &mut Events,
    pattern: &Pattern,
    bufs: &mut Bufs,
) {
    struct Slot {
        conn: Option<Conn>,
        connected: bool,
        started: Instant,
        generation: usize,
        retry_at: Option<Instant>,
    }
    let size = share.cfg.size;
    // The token carries a generation, so that events for a connection closed earlier
    // in the same batch never reach its successor in the same slot.
    let token = |i: usize, g: usize| Token(i | (g << 32));
    let mut slots: Vec<Slot> = (0..share.conns)
        .map(|_| Slot {
            conn: None,
            connected: false,
            started: Instant::now(),
            generation: 0,
            retry_at: Some(Instant::now()),
        })
        .collect();
    let mut successes = 0u64;
    let mut failures = 0u64;
    loop {
        let now = Instant::now();
        if now >= window.drain_until
            || (now >= window.end && slots.iter().all(|s| s.conn.is_none()))
        {
            break;
        }
        // Start the connections that are due.
        for (i, s) in slots.iter_mut().enumerate() {
            if s.conn.is_some() || now >= window.end || s.retry_at.is_none_or(|t| t > now) {
                continue;
            }
            let id = share.first + i as u32;
            s.generation += 1;
            s.started = now;
            s.retry_at = None;
            match connect(
                &share.cfg.endpoint,
                share.addr,
                source_for(share.addr, id),
                share.cfg.tls.as_ref(),
            ) {
                Ok(mut st) => {
                    if poll
                        .registry()
                        .register(
                            st.source(),
                            token(i, s.generation),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        s.conn = Some(Conn {
                            stream: st,
                            out: SendBuf::new(),
                            issued: 0,
                            received: 0,
                            since: VecDeque::new(),
                            alive: true,
                        });
                        s.connected = false;
                    }
                }
                Err(e) if retriable(&e) => {
                    failures += 1;
                    s.retry_at = Some(now + Duration::from_millis(10));
                }
                Err(e) => {
                    tally.error(|| format!("connect: {e}"));
                    s.retry_at = Some(now + Duration::from_millis(100));
                }
            }
        }
        if let Err(e) = poll.poll(events, Some(Duration::from_millis(10))) {
            if e.kind() != io::ErrorKind::Interrupted {
                tally.error(|| format!("poll: {e}"));
                return;
            }
        }
        for ev in events.iter() {
            let (i, g) = (ev.token().0 & 0xffff_ffff, ev.token().0 >> 32);
            let Some(s) = slots.get_mut(i) else { continue };
            if s.generation != g {
                continue;
            }
            let id = share.first + i as u32;
            let Some(c) = s.conn.as_mut() else { continue };
            if !s.connected {
                if !(ev.is_writable() || ev.is_error() || ev.is_write_closed()) {
                    continue;
                }
                if let Err(e) = finish_connect(&c.stream) {
                    if retriable(&e) {
                        failures += 1;
                    } else {
                        tally.error(|| format!("connect: {e}"));
                    }
                    s.conn = None;
                    s.retry_at = Some(Instant::now() + Duration::from_millis(10));
                    continue;
                }
                s.connected = true;
                let started = s.started;
                issue(id, c, started, pattern, &mut bufs.message);
            }
            flush(id, c, tally);
            let done = c.alive && receive(id, c, size, window, pattern, &mut bufs.read, tally) == 1;
            after_handshake(id, c, tally);
            if done {
                successes += 1;
                if window.counts(Instant::now()) {
                    tally.conns_done += 1;
                }
                if c.stream.is_tls() {
                    // Say goodbye properly (close_notify), best effort.
                    let _ = c.stream.shutdown_write();
                }
                s.conn = None; // closes the socket
                s.retry_at = Some(Instant::now());
            } else if !c.alive {
                s.conn = None;
                s.retry_at = Some(Instant::now() + Duration::from_millis(10));
            }
        }
    }
    tally.connected = share.conns;
    if successes == 0 {
        tally.error(|| format!("no connection succeeded ({failures} attempts refused)"));
    }
}
