//! Graceful shutdown and signals: close the listeners, stop reading, write out what is
//! owed, shut every connection down, and finish when all are gone or time is up.

use std::collections::BTreeMap;
use std::time::Instant;

use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use super::EventLoop;
use crate::conn::{Phase, Reason};
use crate::lifecycle::STATUS_INTERVAL;
use crate::service::{Context, Service};

impl<S: Service> EventLoop<S> {
    pub(super) fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let got: Vec<i32> = signals.pending().collect();
        for sig in got {
            match sig {
                SIGINT | SIGTERM
                    if self.draining_until.is_some() || self.not_ready_until.is_some() =>
                {
                    warn!(
                        "second signal: closing {} connections now",
                        self.conns.len()
                    );
                    self.close_all();
                }
                SIGINT | SIGTERM => {
                    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                    self.begin_drain(name);
                }
                SIGUSR1 => {
                    // The counters as a field too, for structured logs: a map of numbers.
                    let stats = self.stats();
                    let counters: BTreeMap<_, _> = stats.fields().into_iter().collect();
                    match self.worker {
                        Some(w) => {
                            info!(worker = w, stats:serde = counters; "stats worker={w} {stats}")
                        }
                        None => info!(stats:serde = counters; "stats {stats}"),
                    }
                }
                _ => {}
            }
        }
    }

    /// The first signal: stop being ready, and shut down once the drain delay has
    /// passed (at once without one).
    fn begin_drain(&mut self, why: &str) {
        let delay = self.config.drain_delay;
        if delay.is_zero() {
            self.begin_shutdown(why);
            return;
        }
        self.tell_draining();
        self.not_ready_until = Some(Instant::now() + delay);
        info!(
            "{}{why}: not ready; still accepting and serving for {delay:?}, then shutting down",
            self.worker_prefix()
        );
    }

    /// Tells the observer that the loop is no longer ready: once, when the drain
    /// delay begins, or when the shutdown begins without one.
    fn tell_draining(&self) {
        if let Some(o) = &self.config.observer.0 {
            o.draining(self.worker, self.config.drain_delay);
        }
    }

    /// The drain delay has passed: the shutdown begins.
    pub(super) fn check_drain_delay(&mut self) {
        if self.not_ready_until.is_some_and(|t| self.now >= t) {
            self.begin_shutdown("drain delay over");
        }
    }

    fn worker_prefix(&self) -> String {
        self.worker
            .map(|w| format!("worker {w}: "))
            .unwrap_or_default()
    }

    pub(super) fn begin_shutdown(&mut self, why: &str) {
        if self.draining_until.is_some() {
            return;
        }
        // A drain delay, over or cut short, already told the observer.
        if self.not_ready_until.take().is_none() {
            self.tell_draining();
        }
        if let Some(o) = &self.config.observer.0 {
            o.stopping(self.worker);
        }
        self.draining_until = Some(Instant::now() + self.config.shutdown_timeout);
        let worker = self.worker_prefix();
        info!(
            "{worker}{why}: closing listeners, draining {} connections (at most {:?})",
            self.conns.len(),
            self.config.shutdown_timeout
        );
        for slot in &mut self.sockets {
            // Dropping a socket closes it; a Unix socket file this process made goes
            // with it.
            if let Some(mut kind) = slot.kind.take() {
                let _ = self.poll.registry().deregister(kind.source());
            }
        }
        for key in self.conns.keys() {
            // An earlier connection's callback may have closed this one meanwhile.
            if !self.conns.contains(key) {
                continue;
            }
            match self.conns.phase(key) {
                Phase::Open => {}
                // Not served yet: nothing is owed to it.
                Phase::Header(_) => {
                    self.conns.close_asap(key, Reason::Shutdown);
                    self.reap(key);
                    continue;
                }
                _ => continue,
            }
            // No more input will be served; let the service write what it owes for
            // input it already has (a line without its terminator).
            if !self.conns.peer_eof(key) {
                if let Some(Some(state)) = self.states.get_mut(key) {
                    let mut ctx = Context::new(&mut self.conns, &mut self.stats, &self.locals, key);
                    self.service.eof(state, &mut ctx);
                }
                if self.reap(key) {
                    continue;
                }
            }
            self.conns.close(key);
            self.serve(key);
        }
        self.check_drained();
    }

    /// Hands the counters to the observer, at most every [`STATUS_INTERVAL`], and only
    /// when something happened since.
    pub(super) fn report_status(&mut self) {
        let Some(o) = &self.config.observer.0 else {
            return;
        };
        // The last figures are always told, when the loop finishes.
        if !self.finished
            && (self.stats.events == self.status_events
                || self.now < self.last_status + STATUS_INTERVAL)
        {
            return;
        }
        self.status_events = self.stats.events;
        self.last_status = self.now;
        o.status(self.worker, &self.stats());
    }

    pub(super) fn check_drained(&mut self) {
        let Some(deadline) = self.draining_until else {
            return;
        };
        if !self.conns.is_empty() && self.now >= deadline {
            warn!(
                "shutdown timeout: closing {} connections with output still unsent",
                self.conns.len()
            );
            self.close_all();
        }
        if self.conns.is_empty() {
            self.finished = true;
        }
    }

    /// Ends the drain: every connection still open is closed as it is.
    fn close_all(&mut self) {
        for key in self.conns.keys() {
            self.finish(key, Reason::Shutdown);
        }
        self.finished = true;
    }
}
