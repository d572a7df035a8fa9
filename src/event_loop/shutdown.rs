//! Graceful shutdown and signals: close the listeners, stop reading, write out what is
//! owed, shut every connection down, and finish when all are gone or time is up.

use std::time::Instant;

use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use super::{Callback, EventLoop, Reason};
use crate::conn::Phase;
use crate::service::Service;

impl<S: Service> EventLoop<S> {
    pub(super) fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let got: Vec<i32> = signals.pending().collect();
        for sig in got {
            match sig {
                SIGINT | SIGTERM if self.draining_until.is_some() => {
                    warn!(
                        "second signal: closing {} connections now",
                        self.conns.len()
                    );
                    self.close_all();
                }
                SIGINT | SIGTERM => {
                    let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                    self.begin_shutdown(name);
                }
                SIGUSR1 => match self.worker {
                    Some(w) => info!("stats worker={w} {}", self.stats()),
                    None => info!("stats {}", self.stats()),
                },
                _ => {}
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self, why: &str) {
        if self.draining_until.is_some() {
            return;
        }
        self.draining_until = Some(Instant::now() + self.config.shutdown_timeout);
        let worker = self
            .worker
            .map(|w| format!("worker {w}: "))
            .unwrap_or_default();
        info!(
            "{worker}{why}: closing listeners, draining {} connections (at most {:?})",
            self.conns.len(),
            self.config.shutdown_timeout
        );
        for slot in &mut self.listeners {
            if let Some(mut socket) = slot.socket.take() {
                let _ = self.poll.registry().deregister(socket.source());
            }
            slot.paused_until = None;
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.phase == Phase::Open {
                // No more input will be served; let the service write what it owes for
                // input it already has (a line without its terminator).
                if !conn.peer_eof {
                    self.callback(key, Callback::Eof);
                }
                let conn = &mut self.conns[key];
                if conn.phase == Phase::Open {
                    conn.phase = Phase::Closing;
                }
            }
            self.settle(key);
        }
        self.check_drained();
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
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.remove(key, Reason::ShutdownTimeout);
        }
        self.finished = true;
    }
}
