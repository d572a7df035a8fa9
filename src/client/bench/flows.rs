//! The load generator over datagram sockets: each flow is one socket keeping `depth`
//! datagrams in flight. A reply is matched to its request by content (the sequence
//! number is mixed into the first bytes), so reordering is fine; a datagram with no
//! reply within the timeout is counted lost — not an error — and replaced. Replies
//! that come twice, or after a later datagram's, are counted (`duplicated`,
//! `reordered`), not errors either; a reply that matches nothing sent is `corrupt`.

use std::collections::VecDeque;
use std::io;
use std::sync::Barrier;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::pattern::Pattern;
use super::{Fault, Schedule, Share, Tally, Window};
use crate::socket::DatagramSocket;

/// Replies to datagrams already declared lost, or already answered, are recognised
/// among this many of each.
const RECENTLY_LOST: usize = 256;

struct Flow {
    sock: DatagramSocket,
    next_seq: u64,
    /// Sequence number, due time (for latency), send time (for the loss timeout).
    outstanding: VecDeque<(u64, Instant, Instant)>,
    recently_lost: VecDeque<u64>,
    /// The last datagrams answered, to tell a duplicate from a corrupt reply.
    recently_answered: VecDeque<u64>,
    /// The highest sequence number answered so far, to tell a reordered reply.
    highest_answered: Option<u64>,
}

pub(super) fn run(share: &Share, tally: &mut Tally, ready: &Barrier, window: &Receiver<Window>) {
    let started = Instant::now();
    let (mut poll, mut flows) = match open_flows(share, tally) {
        Ok(x) => x,
        Err(e) => {
            tally.error(|| format!("datagram sockets: {e}"));
            ready.wait();
            return;
        }
    };
    tally.ramp = started.elapsed();
    ready.wait();
    let Ok(w) = window.recv() else { return };
    tally.begin_intervals(&w);
    serve(share, tally, &w, &mut poll, &mut flows);
}

fn open_flows(share: &Share, tally: &mut Tally) -> io::Result<(Poll, Vec<Option<Flow>>)> {
    let poll = Poll::new()?;
    let mut flows = Vec::with_capacity(share.conns);
    for i in 0..share.conns {
        match DatagramSocket::connect(&share.cfg.endpoint, share.addr) {
            Ok(mut sock) => {
                poll.registry()
                    .register(sock.source(), Token(i), Interest::READABLE)?;
                tally.connected += 1;
                flows.push(Some(Flow {
                    sock,
                    next_seq: 0,
                    outstanding: VecDeque::new(),
                    recently_lost: VecDeque::new(),
                    recently_answered: VecDeque::with_capacity(RECENTLY_LOST + 1),
                    highest_answered: None,
                }));
            }
            Err(e) => {
                tally.error(|| format!("datagram socket: {e}"));
                flows.push(None);
            }
        }
    }
    Ok((poll, flows))
}

fn issue(
    id: u32,
    f: &mut Flow,
    due: Instant,
    pattern: &Pattern,
    msg: &mut [u8],
    tally: &mut Tally,
) {
    let seq = f.next_seq;
    f.next_seq += 1;
    pattern.fill(id, seq, msg);
    match f.sock.send(msg) {
        Ok(_) => f.outstanding.push_back((seq, due, Instant::now())),
        // The socket's buffer is full: this datagram never left, which is a loss.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => tally.lost += 1,
        Err(e) => tally.error(|| format!("flow {id}: send: {e}")),
    }
}

