//! Serving one stream connection: its readiness events, reads into the scratch buffer,
//! flushes of its queued output, and its way out (see the lifecycle in `conn`).

use std::io::{self, Read};

use log::{debug, trace};
use mio::event::Event;

use super::{Callback, EventLoop, Reason};
use crate::conn::Phase;
use crate::service::{Service, touch};
use crate::timer::Timer;
use crate::token::{self};

impl<S: Service> EventLoop<S> {
    pub(super) fn conn_event(&mut self, key: usize, seq: usize, ev: &Event) {
        let Some(conn) = self.conns.get_mut(key) else {
            trace!("event: key {key} is vacant (closed earlier in this batch)");
            return;
        };
        if token::seq_bits(conn.seq) != seq {
            trace!("event: stale, key {key} now belongs to conn {}", conn.seq);
            return;
        }
        trace!(
            "event: conn {}{}{}{}{}{}",
            conn.seq,
            if ev.is_readable() { " readable" } else { "" },
            if ev.is_writable() { " writable" } else { "" },
            if ev.is_read_closed() {
                " read-closed"
            } else {
                ""
            },
            if ev.is_write_closed() {
                " write-closed"
            } else {
                ""
            },
            if ev.is_error() { " error" } else { "" },
        );
        if ev.is_read_closed() {
            conn.read_closed = true;
        }
        if ev.is_error() {
            let err = match conn.stream.take_error() {
                Ok(Some(e)) => e,
                Ok(None) => io::Error::other("error event without a socket error"),
                Err(e) => e,
            };
            self.stats.conn_errors += 1;
            self.remove(key, Reason::Error(err));
            return;
        }
        if ev.is_writable() {
            self.on_writable(key);
        }
        if ev.is_readable() || ev.is_read_closed() {
            self.read(key);
        }
        self.settle(key);
    }

