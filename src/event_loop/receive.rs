//! Serving a datagram socket: receive until the kernel queue is empty (or the budget is
//! used), hand each datagram to the service, send its reply — in batches of up to 32
//! per system call where the platform allows.
//!
//! A datagram socket's send buffer can fill up too. Then replies wait in a small
//! bounded queue ([`ReplyQueue`]), flushed when the socket turns writable; when that
//! queue is full, further replies are dropped and counted. Dropping is the right
//! answer for datagrams: the protocol already tolerates loss, and memory must not grow
//! because one peer sends faster than the network drains.
//!
//! # Safety rules (never an amplifier)
//! - A reply is never larger than its request, and there is at most one per request
//!   ([`DatagramContext::reply`]).
//! - Datagrams from source port 0 or from the ports of the classic built-in services
//!   (7 echo, 13 daytime, 19 chargen, 37 time) are dropped: two echo services pointed at
//!   each other by one spoofed datagram would otherwise bounce it forever.
//! - Errors the kernel reports on a datagram socket because of an earlier datagram
//!   (ICMP port unreachable turned into `ECONNREFUSED`, and the like) are counted and
//!   never stop the loop.

use std::collections::VecDeque;
use std::io;

use log::{debug, trace};

use super::{EventLoop, SocketKind};
use crate::readiness::Readiness;
use crate::service::{DatagramContext, Service};
#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::socket::Batch;
use crate::socket::{DatagramSocket, Received};
use crate::stats::Stats;
use crate::sys::retry;
use crate::transport::PeerAddr;

/// Source ports whose datagrams are dropped unless explicitly allowed.
pub const UNSAFE_SOURCE_PORTS: [u16; 5] = [0, 7, 13, 19, 37];

/// True when a datagram from `peer` must not be answered (see the module docs).
fn is_unsafe_source(peer: &PeerAddr) -> bool {
    matches!(peer, PeerAddr::Inet(a) if UNSAFE_SOURCE_PORTS.contains(&a.port()))
}

/// A datagram socket and what the loop keeps for it.
pub(super) struct DatagramState {
    pub(super) socket: DatagramSocket,
    replies: ReplyQueue,
    /// Buffers for `recvmmsg`/`sendmmsg`, for UDP sockets when batching is on.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    batch: Option<Box<Batch>>,
}

impl DatagramState {
    pub(super) fn new(socket: DatagramSocket, batched: bool) -> Self {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let batch = (batched && socket.is_udp()).then(|| Box::new(Batch::new()));
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = batched;
        DatagramState {
            socket,
            replies: ReplyQueue::default(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            batch,
        }
    }
}

/// Replies the socket could not take at once, oldest first.
#[derive(Debug, Default)]
struct ReplyQueue {
    items: VecDeque<(PeerAddr, Box<[u8]>)>,
    bytes: usize,
}

impl ReplyQueue {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues a reply unless the queue already holds `max_count` replies or
    /// `max_bytes` bytes; returns false (the reply is dropped) when it does.
    fn push(&mut self, to: PeerAddr, data: &[u8], max_count: usize, max_bytes: usize) -> bool {
        if self.items.len() >= max_count || self.bytes + data.len() > max_bytes {
            return false;
        }
        self.bytes += data.len();
        self.items.push_back((to, data.into()));
        true
    }

    fn front(&self) -> Option<&(PeerAddr, Box<[u8]>)> {
        self.items.front()
    }

