//! The closed and open loops over established connections.
//!
//! - **Closed loop**: every connection keeps `depth` messages in flight and issues the
//!   next as soon as one comes back.
//! - **Open loop** (`rate`): messages leave at a fixed total rate whatever the server
//!   does, each stamped with when it was *due*, so a server that stalls shows in the
//!   percentiles instead of silently slowing the client down (no coordinated
//!   omission).

use std::time::{Duration, Instant};

use super::driver::{Driver, Lane, OpenFailed, Opening};
use super::reconnect::backoff;
use super::{Fault, Schedule, Window};
use crate::token::{self, Target};

/// `keep_going`: what a slot whose connection failed is doing about it.
#[derive(Default)]
struct Spare {
    /// Bumped for each replacement and carried in its token, so that events of the
    /// connection it replaces are not taken for its own.
    generation: u32,
    /// Failures in a row, for the back-off; reset by a reply.
    failures: u32,
    /// The next attempt is due then.
    retry_at: Option<Instant>,
    /// The replacement being opened.
    pending: Option<Opening>,
}

pub(super) fn run(d: &mut Driver<'_>, window: &Window, lanes: &mut [Option<Lane>]) {
    let depth = d.share.cfg.depth;
    let stream_timeout = d.share.cfg.stream_timeout;
    let mut last_scan = Instant::now();
    let mut open_loop = Schedule::new(d.share.rate, window.start);
    let keep_going = d.share.cfg.keep_going;
    let mut spares: Vec<Spare> = if keep_going {
        (0..lanes.len()).map(|_| Spare::default()).collect()
    } else {
        Vec::new()
    };
    if open_loop.is_none() {
        for lane in lanes.iter_mut().flatten() {
            d.issue(lane, depth, Instant::now());
        }
    }
    loop {
        let now = Instant::now();
        if now >= window.drain_until {
            break;
        }
        if now >= window.end
            && lanes
                .iter()
                .flatten()
                .all(|l| l.since.is_empty() || !l.alive)
        {
            break;
        }
        // Open loop: everything that is due leaves now, stamped with when it was due.
        let mut timeout = Duration::from_millis(100);
        if let Some(schedule) = open_loop.as_mut() {
            schedule.issue_due(now, window.end, lanes.len(), |i, due| {
                if let Some(lane) = lanes[i].as_mut().filter(|l| l.alive) {
                    d.issue(lane, 1, due);
                }
            });
            timeout = schedule.wait(now, window.end, timeout);
        }
        // Connections whose oldest message is overdue are given up, at most every
        // 10 ms: a walk over the lanes, kept off the per-message path.
        if now.duration_since(last_scan) >= Duration::from_millis(10) {
            last_scan = now;
            if let Some(limit) = stream_timeout {
                expire(d, lanes, now, limit);
            }
            if keep_going {
                replace(d, window, lanes, &mut spares, now);
                timeout = timeout.min(Duration::from_millis(10));
            }
        }
        if !d.poll(timeout) {
            return;
        }
        let events = d.take_events();
        for ev in events.iter() {
            let Target::Conn { key: i, seq } = token::decode(ev.token()) else {
                continue;
            };
            if let Some(spare) = spares.get_mut(i) {
                if token::seq_bits(spare.generation) != seq {
                    continue;
                }
                if spare.pending.is_some() {
                    connecting(d, window, i, ev, &mut lanes[i], spare);
                    continue;
                }
            }
            let Some(lane) = lanes.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if !lane.alive {
                continue;
            }
            let done = d.serve(lane, ev, window);
            if let Some(spare) = spares.get_mut(i) {
                if done > 0 {
                    spare.failures = 0;
                } else if !lane.alive {
                    lost(d, window, &mut lanes[i], spare);
                    continue;
                }
            }
            if open_loop.is_none() && done > 0 {
                let now = Instant::now();
                if now < window.end {
                    d.issue(lane, done, now);
                }
            }
        }
        d.put_events(events);
    }
    for lane in lanes.iter().flatten() {
        if lane.alive && !lane.since.is_empty() {
            let missing = lane.since.len();
            d.tally.fail(Fault::Timeout, || {
                format!("conn {}: {missing} messages never came back", lane.id)
            });
        }
    }
}

