//! Reconnect mode: each of the thread's slots connects, sends one message, reads its
//! echo, closes, and starts over — the server's accept path under load.

use std::time::{Duration, Instant};

use super::driver::{Driver, Lane, retriable};
use super::{Fault, Window};
use crate::client::proxy::Preamble;
use crate::socket;
use crate::token::{self, Target};

/// One slot: the connection it has now, if any.
struct Slot {
    lane: Option<Lane>,
    connected: bool,
    started: Instant,
    /// Bumped for each new connection, and carried in its token: events for a
    /// connection closed earlier in the same batch never reach its successor.
    generation: u32,
    retry_at: Option<Instant>,
    /// Once connected: the PROXY header, until the socket has taken all of it.
    header: Option<Preamble>,
    /// Failed attempts in a row, for the back-off of `keep_going`.
    failures: u32,
}

pub(super) fn run(d: &mut Driver<'_>, window: &Window) {
    let mut slots: Vec<Slot> = (0..d.share.conns)
        .map(|_| Slot {
            lane: None,
            connected: false,
            started: Instant::now(),
            generation: 0,
            retry_at: Some(Instant::now()),
            header: None,
            failures: 0,
        })
        .collect();
    let mut successes = 0u64;
    // Attempts turned away without being counted as errors: a full accept queue.
    let mut refused = 0u64;
    let stream_timeout = d.share.cfg.stream_timeout;
    let keep_going = d.share.cfg.keep_going;
    loop {
        let now = Instant::now();
        if now >= window.drain_until
            || (now >= window.end && slots.iter().all(|s| s.lane.is_none()))
        {
            break;
        }
        // Connections slower than the stream timeout, to connect or to echo, are
        // given up; the slot starts over.
        if let Some(limit) = stream_timeout {
            for s in slots.iter_mut() {
                if s.lane.is_none() || now.saturating_duration_since(s.started) < limit {
                    continue;
                }
                let kind = if s.connected {
                    Fault::Timeout
                } else {
                    Fault::ConnectTimeout
                };
                if let Some(lane) = s.lane.take() {
                    d.tally.fail(kind, || {
                        let what = if s.connected {
                            "no reply"
                        } else {
                            "not connected"
                        };
                        format!("conn {}: {what} within {limit:?}", lane.id)
                    });
                    d.close(lane);
                }
                s.header = None;
                s.retry_at = Some(now);
                if keep_going {
                    failed_again(d, s, window);
                }
            }
        }
        // Start the connections that are due.
        for (i, s) in slots.iter_mut().enumerate() {
            if s.lane.is_some() || now >= window.end || s.retry_at.is_none_or(|t| t > now) {
                continue;
            }
            s.generation = s.generation.wrapping_add(1);
            s.started = now;
            s.retry_at = None;
            match d.connect(i, s.generation) {
                Ok(conn) => {
                    s.lane = Some(Lane::new(d.share.first + i as u32, conn));
                    s.connected = false;
                }
                Err(e) => {
                    let pause = connect_failed(d, &e, &mut refused);
                    s.retry_at = Some(now + pause);
                    if keep_going {
                        failed_again(d, s, window);
                    }
                }
            }
        }
        if !d.poll(Duration::from_millis(10)) {
            return;
        }
        let events = d.take_events();
        for ev in events.iter() {
            let Target::Conn { key: i, seq } = token::decode(ev.token()) else {
                continue;
            };
            let Some(s) = slots.get_mut(i) else { continue };
            if token::seq_bits(s.generation) != seq {
                continue;
            }
            let Some(lane) = s.lane.as_mut() else {
                continue;
            };
            if !s.connected {
                if !socket::connect_settled(ev) {
                    continue;
                }
                if let Err(e) = socket::finish_connect(lane.conn.transport()) {
                    let pause = connect_failed(d, &e, &mut refused);
                    if let Some(lane) = s.lane.take() {
                        d.close(lane);
                    }
                    s.retry_at = Some(Instant::now() + pause);
                    if keep_going {
                        failed_again(d, s, window);
                    }
                    continue;
                }
                s.connected = true;
                lane.connected(d.tally, s.started);
                // Writable now: the header and the message go straight out instead of
                // into the queue.
                lane.conn.add_event(ev);
                // Every connection of the run names a client of its own: this slot's
                // `generation`th, after all the slots' earlier ones.
                let round = u64::from(s.generation.wrapping_sub(1));
                s.header = d.proxy_header(u64::from(lane.id) + round * d.share.cfg.conns as u64);
            }
            if lane.issued == 0 {
                match s.header.as_mut() {
                    // On a plain stream the header is simply the first bytes of the
                    // first write, with the message.
                    Some(h) if !lane.conn.transport().is_tls() => {
                        d.issue_after(lane, 1, s.started, h.unsent());
                        s.header = None;
                    }
                    // Over TLS it goes first, alone and in the clear, beneath the
                    // session; the message (and the ClientHello) after it.
                    Some(h) => {
                        lane.conn.add_event(ev);
                        match d.write_header(&mut lane.conn, h) {
                            Ok(true) => s.header = None,
                            Ok(false) => continue,
                            Err(f) => {
                                d.tally
                                    .error(|| format!("conn {}: PROXY header: {f}", lane.id));
                                if let Some(lane) = s.lane.take() {
                                    d.close(lane);
                                }
                                s.header = None;
                                s.retry_at = Some(Instant::now() + Duration::from_millis(10));
                                if keep_going {
                                    failed_again(d, s, window);
                                }
                                continue;
                            }
                        }
                        d.issue(lane, 1, s.started);
                    }
                    None => d.issue(lane, 1, s.started),
                }
            }
            let done = d.serve(lane, ev, window) == 1;
            if done {
                successes += 1;
                if window.counts(Instant::now()) {
                    d.tally.conns_done += 1;
                }
            }
            if done || !lane.alive {
                if let Some(lane) = s.lane.take() {
                    d.close(lane);
                }
                let pause = if done {
                    Duration::ZERO
                } else {
                    Duration::from_millis(10)
                };
                s.retry_at = Some(Instant::now() + pause);
            }
            if keep_going {
                if done {
                    s.failures = 0;
                } else if s.lane.is_none() {
                    failed_again(d, s, window);
                }
            }
        }
        d.put_events(events);
    }
    d.tally.connected = d.share.conns;
    // Only when nothing else says why: the failures already counted do.
    if successes == 0 && d.tally.failures.errors() == 0 {
        d.tally
            .error(|| format!("no connection succeeded ({refused} attempts turned away)"));
    }
}

