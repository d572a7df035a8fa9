//! Serving a datagram socket: receive until the kernel queue is empty (or the budget is
//! used), hand each datagram to the service, send its reply — in batches of up to 32
//! per system call where the platform allows.

use std::io;

use log::{debug, trace};

use super::{EventLoop, Socket};
use crate::datagram::{Datagram, Received, is_unsafe_source};
use crate::service::{DatagramContext, Service};
use crate::stats::Stats;
use crate::token;
use crate::transport::PeerAddr;

impl<S: Service> EventLoop<S> {
    /// Receives what is waiting on datagram socket `i`.
    pub(super) fn receive(&mut self, i: usize) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(Socket::Datagram(d)) = &self.listeners[i].socket {
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
            let Some(Socket::Datagram(d)) = self.listeners[i].socket.as_mut() else {
                return;
            };
            if budget == 0 {
                self.defer_listener(i);
                return;
            }
            budget -= 1;
            let r = d.sock.recv_from(&mut self.scratch);
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Most likely the echo of an earlier send (ICMP unreachable); the
                    // socket itself is fine.
                    self.stats.datagram_errors += 1;
                    debug!("datagram socket {i}: receive: {e}");
                    continue;
                }
            };
            self.stats.datagrams_in += 1;
            self.stats.bytes_in += n as u64;
            trace!("datagram socket {i}: {n} bytes from {peer}");
            if is_unsafe_source(&peer) && !self.config.allow_service_ports {
                self.stats.datagrams_dropped += 1;
                debug!("datagram from {peer}: source port not answered (echo/chargen storm guard)");
                continue;
            }
            self.arena.clear();
            let mut ctx = DatagramContext {
                listener: i,
                peer: &peer,
                request_len: n,
                arena: &mut self.arena,
                reply: None,
                stats: &mut self.stats,
            };
            self.service.datagram(&self.scratch[..n], &mut ctx);
            if let Some((start, len)) = ctx.reply {
                let reply = &self.arena[start..start + len];
                send_reply(d, &peer, reply, &mut self.stats, &self.config);
            }
        }
    }

    /// `recvmmsg` → service for each datagram → one `sendmmsg` for all the replies.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn receive_batched(&mut self, i: usize) {
        use crate::datagram::{BATCH, peer_of};
        let mut budget = self.config.datagram_budget as usize;
        loop {
            let Some(Socket::Datagram(d)) = self.listeners[i].socket.as_mut() else {
                return;
            };
            let fd = d.fd();
            let Some(batch) = d.batch.as_mut() else {
                return;
            };
            if budget == 0 {
                self.defer_listener(i);
                return;
            }
            let r = batch.recv(fd);
            self.stats.datagram_recv_calls += 1;
            let n = match r {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stats.datagram_errors += 1;
                    budget = budget.saturating_sub(1);
                    debug!("datagram socket {i}: receive: {e}");
                    continue;
                }
            };
            budget = budget.saturating_sub(n.max(1));
            trace!("datagram socket {i}: {n} datagrams in one receive");
            self.arena.clear();
            self.outgoing.clear();
            for k in 0..n {
                let (len, addr) = batch.got[k];
                let peer = peer_of(&addr);
                self.stats.datagrams_in += 1;
                self.stats.bytes_in += len as u64;
                if is_unsafe_source(&peer) && !self.config.allow_service_ports {
                    self.stats.datagrams_dropped += 1;
                    debug!(
                        "datagram from {peer}: source port not answered (echo/chargen storm guard)"
                    );
                    continue;
                }
                let mut ctx = DatagramContext {
                    listener: i,
                    peer: &peer,
                    request_len: len,
                    arena: &mut self.arena,
                    reply: None,
                    stats: &mut self.stats,
                };
                self.service.datagram(batch.datagram(k), &mut ctx);
                if let Some((start, len)) = ctx.reply {
                    self.outgoing.push((start, len, addr));
                }
            }
            let mut sent = 0;
            while sent < self.outgoing.len() && d.replies.is_empty() {
                let batch = d.batch.as_mut().expect("checked above");
                let r = batch.send(fd, &self.arena, &self.outgoing[sent..]);
                self.stats.datagram_send_calls += 1;
                match r {
                    Ok(k) => {
                        for &(_, len, _) in &self.outgoing[sent..sent + k] {
                            self.stats.datagrams_out += 1;
                            self.stats.bytes_out += len as u64;
                        }
                        sent += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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
                return;
            }
        }
    }

    /// Sends queued replies, oldest first, until the queue is empty or the socket full.
    pub(super) fn flush_replies(&mut self, i: usize) {
        let Some(Socket::Datagram(d)) = self.listeners[i].socket.as_mut() else {
            return;
        };
        while let Some((to, data)) = d.replies.front() {
            let r = d.sock.send_to(data, to);
            self.stats.datagram_send_calls += 1;
            match r {
                Ok(n) => {
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.stats.datagram_errors += 1;
                    debug!("datagram socket {i}: send to {to}: {e}");
                }
            }
            d.replies.pop();
        }
    }

    fn defer_listener(&mut self, i: usize) {
        let slot = &mut self.listeners[i];
        if !slot.pending {
            slot.pending = true;
            self.pending.push(token::listener(i));
        }
    }
}

/// Sends one reply now, or queues it behind replies already waiting.
fn send_reply(
    d: &mut Datagram,
    to: &PeerAddr,
    data: &[u8],
    stats: &mut Stats,
    config: &crate::Config,
) {
    if matches!(to, PeerAddr::Unix(None)) {
        stats.datagrams_dropped += 1;
        debug!("datagram from an unnamed Unix socket: nobody to answer");
        return;
    }
    if !d.replies.is_empty() {
        return queue_reply(d, to.clone(), data, stats, config);
    }
    let r = d.sock.send_to(data, to);
    stats.datagram_send_calls += 1;
    match r {
        Ok(n) => {
            stats.datagrams_out += 1;
            stats.bytes_out += n as u64;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            queue_reply(d, to.clone(), data, stats, config)
        }
        Err(e) => {
            stats.datagram_errors += 1;
            debug!("send to {to}: {e}");
        }
    }
}

fn queue_reply(
    d: &mut Datagram,
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
