//! The library's loop running on its own thread, as an embedding program runs it.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use sockloop::{Builder, Endpoint, Handle, Service, Stats};

use super::net::{DEADLINE, sockaddr};

/// The library's loop running on its own thread.
pub struct LibServer {
    /// The bound internet addresses, in listener order (Unix listeners are skipped).
    pub addrs: Vec<SocketAddr>,
    /// Every bound endpoint, in listener order.
    pub endpoints: Vec<Endpoint>,
    pub handle: Handle,
    thread: Option<JoinHandle<io::Result<Stats>>>,
}

impl LibServer {
    /// Builds the loop on a new thread (the service is moved there) and waits until it
    /// is bound.
    pub fn start<S: Service + Send + 'static>(builder: Builder, service: S) -> LibServer {
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut server = match builder.build(service) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            tx.send(Ok((server.local_addrs(), server.handle())))
                .unwrap();
            server.run()
        });
        let (endpoints, handle) = rx
            .recv_timeout(DEADLINE)
            .expect("server thread did not start")
            .expect("server failed to build");
        let addrs = endpoints
            .iter()
            .filter(|e| e.host_port().is_some())
            .map(sockaddr)
            .collect();
        LibServer {
            addrs,
            endpoints,
            handle,
            thread: Some(thread),
        }
    }

    /// Echo on one `tcp://127.0.0.1:0` listener with default limits.
    pub fn echo() -> LibServer {
        Self::start(tcp_builder(), sockloop::services::Echo)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Shuts the loop down gracefully and returns its final counters.
    pub fn stop(mut self) -> Stats {
        self.handle.shutdown().expect("wake the loop");
        let t = self.thread.take().expect("running");
        t.join()
            .expect("server thread panicked")
            .expect("loop failed")
    }
}

impl Drop for LibServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.handle.shutdown();
            let _ = t.join();
        }
    }
}

/// A builder with one `tcp://127.0.0.1:0` listener.
pub fn tcp_builder() -> Builder {
    Builder::new().listen("tcp://127.0.0.1:0".parse().unwrap())
}

/// Raises this test process's descriptor limit (tests open thousands of sockets).
pub fn raise_nofile() {
    sockloop::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
}
