//! The ramp-up: opening a thread's connections in batches, retrying refused or
//! overflowing attempts with back-off, so thousands can be opened without
//! overflowing the server's accept queue.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::Fault;
use super::driver::{Driver, Lane, OpenFailed, Opening, retriable};
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

/// Opens every connection of the driver's share, each with its PROXY header sent if
/// the run sends them; a connection that could not be opened is `None` (and counted
/// as an error).
pub(super) fn run(d: &mut Driver<'_>) -> Vec<Option<Lane>> {
    let n = d.share.conns;
    let mut lanes: Vec<Option<Lane>> = (0..n).map(|_| None).collect();
    // Connections under way, with the attempt they are on.
    let mut connecting: Vec<Option<(Opening, u32)>> = (0..n).map(|_| None).collect();
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
                    connecting[i] = Some((Opening::new(conn, now), attempt));
                    in_progress += 1;
                }
                Err(e) => retry(&mut queue, d, i, attempt, &e, &mut failed),
            }
        }
        // Attempts slower than the stream timeout are abandoned and retried, as a
        // refused one would be.
        if let Some(limit) = d.share.cfg.stream_timeout {
            for (i, slot) in connecting.iter_mut().enumerate() {
                let late = slot.take_if(|(o, _)| o.started.elapsed() >= limit);
                if let Some((_, attempt)) = late {
                    in_progress -= 1;
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("not connected within {limit:?}"),
                    );
                    retry(&mut queue, d, i, attempt, &e, &mut failed);
                }
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
            let Some((o, attempt)) = connecting.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let id = d.share.first + i as u32;
            let failure = match d.open(o, ev, u64::from(id)) {
                Ok(false) => continue,
                Ok(true) => None,
                Err(OpenFailed::Connect(e)) => Some(e),
                Err(OpenFailed::Header(fault)) => {
                    let e = io::Error::from(fault);
                    Some(io::Error::new(e.kind(), format!("PROXY header: {e}")))
                }
            };
            let attempt = *attempt;
            let Some((o, _)) = connecting[i].take() else {
                continue;
            };
            in_progress -= 1;
            match failure {
                None => {
                    connected += 1;
                    lanes[i] = Some(o.into_lane(id));
                }
                Some(e) => retry(&mut queue, d, i, attempt, &e, &mut failed),
            }
        }
        d.put_events(events);
    }
    d.tally.connected += connected;
    let missing = n - connected - failed;
    d.tally.fail_n(Fault::ConnectTimeout, missing as u64, || {
        format!("{missing} connections not established within {TIMEOUT:?}")
    });
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
        let why = if e.kind() == io::ErrorKind::AddrNotAvailable {
            // The source addresses ran out of ephemeral ports towards this server
            // address and port: say so, and what would help.
            " — no free local port left towards this server address: each source \
             address has one ephemeral port range (net.ipv4.ip_local_port_range) per \
             server address and port; spread the connections with --bind ADDR,ADDR,… or \
             widen the range"
        } else {
            ""
        };
        d.tally
            .fail(Fault::of_connect(e), || format!("connect: {e}{why}"));
    }
}
