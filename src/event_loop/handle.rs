//! Stopping a loop from another thread.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::Waker;

/// A `Send + Clone` handle that stops an [`EventLoop`](crate::EventLoop) — or every loop
/// of a [`Workers`](crate::Workers) — from any thread.
#[derive(Clone, Debug)]
pub struct Handle {
    loops: Vec<Arc<Shared>>,
}

/// What a loop shares with its handles: a waker registered in its poll set, and the
/// flag the waker's event tells the loop to look at.
#[derive(Debug)]
pub(crate) struct Shared {
    waker: Waker,
    shutdown: AtomicBool,
}

impl Shared {
    pub(crate) fn new(waker: Waker) -> Arc<Shared> {
        Arc::new(Shared {
            waker,
            shutdown: AtomicBool::new(false),
        })
    }

    /// True once a handle asked for a shutdown.
    pub(crate) fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Handle {
        Handle {
            loops: vec![shared],
        }
    }

    /// Starts a graceful shutdown, as SIGTERM does for the binary: listeners close,
    /// nothing new is read, what was already read is written out, connections are
    /// shut down and [`EventLoop::run`](crate::EventLoop::run) returns once all are
    /// closed (or the shutdown timeout passes). Wakes the loop if it is sleeping in
    /// `poll`.
    pub fn shutdown(&self) -> io::Result<()> {
        let mut result = Ok(());
        for shared in &self.loops {
            shared.shutdown.store(true, Ordering::Release);
            // Wake every loop even if one wake fails; report the first failure.
            if let Err(e) = shared.waker.wake() {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// One handle for several loops.
    pub(crate) fn join(handles: impl IntoIterator<Item = Handle>) -> Handle {
        Handle {
            loops: handles.into_iter().flat_map(|h| h.loops).collect(),
        }
    }
}
