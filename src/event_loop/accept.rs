//! Accepting connections: budgets, the connection limit, and what to do when the
//! process runs out of descriptors.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::Instant;

use log::{debug, warn};
use mio::Interest;

use super::{BACKOFF_MAX, BACKOFF_MIN, EXHAUSTION_LOG_INTERVAL, EventLoop, Socket};
use crate::conn::Conn;
use crate::service::{Context, Service};
use crate::sys;
use crate::timer::Timer;
use crate::token;
use crate::transport::{PeerAddr, Stream};

impl<S: Service> EventLoop<S> {
    pub(super) fn accept(&mut self, i: usize) {
        let slot = &mut self.listeners[i];
        if slot.paused_until.is_some() {
            return;
        }
        for _ in 0..self.config.accept_budget {
            let Some(Socket::Stream(socket)) = self.listeners[i].socket.as_ref() else {
                return;
            };
            match socket.accept() {
                Ok((stream, peer)) => {
                    self.listeners[i].backoff = BACKOFF_MIN;
                    self.admit(i, stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if sys::is_per_connection_accept_error(&e) => {
                    debug!("accept on {}: {e}", self.listeners[i].local);
                }
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    self.descriptors_exhausted(i, e);
                    return;
                }
                Err(e) => {
                    warn!(
                        "accept on {}: {e}; pausing this listener",
                        self.listeners[i].local
                    );
                    self.pause_listener(i);
                    return;
                }
            }
        }
        // Budget used: more connections may be waiting, and no new edge will say so.
        let slot = &mut self.listeners[i];
        if !slot.pending {
            slot.pending = true;
            self.pending.push(token::listener(i));
        }
    }

    fn admit(&mut self, i: usize, mut stream: Stream, peer: PeerAddr) {
        if self.conns.len() >= self.max_conns || self.draining_until.is_some() {
            self.reject(i, stream, &peer);
            return;
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        let seq = self.next_seq;
        let key = self.conns.vacant_key();
        if let Err(e) = self.poll.registry().register(
            stream.source(),
            token::conn(key, seq),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register connection from {peer}: {e}");
            return;
        }
        let handshaking = stream.is_handshaking();
        self.conns.insert(Conn::new(stream, seq, i as u32));
        // A TLS connection is on the handshake deadline until it completes, then on
        // the idle timer like any other.
        let timer = if handshaking {
            Some(Timer::Handshake)
        } else {
            self.config.idle_timeout.map(|_| Timer::Idle)
        };
        if let Some(t) = timer {
            let now = self.now_ms;
            self.timers[t as usize].push(t, key, now, &mut self.conns);
        }
        self.stats.accepted += 1;
        debug!(
            "conn {seq}: accepted from {peer} on {}",
            self.listeners[i].local
        );
        let mut ctx = context!(self, key);
        let state = self.service.open(&mut ctx);
        if self.states.len() <= key {
            self.states.resize_with(key + 1, || None);
        }
        self.states[key] = Some(state);
        self.reap_ended();
        // Data may have arrived with the connection; registering reports it as an
        // event, so there is nothing to read here.
        self.settle(key);
    }

    /// Accepted past `--max-conns` (or while shutting down): tell the peer, close.
    fn reject(&mut self, i: usize, mut stream: Stream, peer: &PeerAddr) {
        self.stats.rejected += 1;
        debug!(
            "rejected connection from {peer} on {}: server full",
            self.listeners[i].local
        );
        // Over TLS the message could only be sent after a handshake, which a full
        // server does not spend on a connection it is about to close.
        let msg = self.service.reject_message(i);
        if !msg.is_empty() && self.draining_until.is_none() && !stream.is_tls() {
            let _ = stream.write(msg);
        }
        let _ = stream.shutdown_write();
        // Take whatever already arrived, so the close sends a FIN and not a reset that
        // could destroy the message before the peer reads it.
        let _ = stream.read(&mut self.scratch);
    }

    fn descriptors_exhausted(&mut self, i: usize, e: io::Error) {
        self.stats.accept_fd_exhausted += 1;
        let now = Instant::now();
        let log_now = self
            .last_exhaustion_log
            .is_none_or(|t| now.duration_since(t) >= EXHAUSTION_LOG_INTERVAL);
        if log_now {
            self.last_exhaustion_log = Some(now);
            warn!(
                "accept on {}: {e} ({} connections open); shedding pending connections and backing off",
                self.listeners[i].local,
                self.conns.len()
            );
        }
        // Shed: free the reserve descriptor for a moment to accept-and-close what is
        // waiting, so those clients learn at once instead of hanging in the backlog.
        if let Some(reserve) = self.reserve.take() {
            drop(reserve);
            if let Some(Socket::Stream(socket)) = self.listeners[i].socket.as_ref() {
                for _ in 0..self.config.accept_budget {
                    match socket.accept() {
                        Ok((s, _)) => {
                            self.stats.rejected += 1;
                            drop(s);
                        }
                        Err(_) => break,
                    }
                }
            }
            self.reserve = File::open("/dev/null").ok();
        }
        self.pause_listener(i);
    }

    /// Stops accepting on a listener until a connection closes or the back-off passes.
    fn pause_listener(&mut self, i: usize) {
        let slot = &mut self.listeners[i];
        slot.paused_until = Some(Instant::now() + slot.backoff);
        slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
    }
}
