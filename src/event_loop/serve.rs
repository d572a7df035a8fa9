//! Serving one stream connection: its readiness events, the steps it wants taken, the
//! service callbacks, and removing it when it ends.
//!
//! The connection table says what a connection wants next (`Conns::next_step`, from
//! its phase and readiness); this file does it — writes what it owes, shuts it down,
//! reads into the loop's buffer and hands the bytes to the service, or asks the service
//! for more output — until it wants nothing its readiness allows, or its budget for
//! the turn is used up. Then the connections closed meanwhile are removed, each with
//! its reason logged and counted, in one place ([`EventLoop::finish`]).

use log::{debug, trace};
use mio::event::Event;

use super::EventLoop;
use crate::conn::{HeaderRead, Input, Phase, Reason, Step};
use crate::service::{Context, Service};

/// Which service callback to run for a connection.
#[derive(Clone, Copy)]
enum Callback {
    Data(usize),
    Eof,
    Writable,
}

impl<S: Service> EventLoop<S> {
    pub(super) fn conn_event(&mut self, key: usize, seq: usize, ev: &Event) {
        if !self.conns.is_current(key, seq) {
            trace!("event: stale, slot {key} is vacant or belongs to a newer connection");
            return;
        }
        trace!(
            "event: conn {}{}{}{}{}{}",
            self.conns.id(key),
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
        if ev.is_error() {
            let err = self.conns.take_error(key);
            self.conns.close_asap(key, Reason::SocketError(err));
            self.reap(key);
            return;
        }
        self.conns.add_event(key, ev);
        self.serve(key);
    }

    /// Takes the steps connection `key` wants, while its readiness allows them and its
    /// budget lasts: [`Config::read_budget`](crate::Config) reads or service
    /// productions per turn, so one busy peer cannot starve the rest. A connection
    /// stopped by its budget still has its readiness flags, so it goes on the list for
    /// next turn and is served then without a new event.
    pub(super) fn serve(&mut self, key: usize) {
        let mut budget = self.config.read_budget;
        loop {
            match self.conns.next_step(key, &mut self.stats) {
                Step::Wait => return,
                Step::Flush => self.conns.flush(key, &mut self.stats),
                Step::Shutdown => self.conns.shutdown(key, &mut self.stats),
                Step::Read | Step::ReadHeader | Step::Produce if budget == 0 => {
                    self.stats.budget_yields += 1;
                    trace!(
                        "conn {}: budget used, continuing next turn",
                        self.conns.id(key)
                    );
                    if self.conns.mark_ready_listed(key) {
                        self.ready.push(self.conns.token(key));
                    }
                    return;
                }
                Step::Read => {
                    budget -= 1;
                    self.read(key);
                }
                Step::Produce => {
                    budget -= 1;
                    self.conns.take_writable_request(key);
                    self.callback(key, Callback::Writable);
                }
                Step::ReadHeader => {
                    budget -= 1;
                    if !self.read_header(key) {
                        return;
                    }
                }
            }
            if self.reap(key) {
                return;
            }
        }
    }

    /// Reads once and hands what came to the service. An open connection's bytes go to
    /// [`Service::data`]; a lingering one's are dropped, so that its final close finds
    /// no unread data (which would make the kernel send a reset that destroys the last
    /// bytes in flight).
    fn read(&mut self, key: usize) {
        match self.conns.read(key, &mut self.scratch, &mut self.stats) {
            Input::Data(n) => {
                if self.conns.phase(key) == Phase::Open {
                    trace!("conn {}: read {n} bytes", self.conns.id(key));
                    self.stats.bytes_in += n as u64;
                    self.callback(key, Callback::Data(n));
                } else {
                    trace!(
                        "conn {}: lingering, discarded {n} bytes",
                        self.conns.id(key)
                    );
                    self.stats.bytes_discarded += n as u64;
                }
            }
            Input::Eof => {
                trace!("conn {}: read EOF", self.conns.id(key));
                self.conns.set_peer_eof(key);
                match self.conns.phase(key) {
                    Phase::Open => {
                        self.callback(key, Callback::Eof);
                        self.conns.close(key);
                    }
                    Phase::Lingering => self.conns.close_asap(key, Reason::PeerClosed),
                    Phase::Header(_) | Phase::Closing | Phase::Closed => {}
                }
            }
            Input::Nothing => trace!("conn {}: nothing more to read", self.conns.id(key)),
            Input::Failed(fault) => {
                debug!("conn {}: read: {fault}", self.conns.id(key));
                self.conns.close_asap(key, fault.into());
            }
        }
    }

    /// Reads the connection's PROXY header, or more of it; once it is whole the
    /// service is opened and given the bytes that came behind it. False when the
    /// connection is gone.
    fn read_header(&mut self, key: usize) -> bool {
        match self
            .conns
            .read_header(key, &mut self.scratch, &mut self.stats)
        {
            HeaderRead::Waiting | HeaderRead::Closed => true,
            HeaderRead::Done(rest) => {
                if !self.open(key) {
                    return false;
                }
                if rest > 0 && self.conns.phase(key) == Phase::Open {
                    trace!(
                        "conn {}: {rest} bytes behind the PROXY header",
                        self.conns.id(key)
                    );
                    self.callback(key, Callback::Data(rest));
                }
                true
            }
        }
    }

    /// Runs one service callback for connection `key`, with a [`Context`] over the
    /// connection table.
    fn callback(&mut self, key: usize, cb: Callback) {
        let Some(Some(state)) = self.states.get_mut(key) else {
            return;
        };
        let mut ctx = Context::new(&mut self.conns, &mut self.stats, &self.locals, key);
        match cb {
            Callback::Data(n) => self.service.data(state, &self.scratch[..n], &mut ctx),
            Callback::Eof => self.service.eof(state, &mut ctx),
            Callback::Writable => self.service.writable(state, &mut ctx),
        }
    }

    /// Removes every connection closed since the last call. True when `current` was
    /// one of them: its caller must not touch that slot again.
    #[inline]
    pub(super) fn reap(&mut self, current: usize) -> bool {
        if !self.conns.has_closed() {
            return false;
        }
        let mut gone = false;
        while let Some((key, reason)) = self.conns.take_closed() {
            gone |= key == current;
            self.finish(key, reason);
        }
        gone
    }

    /// Removes connection `key`: counts and logs why it ended, hands its state back to
    /// the service, and closes its socket.
    pub(super) fn finish(&mut self, key: usize, reason: Reason) {
        // The fields are for structured logs (the binary's JSON format); the text stays
        // the message. They are computed only when the record is logged.
        debug!(
            conn = self.conns.id(key).seq(),
            peer = self.conns.peer_addr(key).ok().map(|p| p.to_string()),
            listener:% = self.locals[self.conns.listener(key)],
            reason:% = reason;
            "{}: closed ({reason})",
            self.conns.describe(key)
        );
        let (id, conn) = self.conns.remove(key);
        reason.count(&mut self.stats);
        if let Some(state) = self.states.get_mut(key).and_then(Option::take) {
            self.service.close(state, id);
        }
        // Dropping the socket closes the descriptor, which also removes it from the
        // poll set (no deregister call needed: it was never duplicated).
        drop(conn);
        // A descriptor just came free: a listener starved of them can accept again.
        self.resume_listeners();
    }
}