    pub(super) fn on_writable(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if !matches!(conn.phase, Phase::Open | Phase::Closing) {
            return;
        }
        // Output held below the queue (TLS records) goes first: it is older. While
        // some of it is still waiting the socket is full, and the queue waits too.
        match conn.stream.flush_pending() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                self.stats.conn_errors += 1;
                debug!("conn {}: write: {e}", conn.seq);
                conn.phase = Phase::Dead;
                return;
            }
        }
        match conn.flush(&mut self.stats) {
            Ok(0) => {}
            Ok(_) => touch(&mut self.conns, &mut self.timers, key, self.now_ms),
            Err(e) => {
                self.stats.conn_errors += 1;
                debug!("conn {}: write: {e}", conn.seq);
                conn.phase = Phase::Dead;
                return;
            }
        }
        let conn = &mut self.conns[key];
        if conn.paused && conn.out.len() <= self.config.low_water {
            conn.paused = false;
            self.stats.backpressure_resumes += 1;
            trace!(
                "conn {}: resume reading, {} bytes unsent",
                conn.seq,
                conn.out.len()
            );
            // The readable edge may have come while paused: read now, not on the next one.
            self.read(key);
        }
    }

    /// Reads until the kernel queue is empty, the budget is used, or the connection
    /// stops being readable. An open connection's bytes go to the service; a lingering
    /// one's are dropped, so that its final close finds no unread data (which would
    /// make the kernel send a reset that destroys the last bytes in flight).
    pub(super) fn read(&mut self, key: usize) {
        self.read_some(key);
        self.check_established(key);
    }

    /// After a read that completed a TLS handshake: the handshake deadline gives way
    /// to the idle timer, and output queued during the handshake is written now — the
    /// socket has been writable all along, so no event will come to say so.
    fn check_established(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(what) = conn.stream.take_established() else {
            return;
        };
        self.stats.tls_handshakes += 1;
        debug!("conn {}: TLS established: {what}", conn.seq);
        if conn.links.on() == Some(Timer::Handshake) {
            self.timers[Timer::Handshake as usize].unlink(key, &mut self.conns);
            if self.config.idle_timeout.is_some() {
                let now = self.now_ms;
                self.timers[Timer::Idle as usize].push(Timer::Idle, key, now, &mut self.conns);
            }
        }
        self.on_writable(key);
    }

    fn read_some(&mut self, key: usize) {
        let mut budget = self.config.read_budget;
        loop {
            let conn = &mut self.conns[key];
            let serving = match conn.phase {
                Phase::Open if conn.peer_eof || conn.paused => return,
                Phase::Open => true,
                Phase::Lingering => false,
                Phase::Closing | Phase::Dead => return,
            };
            if serving && conn.out.len() >= self.config.high_water {
                conn.paused = true;
                self.stats.backpressure_pauses += 1;
                trace!(
                    "conn {}: pause reading, {} bytes unsent",
                    conn.seq,
                    conn.out.len()
                );
                return;
            }
            if budget == 0 {
                self.stats.budget_yields += 1;
                trace!("conn {}: read budget used, continuing next turn", conn.seq);
                self.defer_conn(key);
                return;
            }
            budget -= 1;
            let r = conn.stream.read(&mut self.scratch);
            self.stats.reads += 1;
            match r {
                Ok(0) => {
                    trace!("conn {}: read EOF", conn.seq);
                    conn.peer_eof = true;
                    if serving {
                        self.callback(key, Callback::Eof);
                    }
                    return;
                }
                Ok(n) => {
                    // A short read emptied the kernel queue: the next read would only say
                    // WouldBlock, and new data raises a new edge. Unless the peer's FIN
                    // is already known to be queued: then read on to see it.
                    let drained = n < self.scratch.len()
                        && !conn.read_closed
                        && !conn.stream.has_buffered_input();
                    if serving {
                        trace!("conn {}: read {n} bytes", conn.seq);
                        self.stats.bytes_in += n as u64;
                        touch(&mut self.conns, &mut self.timers, key, self.now_ms);
                        self.callback(key, Callback::Data(n));
                    } else {
                        trace!("conn {}: lingering, discarded {n} bytes", conn.seq);
                        self.stats.bytes_discarded += n as u64;
                    }
                    if drained {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.read_would_block += 1;
                    trace!("conn {}: read would block", conn.seq);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if conn.stream.is_tls() && e.kind() == io::ErrorKind::InvalidData {
                        self.stats.tls_errors += 1;
                    } else {
                        self.stats.conn_errors += 1;
                    }
                    debug!("conn {}: read: {e}", conn.seq);
                    conn.phase = Phase::Dead;
                    return;
                }
            }
        }
    }

    /// Moves a connection along its lifecycle after anything happened to it.
    pub(super) fn settle(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Open && conn.peer_eof {
            conn.phase = Phase::Closing;
        }
        match conn.phase {
            Phase::Open => {
                if conn.wants_writable && conn.out.is_empty() {
                    self.produce(key);
                }
            }
            Phase::Dead => self.remove(key, Reason::Dead),
            Phase::Closing if conn.out.is_empty() => {
                match conn.stream.shutdown_write() {
                    Ok(()) => {}
                    // TLS: close_notify is still waiting for room in the socket; the
                    // next writable event sends it and comes back here.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        debug!("conn {}: shutdown: {e}", conn.seq);
                        self.remove(key, Reason::Error(e));
                        return;
                    }
                }
                if conn.peer_eof {
                    // Everything the peer sent was read: close() cannot cause a reset.
                    self.remove(key, Reason::PeerClosed);
                    return;
                }
                trace!("conn {}: write side shut, lingering", conn.seq);
                conn.phase = Phase::Lingering;
                if let Some(t) = conn.links.on() {
                    self.timers[t as usize].unlink(key, &mut self.conns);
                }
                let now = self.now_ms;
                self.timers[Timer::Linger as usize].push(Timer::Linger, key, now, &mut self.conns);
                self.read(key);
                self.settle(key);
            }
            Phase::Closing => {}
            Phase::Lingering => {
                if conn.peer_eof {
                    self.remove(key, Reason::PeerClosed);
                }
            }
        }
    }

    /// Calls [`Service::writable`] while the service asks for it and the socket takes
    /// everything it writes, at most the read budget's number of times per turn; a
    /// producer still asking after that is served again next turn, like a reader that
    /// used its budget. Output the socket did not take ends the calls until a writable
    /// event has drained it (`settle` comes back here then).
    fn produce(&mut self, key: usize) {
        let mut budget = self.config.read_budget;
        loop {
            let conn = &mut self.conns[key];
            if conn.phase != Phase::Open {
                // The service closed it, or a write failed: settle again.
                return self.settle(key);
            }
            if !conn.wants_writable || !conn.out.is_empty() {
                return;
            }
            if budget == 0 {
                self.stats.budget_yields += 1;
                trace!("conn {}: write budget used, continuing next turn", conn.seq);
                return self.defer_conn(key);
            }
            budget -= 1;
            conn.wants_writable = false;
            self.callback(key, Callback::Writable);
        }
    }

    /// Closes and forgets a connection.
    pub(super) fn remove(&mut self, key: usize, reason: Reason) {
        if let Some(t) = self.conns[key].links.on() {
            self.timers[t as usize].unlink(key, &mut self.conns);
        }
        let conn = self.conns.remove(key);
        let id = crate::ConnId {
            seq: conn.seq,
            key: key as u32,
        };
        if let Some(state) = self.states.get_mut(key).and_then(Option::take) {
            self.service.close(state, id);
        }
        self.stats.closed += 1;
        debug!("conn {id}: closed ({reason})");
        // Dropping the socket closes the descriptor, which also removes it from the
        // poll set (no deregister call needed: it was never duplicated).
        drop(conn);
        // A descriptor just came free: a listener starved of them can accept again.
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if l.paused_until.take().is_some() && !l.pending {
                l.pending = true;
                self.pending.push(token::listener(i));
            }
        }
    }
}