    fn pop(&mut self) {
        if let Some((_, d)) = self.items.pop_front() {
            self.bytes -= d.len();
        }
        if self.items.is_empty() {
            // Give the ring's memory back: an idle socket owns nothing.
            self.items = VecDeque::new();
        }
    }
}

impl<S: Service> EventLoop<S> {
    /// Serves datagram socket `i`: queued replies first when it is writable, then
    /// what there is to receive.
    pub(super) fn serve_datagrams(&mut self, i: usize) {
        if self.sockets[i].readiness.writable() {
            self.flush_replies(i);
        }
        if !self.sockets[i].readiness.readable() {
            return;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(SocketKind::Datagram(d)) = &self.sockets[i].kind {
            if d.batch.is_some() {
                return self.receive_batched(i);
            }
        }
        self.receive_one_by_one(i);
    }

    /// `recv_from` → service → `send_to`, one datagram at a time.
    fn receive_one_by_one(&mut self, i: usize) {
        let mut budget = self.config.datagram_budget;
        loop {
            if budget == 0 {
                return self.carry_over_socket(i);
            }
            budget -= 1;
            let slot = &mut self.sockets[i];
            let Some(SocketKind::Datagram(d)) = slot.kind.as_mut() else {
                return;
            };
            let r = retry(|| d.socket.recv_from(&mut self.scratch));
            self.stats.datagram_recv_calls += 1;
            let (n, peer) = match r {
                Ok(Received::Datagram(n, peer)) => (n, peer),
                Ok(Received::Truncated(peer)) => {
                    self.stats.datagrams_in += 1;
                    self.stats.datagrams_dropped += 1;
                    debug!(
                        "datagram from {peer} longer than {} bytes: dropped",
                        self.scratch.len()
                    );
                    continue;
                }
                Err(e) if drained(&e, i, &mut slot.readiness, &mut self.stats) => return,
                Err(_) => continue,
            };
            self.stats.datagrams_in += 1;
            self.stats.bytes_in += n as u64;
            trace!("datagram socket {i}: {n} bytes from {peer}");
            if refused_source(&peer, &self.config, &mut self.stats) {
                continue;
            }
            self.arena.clear();
            let mut ctx = DatagramContext {
                socket: i,
                local: &self.locals[i],
                peer: &peer,
                request_len: n,
                arena: &mut self.arena,
                reply: None,
                stats: &mut self.stats,
            };
            self.service.datagram(&self.scratch[..n], &mut ctx);
            let Some((start, len)) = ctx.reply else {
                continue;
            };
            let reply = &self.arena[start..start + len];
            if unanswerable(&peer, &mut self.stats) {
                continue;
            }
            if !d.replies.is_empty() {
                queue_reply(d, peer, reply, &mut self.stats, &self.config);
                continue;
            }
            if send_one(&d.socket, reply, &peer, &mut self.stats) == Sent::Full {
                slot.readiness.clear_writable();
                queue_reply(d, peer, reply, &mut self.stats, &self.config);
            }
        }
    }

    /// `recvmmsg` → service for each datagram → one `sendmmsg` for all the replies.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn receive_batched(&mut self, i: usize) {
        use crate::socket::{BATCH, peer_of};
        let mut budget = self.config.datagram_budget as usize;
        loop {
            if budget == 0 {
                return self.carry_over_socket(i);
            }
            let slot = &mut self.sockets[i];
            let Some(SocketKind::Datagram(d)) = slot.kind.as_mut() else {
                return;
            };
            let fd = d.socket.fd();
            let Some(batch) = d.batch.as_mut() else {
                return;
            };
            let r = retry(|| batch.recv(fd));
            self.stats.datagram_recv_calls += 1;
            let n = match r {
                Ok(n) => n,
                Err(e) if drained(&e, i, &mut slot.readiness, &mut self.stats) => return,
                Err(_) => {
                    budget = budget.saturating_sub(1);
                    continue;
                }
            };
            budget = budget.saturating_sub(n.max(1));
            trace!("datagram socket {i}: {n} datagrams in one receive");
            self.arena.clear();
            self.outgoing.clear();
            for k in 0..n {
                // Result k is always in buffer k, addressed or not (see `socket/batch.rs`).
                let (data, addr) = batch.datagram(k);
                let peer = addr.as_ref().map_or(PeerAddr::Unix(None), peer_of);
                self.stats.datagrams_in += 1;
                self.stats.bytes_in += data.len() as u64;
                if refused_source(&peer, &self.config, &mut self.stats) {
                    continue;
                }
                let mut ctx = DatagramContext {
                    socket: i,
                    local: &self.locals[i],
                    peer: &peer,
                    request_len: data.len(),
                    arena: &mut self.arena,
                    reply: None,
                    stats: &mut self.stats,
                };
                self.service.datagram(data, &mut ctx);
                match (ctx.reply, addr) {
                    (Some((start, len)), Some(addr)) => self.outgoing.push((start, len, addr)),
                    (Some(_), None) => {
                        unanswerable(&peer, &mut self.stats);
                    }
                    (None, _) => {}
                }
            }
            let mut sent = 0;
            while sent < self.outgoing.len() && d.replies.is_empty() {
                let r = retry(|| batch.send(fd, &self.arena, &self.outgoing[sent..]));
                self.stats.datagram_send_calls += 1;
                match r {
                    Ok(k) => {
                        for &(_, len, _) in &self.outgoing[sent..sent + k] {
                            self.stats.datagrams_out += 1;
                            self.stats.bytes_out += len as u64;
                        }
                        sent += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        slot.readiness.clear_writable();
                        break;
                    }
                    Err(e) => {
                        // The first unsent reply failed; skip it and send the rest.
                        self.stats.datagram_errors += 1;
                        debug!("datagram socket {i}: send: {e}");
                        sent += 1;
                    }
                }
            }
            // What the socket did not take waits in the queue (or is dropped when full).
            for &(start, len, addr) in &self.outgoing[sent..] {
                queue_reply(
                    d,
                    peer_of(&addr),
                    &self.arena[start..start + len],
                    &mut self.stats,
                    &self.config,
                );
            }
            if n < BATCH {
                // Fewer than asked: the kernel queue is empty.
                slot.readiness.clear_readable();
                return;
            }
        }
    }