/// Counts a failed connect attempt and says how long the slot waits before the next.
/// Every attempt stands for a message, so a refusal or a timeout is an error each time;
/// a full accept queue (`EAGAIN` from a Unix listener) or no free local port is the
/// load itself, retried without counting.
fn connect_failed(d: &mut Driver<'_>, e: &std::io::Error, busy: &mut u64) -> Duration {
    match Fault::of_connect(e) {
        Fault::Other if retriable(e) => {
            *busy += 1;
            Duration::from_millis(10)
        }
        Fault::Other => {
            d.tally.error(|| format!("connect: {e}"));
            Duration::from_millis(100)
        }
        kind => {
            d.tally.fail(kind, || format!("connect: {e}"));
            Duration::from_millis(10)
        }
    }
}

/// `keep_going`: a slot whose attempt failed waits longer after each failure in a
/// row (10 ms doubling to 1 s) before the next attempt, which counts as a replacement.
/// After the window no new attempt starts, so nothing is replaced then.
fn failed_again(d: &mut Driver<'_>, s: &mut Slot, window: &Window) {
    let pause = backoff(s.failures);
    s.failures = s.failures.saturating_add(1);
    let now = Instant::now();
    if now < window.end {
        d.tally.replaced += 1;
    }
    s.retry_at = Some(now + pause);
}

/// The pause before the next attempt after `failures` failures in a row: 10 ms,
/// doubling up to 1 s.
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_millis((10u64 << failures.min(7)).min(1000))
}
