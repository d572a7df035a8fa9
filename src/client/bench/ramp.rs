//! The ramp-up: opening a thread's connections in batches, retrying refused or
//! overflowing attempts with back-off, so thousands can be opened without
//! overflowing the server's accept queue.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::driver::{Driver, Lane, retriable};
use crate::conn::Connection;
use crate::socket;
use crate::token::{self, Target};

/// Connections being set up at once.
const BATCH: usize = 256;
/// Give up connecting after this long.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Connection attempts per connection.
const ATTEMPTS: u32 = 12;

/// An attempt waiting for its turn: which connection, how many attempts so far, and
/// not before when.
type Attempt = (usize, u32, Instant);

/// Opens every connection of the driver's share; a connection that could not be
/// opened is `None` (and counted as an error).
pub(super) fn run(d: &mut Driver<'_>) -> Vec<Option<Lane>> {
    let n = d.share.conns;
    let mut lanes: Vec<Option<Lane>> = (0..n).map(|_| None).collect();
    // Connections under way, with the attempt they are on.
    let mut connecting: Vec<Option<(Connection, u32)>> = (0..n).map(|_| None).collect();
    let mut queue: VecDeque<Attempt> = (0..n).map(|i| (i, 0, Instant::now())).collect();
    let mut in_progress = 0;
    let mut connected = 0;
    let mut failed = 0;
    let deadline = Instant::now() + TIMEOUT;
    while connected + failed < n && Instant::now() < deadline {
        // Start attempts that are due, up to the batch size.
        let now = Instant::now();
        let mut tries = queue.len();
        while in_progress < BATCH && tries > 0 {
            tries -= 1;
            let Some((i, attempt, not_before)) = queue.pop_front() else {
                break;
            };
            if not_before > now {
                queue.push_back((i, attempt, not_before));
                continue;
            }
            match d.connect(i, 0) {
                Ok(conn) => {
                    connecting[i] = Some((conn, attempt));
                    in_progress += 1;
                }
                Err(e) => retry(&mut queue, d, i, attempt, &e, &mut failed),
            }
        }
        if !d.poll(Duration::from_millis(10)) {
            break;
        }
        let events = d.take_events();
        for ev in events.iter() {
            let Target::Conn { key: i, .. } = token::decode(ev.token()) else {
                continue;
            };
            if i >= n || !socket::connect_settled(ev) {
                continue;
            }
            let Some((mut conn, attempt)) = connecting[i].take() else {
                continue;
            };
            in_progress -= 1;
            match socket::finish_connect(conn.transport()) {
                Ok(()) => {
                    connected += 1;
                    conn.add_event(ev);
                    lanes[i] = Some(Lane::new(d.share.first + i as u32, conn));
                }
                Err(e) => retry(&mut queue, d, i, attempt, &e, &mut failed),
            }
        }
        d.put_events(events);
    }
    d.tally.connected += connected;
    let missing = n - connected - failed;
    if missing > 0 {
        d.tally.errors += missing as u64;
        d.tally.first_error.get_or_insert_with(|| {
            format!("{missing} connections not established within {TIMEOUT:?}")
        });
    }
    lanes
}

/// Puts a failed attempt back in the queue with back-off, or gives the connection up.
fn retry(
    queue: &mut VecDeque<Attempt>,
    d: &mut Driver<'_>,
    i: usize,
    attempt: u32,
    e: &io::Error,
    failed: &mut usize,
) {
    if retriable(e) && attempt + 1 < ATTEMPTS {
        let backoff = Duration::from_millis(10 << attempt.min(7));
        queue.push_back((i, attempt + 1, Instant::now() + backoff));
    } else {
        *failed += 1;
        d.tally.error(|| format!("connect: {e}"));
    }
}
