//! What a loop tells the world about its life: when it stops being ready, when it
//! starts shutting down, and its counters now and then — for a service manager
//! (`sd_notify`), a health endpoint, a metrics scrape that must see every worker.
//!
//! # Draining for a rolling update
//! A balancer or a Kubernetes Service keeps sending new connections to a server until
//! its health check or its endpoint list says otherwise, and that takes a moment. So a
//! loop with a [`Config::drain_delay`](crate::Config::drain_delay) answers the first
//! SIGTERM (or SIGINT) in two phases: first it only stops being *ready* —
//! [`Observer::draining`] is called, `/readyz` answers 503 — and goes on accepting and
//! serving for the delay, so the balancer can take it out of rotation; then it shuts
//! down as it always did (listeners closed, what is owed written, connections shut
//! down; [`Observer::stopping`]). A second signal in either phase closes everything at
//! once.

use std::sync::Arc;
use std::time::Duration;

use crate::stats::Stats;

/// How often at most a loop hands its counters to its observer.
pub const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// Told what a loop does, on the loop's own thread. Every method has an empty default;
/// implement what you need. With [`Workers`](crate::Workers) every worker calls the same
/// observer, with its index.
pub trait Observer: Send + Sync {
    /// The loop stopped being ready: a drain began (see the module docs). Called once,
    /// at the first signal, before [`stopping`](Self::stopping) — at once when there is
    /// no drain delay.
    fn draining(&self, worker: Option<usize>, delay: Duration) {
        let _ = (worker, delay);
    }

    /// The loop began its shutdown: listeners are closed, what is owed is being
    /// written.
    fn stopping(&self, worker: Option<usize>) {
        let _ = worker;
    }

    /// The loop's counters, at most every [`STATUS_INTERVAL`] while something happens,
    /// and once more after it has gone quiet, so the last figures are never missing.
    fn status(&self, worker: Option<usize>, stats: &Stats) {
        let _ = (worker, stats);
    }
}

/// Several observers as one, called in order.
impl Observer for Vec<Arc<dyn Observer>> {
    fn draining(&self, worker: Option<usize>, delay: Duration) {
        self.iter().for_each(|o| o.draining(worker, delay));
    }

    fn stopping(&self, worker: Option<usize>) {
        self.iter().for_each(|o| o.stopping(worker));
    }

    fn status(&self, worker: Option<usize>, stats: &Stats) {
        self.iter().for_each(|o| o.status(worker, stats));
    }
}

/// The latest counters of each worker, as [`Observer::status`] hands them over (index
/// 0 for a loop without workers): what an observer that reports the whole server
/// keeps, and sums.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerStats(Vec<Stats>);

impl WorkerStats {
    /// Keeps `stats` as the latest of `worker`.
    pub(crate) fn set(&mut self, worker: Option<usize>, stats: &Stats) {
        let i = worker.unwrap_or(0);
        if self.0.len() <= i {
            self.0.resize_with(i + 1, Stats::default);
        }
        self.0[i] = stats.clone();
    }

    /// Adds every worker's latest counters to `total`, except those of `skip` (a
    /// worker whose live counters the caller already has).
    pub(crate) fn add_to(&self, total: &mut Stats, skip: Option<usize>) {
        for (i, s) in self.0.iter().enumerate() {
            if Some(i) != skip {
                total.add(s);
            }
        }
    }
}

/// The observer a loop was given, if any (a wrapper so that [`Config`](crate::Config)
/// stays `Debug`).
#[derive(Clone, Default)]
pub(crate) struct ObserverSlot(pub(crate) Option<Arc<dyn Observer>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}
