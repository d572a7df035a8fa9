//! Several loops on several threads: `--workers N`.
//!
//! Each worker is a whole [`EventLoop`] with its own sockets, connections, service and
//! counters; nothing is shared on the hot path, so there are no locks to contend for.
//! The kernel spreads the load: every worker has its own `SO_REUSEPORT` socket on
//! each internet address, and new connections and datagrams are hashed over them by
//! address and port. (Unix sockets have no `SO_REUSEPORT`: the workers accept from
//! one shared socket, whichever is woken first.) A connection lives and dies on the
//! worker that accepted it, so a service that relates connections to each other, like
//! chat, sees only its own worker's clients.

use std::io;
use std::thread;

use log::error;

use crate::endpoint::Endpoint;
use crate::event_loop::{EventLoop, Handle};
use crate::service::Service;
use crate::stats::Stats;

/// Loops built by [`Builder::build_workers`](crate::Builder::build_workers), each to
/// run on a thread of its own.
///
/// ```
/// use sockloop::{Builder, services::Echo};
///
/// let workers = Builder::new()
///     .listen("tcp://127.0.0.1:0".parse()?)
///     .build_workers(2, |_| Echo)?;
/// let addr = workers.local_addrs()[0].clone();
/// let handle = workers.handle();
/// let running = std::thread::spawn(move || workers.run());
/// // ... serve on `addr` ...
/// handle.shutdown()?; // stops both loops
/// let stats = running.join().expect("the workers")?; // their counters, summed
/// assert_eq!(stats.accepted, 0);
/// # let _ = addr;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Workers<S: Service> {
    loops: Vec<EventLoop<S>>,
}

impl<S: Service> Workers<S> {
    pub(crate) fn new(loops: Vec<EventLoop<S>>) -> Self {
        Workers { loops }
    }

    /// How many loops there are.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    /// Always false: there is at least one loop.
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
    }

    /// The bound addresses, in the order given (the same for every worker).
    pub fn local_addrs(&self) -> Vec<Endpoint> {
        self.loops[0].local_addrs()
    }

    /// The connection limit of each worker.
    pub fn max_conns(&self) -> usize {
        self.loops[0].max_conns()
    }

    /// One handle that stops every worker.
    pub fn handle(&self) -> Handle {
        Handle::join(self.loops.iter().map(EventLoop::handle))
    }
}

impl<S> Workers<S>
where
    S: Service + Send + 'static,
    S::State: Send,
{
    /// Runs each loop on its own thread (`sockloop-worker-N`) until a shutdown has
    /// finished on all of them, and returns their counters summed. If one loop fails
    /// the others are stopped too, and the first error is returned.
    pub fn run(self) -> io::Result<Stats> {
        let handle = self.handle();
        let mut threads = Vec::with_capacity(self.loops.len());
        for (i, mut lp) in self.loops.into_iter().enumerate() {
            let stop = handle.clone();
            let t = thread::Builder::new()
                .name(format!("sockloop-worker-{i}"))
                .spawn(move || {
                    let r = lp.run();
                    if let Err(e) = &r {
                        error!("worker {i}: event loop failed: {e}; stopping the others");
                        let _ = stop.shutdown();
                    }
                    r
                });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The loops already running must not be left behind.
                    let _ = handle.shutdown();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot start worker {i}: {e}"),
                    ));
                }
            }
        }
        let mut total = Stats::default();
        let mut first_error = None;
        for t in threads {
            match t.join() {
                Ok(Ok(stats)) => total.add(&stats),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    let _ = handle.shutdown();
                    first_error.get_or_insert(io::Error::other("a worker thread panicked"));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}