fn serve(
    share: &Share,
    tally: &mut Tally,
    window: &Window,
    poll: &mut Poll,
    flows: &mut [Option<Flow>],
) {
    let cfg = &share.cfg;
    let pattern = Pattern::new();
    let mut msg = vec![0u8; cfg.size];
    let mut buf = vec![0u8; 64 * 1024 + 1];
    let mut events = Events::with_capacity(1024);
    let mut open_loop = Schedule::new(share.rate, window.start);
    let mut last_scan = Instant::now();
    let id = |i: usize| share.first + i as u32;
    if open_loop.is_none() {
        for (i, f) in flows.iter_mut().enumerate() {
            if let Some(f) = f {
                for _ in 0..cfg.depth {
                    issue(id(i), f, Instant::now(), &pattern, &mut msg, tally);
                }
            }
        }
    }
    loop {
        let now = Instant::now();
        if now >= window.drain_until
            || (now >= window.end && flows.iter().flatten().all(|f| f.outstanding.is_empty()))
        {
            break;
        }
        let mut timeout = Duration::from_millis(10);
        if let Some(schedule) = open_loop.as_mut() {
            schedule.issue_due(now, window.end, flows.len(), |i, due| {
                if let Some(f) = flows[i].as_mut() {
                    issue(id(i), f, due, &pattern, &mut msg, tally);
                }
            });
            timeout = schedule.wait(now, window.end, timeout);
        }
        // Datagrams unanswered for too long are lost; in closed loop, replace them.
        if now.duration_since(last_scan) >= Duration::from_millis(10) {
            last_scan = now;
            for (i, f) in flows.iter_mut().enumerate() {
                let Some(f) = f else { continue };
                while f
                    .outstanding
                    .front()
                    .is_some_and(|&(_, _, sent)| now.duration_since(sent) >= cfg.timeout)
                {
                    let (seq, _, _) = f.outstanding.pop_front().expect("checked");
                    tally.lost += 1;
                    f.recently_lost.push_back(seq);
                    if f.recently_lost.len() > RECENTLY_LOST {
                        f.recently_lost.pop_front();
                    }
                    if open_loop.is_none() && now < window.end {
                        issue(id(i), f, now, &pattern, &mut msg, tally);
                    }
                }
            }
        }
        tally.publish();
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tally.error(|| format!("poll: {e}"));
                return;
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(f) = flows.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            loop {
                let n = match f.sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // ICMP-induced (the server is not there): every datagram in
                        // flight is as good as lost; the timeout will count them.
                        tally.error(|| format!("flow {}: receive: {e}", id(i)));
                        break;
                    }
                };
                let reply = &buf[..n];
                let matched = (n == cfg.size)
                    .then(|| {
                        f.outstanding
                            .iter()
                            .position(|&(seq, _, _)| pattern.check(id(i), seq, 0, reply))
                    })
                    .flatten();
                match matched {
                    Some(pos) => {
                        let (seq, due, _) = f.outstanding.remove(pos).expect("a position in range");
                        if f.highest_answered.is_some_and(|h| seq < h) {
                            tally.failures.reordered += 1;
                        }
                        f.highest_answered = f.highest_answered.max(Some(seq));
                        f.recently_answered.push_back(seq);
                        if f.recently_answered.len() > RECENTLY_LOST {
                            f.recently_answered.pop_front();
                        }
                        let done = Instant::now();
                        tally.completed(window, due, done);
                        if open_loop.is_none() && done < window.end {
                            issue(id(i), f, done, &pattern, &mut msg, tally);
                        }
                    }
                    None if n == cfg.size
                        && f.recently_answered
                            .iter()
                            .any(|&seq| pattern.check(id(i), seq, 0, reply)) =>
                    {
                        tally.failures.duplicated += 1;
                    }
                    // A reply that came after all, too late: already counted lost.
                    None if n == cfg.size
                        && f.recently_lost
                            .iter()
                            .any(|&seq| pattern.check(id(i), seq, 0, reply)) => {}
                    None => tally.fail(Fault::Corrupt, || {
                        format!("flow {}: a {n}-byte reply matching nothing sent", id(i))
                    }),
                }
            }
        }
    }
    for f in flows.iter().flatten() {
        tally.lost += f.outstanding.len() as u64;
    }
}