    /// Sends queued replies, oldest first, until the queue is empty or the socket full.
    fn flush_replies(&mut self, i: usize) {
        let slot = &mut self.sockets[i];
        let Some(SocketKind::Datagram(d)) = slot.kind.as_mut() else {
            return;
        };
        while let Some((to, data)) = d.replies.front() {
            if send_one(&d.socket, data, to, &mut self.stats) == Sent::Full {
                slot.readiness.clear_writable();
                return;
            }
            d.replies.pop();
        }
    }
}

/// Sorts out a failed receive: true when the socket is drained (`WouldBlock`; its
/// readable flag is cleared). Any other error concerns one datagram — most likely the
/// echo of an earlier send (an ICMP unreachable); the socket itself is fine — and is
/// counted.
fn drained(e: &io::Error, i: usize, readiness: &mut Readiness, stats: &mut Stats) -> bool {
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            readiness.clear_readable();
            true
        }
        _ => {
            stats.datagram_errors += 1;
            debug!("datagram socket {i}: receive: {e}");
            false
        }
    }
}

/// Counts and drops a datagram from a source that must not be answered: port 0 or a
/// classic service port, unless allowed (see the module docs). True when dropped.
fn refused_source(peer: &PeerAddr, config: &crate::Config, stats: &mut Stats) -> bool {
    if is_unsafe_source(peer) && !config.allow_service_ports {
        stats.datagrams_dropped += 1;
        debug!("datagram from {peer}: source port not answered (echo/chargen storm guard)");
        return true;
    }
    false
}

/// Counts and drops a reply to a sender with no address: an unnamed Unix socket. True
/// when dropped.
fn unanswerable(peer: &PeerAddr, stats: &mut Stats) -> bool {
    if matches!(peer, PeerAddr::Unix(None)) {
        stats.datagrams_dropped += 1;
        debug!("datagram from an unnamed Unix socket: nobody to answer");
        return true;
    }
    false
}

/// What one `send_to` did.
#[derive(PartialEq, Eq)]
enum Sent {
    /// Sent, or failed for good (counted): either way it is done with.
    Done,
    /// The socket's buffer is full: the reply must wait for a writable event.
    Full,
}

/// Sends one reply and counts the call. A failure other than a full buffer is about
/// this datagram only (an ICMP-induced error, a peer that went away): counted, and the
/// socket goes on.
fn send_one(socket: &DatagramSocket, data: &[u8], to: &PeerAddr, stats: &mut Stats) -> Sent {
    let r = retry(|| socket.send_to(data, to));
    stats.datagram_send_calls += 1;
    match r {
        Ok(n) => {
            stats.datagrams_out += 1;
            stats.bytes_out += n as u64;
            Sent::Done
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::Full,
        Err(e) => {
            stats.datagram_errors += 1;
            debug!("datagram send to {to}: {e}");
            Sent::Done
        }
    }
}

/// Queues a reply behind those waiting, or drops it when the queue is full.
fn queue_reply(
    d: &mut DatagramState,
    to: PeerAddr,
    data: &[u8],
    stats: &mut Stats,
    config: &crate::Config,
) {
    if !d
        .replies
        .push(to, data, config.reply_queue_max, config.reply_queue_bytes)
    {
        stats.datagrams_dropped += 1;
        trace!("reply queue full: reply dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_queue_is_bounded_by_count_and_bytes() {
        let mut q = ReplyQueue::default();
        let to = PeerAddr::Inet("127.0.0.1:9".parse().unwrap());
        assert!(q.push(to.clone(), &[1; 10], 2, 100));
        assert!(q.push(to.clone(), &[2; 10], 2, 100));
        assert!(!q.push(to.clone(), &[3; 10], 2, 100), "count limit");
        q.pop();
        assert!(!q.push(to.clone(), &[3; 95], 2, 100), "byte limit");
        assert!(q.push(to.clone(), &[3; 90], 2, 100));
        assert_eq!(q.front().unwrap().1[0], 2);
        q.pop();
        q.pop();
        assert!(q.is_empty());
    }

    #[test]
    fn service_ports_are_unsafe_sources() {
        for port in [0, 7, 13, 19, 37] {
            assert!(is_unsafe_source(&PeerAddr::Inet(
                format!("127.0.0.1:{port}").parse().unwrap()
            )));
        }
        assert!(!is_unsafe_source(&PeerAddr::Inet(
            "127.0.0.1:40000".parse().unwrap()
        )));
        assert!(!is_unsafe_source(&PeerAddr::Unix(None)));
    }
}
