//! The closed and open loops over established connections.
//!
//! - **Closed loop**: every connection keeps `depth` messages in flight and issues the
//!   next as soon as one comes back.
//! - **Open loop** (`rate`): messages leave at a fixed total rate whatever the server
//!   does, each stamped with when it was *due*, so a server that stalls shows in the
//!   percentiles instead of silently slowing the client down (no coordinated
//!   omission).

use std::time::{Duration, Instant};

use super::driver::{Driver, Lane};
use super::{Fault, Schedule, Window};
use crate::token::{self, Target};

pub(super) fn run(d: &mut Driver<'_>, window: &Window, lanes: &mut [Option<Lane>]) {
    let depth = d.share.cfg.depth;
    let stream_timeout = d.share.cfg.stream_timeout;
    let mut last_scan = Instant::now();
    let mut open_loop = Schedule::new(d.share.rate, window.start);
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
        if let Some(limit) = stream_timeout {
            if now.duration_since(last_scan) >= Duration::from_millis(10) {
                last_scan = now;
                expire(d, lanes, now, limit);
            }
        }
        if !d.poll(timeout) {
            return;
        }
        let events = d.take_events();
        for ev in events.iter() {
            let Target::Conn { key: i, .. } = token::decode(ev.token()) else {
                continue;
            };
            let Some(lane) = lanes.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if !lane.alive {
                continue;
            }
            let done = d.serve(lane, ev, window);
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