/// Closes, and counts in `timeouts`, every live lane whose oldest message was issued
/// (or due) more than `limit` before `now`.
fn expire(d: &mut Driver<'_>, lanes: &mut [Option<Lane>], now: Instant, limit: Duration) {
    for slot in lanes.iter_mut() {
        let overdue = slot.as_ref().is_some_and(|l| {
            l.alive
                && l.since
                    .front()
                    .is_some_and(|&t| now.saturating_duration_since(t) >= limit)
        });
        if !overdue {
            continue;
        }
        if let Some(lane) = slot.take() {
            let missing = lane.since.len();
            d.tally.fail(Fault::Timeout, || {
                format!(
                    "conn {}: no reply within {limit:?} ({missing} messages in flight)",
                    lane.id
                )
            });
            d.close(lane);
        }
    }
}

/// `keep_going`: the failed connection of a slot (already counted in its kind) is
/// closed, with the messages in flight on it, and a replacement is scheduled after the
/// back-off — unless the window is over.
fn lost(d: &mut Driver<'_>, window: &Window, slot: &mut Option<Lane>, spare: &mut Spare) {
    if let Some(lane) = slot.take() {
        d.close(lane);
    }
    spare.pending = None;
    let now = Instant::now();
    if now < window.end {
        spare.retry_at = Some(now + backoff(spare.failures));
        spare.failures = spare.failures.saturating_add(1);
        d.tally.replaced += 1;
    }
}

/// `keep_going`, every 10 ms: slots without a live connection (failed, given up by the
/// stream timeout, or never connected in the ramp-up) get a replacement scheduled, and
/// the replacements that are due are started.
fn replace(
    d: &mut Driver<'_>,
    window: &Window,
    lanes: &mut [Option<Lane>],
    spares: &mut [Spare],
    now: Instant,
) {
    for (i, (slot, spare)) in lanes.iter_mut().zip(spares.iter_mut()).enumerate() {
        let live = slot.as_ref().is_some_and(|l| l.alive);
        if live {
            continue;
        }
        if let Some(p) = &spare.pending {
            // A replacement slower to connect than the stream timeout is given up.
            let limit = d.share.cfg.stream_timeout;
            if limit.is_some_and(|l| now.saturating_duration_since(p.started) >= l) {
                d.tally.fail(Fault::ConnectTimeout, || {
                    format!(
                        "conn {}: not connected within {limit:?}",
                        d.share.first + i as u32
                    )
                });
                lost(d, window, slot, spare);
            }
            continue;
        }
        match spare.retry_at {
            None => lost(d, window, slot, spare),
            Some(t) if t <= now && now < window.end => {
                spare.retry_at = None;
                spare.generation = spare.generation.wrapping_add(1);
                match d.connect(i, spare.generation) {
                    Ok(conn) => spare.pending = Some(Opening::new(conn, now)),
                    Err(e) => {
                        d.tally
                            .fail(Fault::of_connect(&e), || format!("connect: {e}"));
                        lost(d, window, slot, spare);
                    }
                }
            }
            Some(_) => {}
        }
    }
}

/// An event for slot `i`'s replacement under way: once connected (and its PROXY
/// header, if any, sent) it becomes the slot's lane and, in closed loop, gets its
/// messages. Its messages start the pattern afresh, as any connection's do.
fn connecting(
    d: &mut Driver<'_>,
    window: &Window,
    i: usize,
    ev: &mio::event::Event,
    slot: &mut Option<Lane>,
    spare: &mut Spare,
) {
    let Some(o) = spare.pending.as_mut() else {
        return;
    };
    let id = d.share.first + i as u32;
    // Every connection of the run names a client of its own.
    let n = u64::from(id) + u64::from(spare.generation) * d.share.cfg.conns as u64;
    match d.open(o, ev, n) {
        Ok(false) => {}
        Ok(true) => {
            if let Some(o) = spare.pending.take() {
                let mut lane = o.into_lane(id);
                let now = Instant::now();
                if d.share.rate.is_none() && now < window.end {
                    d.issue(&mut lane, d.share.cfg.depth, now);
                }
                let alive = lane.alive;
                *slot = Some(lane);
                if !alive {
                    lost(d, window, slot, spare);
                }
            }
        }
        Err(OpenFailed::Connect(e)) => {
            d.tally
                .fail(Fault::of_connect(&e), || format!("connect: {e}"));
            lost(d, window, slot, spare);
        }
        Err(OpenFailed::Header(f)) => {
            d.tally.error(|| format!("conn {id}: PROXY header: {f}"));
            lost(d, window, slot, spare);
        }
    }
}
