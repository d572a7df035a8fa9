//! Accepting connections: budgets, the connection limit, and what to do when the
//! process runs out of descriptors.

use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Interest;

use super::{EventLoop, SocketKind};
use crate::proxy::ProxyProtocol;
use crate::service::{Context, Service};
use crate::socket::Listener;
use crate::sys;
use crate::transport::{PeerAddr, Transport};

/// First and longest pause of a listener that hit descriptor exhaustion.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often descriptor exhaustion is logged while it lasts.
const EXHAUSTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A stream listener and its accept back-off.
pub(super) struct ListenerState {
    pub(super) listener: Listener,
    /// The PROXY protocol header its connections start with, if any.
    proxy: Option<ProxyProtocol>,
    /// Its connections live at most the handshake timeout (see
    /// [`ListenOptions::short_lived`](crate::ListenOptions::short_lived)).
    short_lived: bool,
    /// Not accepting until then: descriptors ran out.
    pub(super) paused_until: Option<Instant>,
    backoff: Duration,
}

impl ListenerState {
    pub(super) fn new(listener: Listener, proxy: Option<ProxyProtocol>, short_lived: bool) -> Self {
        ListenerState {
            listener,
            proxy,
            short_lived,
            paused_until: None,
            backoff: BACKOFF_MIN,
        }
    }
}

impl<S: Service> EventLoop<S> {
    /// Accepts until the listener's queue is empty or the budget is used. A listener
    /// stopped by its budget is readable still: it is served again next turn, without
    /// waiting for an edge that will not come.
    pub(super) fn accept(&mut self, i: usize) {
        if !self.sockets[i].readiness.readable() {
            return;
        }
        for _ in 0..self.config.accept_budget {
            let Some(SocketKind::Listener(l)) = &mut self.sockets[i].kind else {
                return;
            };
            if l.paused_until.is_some() {
                return;
            }
            match l.listener.accept() {
                Ok((transport, peer)) => {
                    l.backoff = BACKOFF_MIN;
                    let (proxy, short_lived) = (l.proxy, l.short_lived);
                    self.admit(i, transport, peer, proxy, short_lived);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sockets[i].readiness.clear_readable();
                    return;
                }
                Err(e) if sys::is_per_connection_accept_error(&e) => {
                    debug!("accept on {}: {e}", self.locals[i]);
                }
                Err(e) if sys::is_fd_exhaustion(&e) => {
                    self.descriptors_exhausted(i, e);
                    return;
                }
                Err(e) => {
                    warn!("accept on {}: {e}; pausing this listener", self.locals[i]);
                    self.pause_listener(i);
                    return;
                }
            }
        }
        self.carry_over_socket(i);
    }

    fn admit(
        &mut self,
        i: usize,
        transport: Transport,
        peer: PeerAddr,
        proxy: Option<ProxyProtocol>,
        short_lived: bool,
    ) {
        if self.conns.is_full() || self.draining_until.is_some() {
            self.reject(i, transport, &peer);
            return;
        }
        let key = self.conns.insert(transport, i, proxy, short_lived);
        let token = self.conns.token(key);
        if let Err(e) = self.poll.registry().register(
            self.conns.source(key),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register connection from {peer}: {e}");
            drop(self.conns.remove(key));
            return;
        }
        self.stats.accepted += 1;
        debug!(
            conn = self.conns.id(key).seq(),
            peer:% = peer,
            listener:% = self.locals[i];
            "conn {}: accepted from {peer} on {}{}",
            self.conns.id(key),
            self.locals[i],
            if proxy.is_some() {
                ", waiting for its PROXY header"
            } else {
                ""
            }
        );
        // A connection that owes a PROXY header meets its service once the header is
        // read: the registration reports its first bytes as an event.
        if proxy.is_none() && self.open(key) {
            // Data that arrived with the connection is reported by the registration, as
            // an event; what the service wrote or asked for in `open` is done now.
            self.serve(key);
        }
    }

    /// Opens the service for connection `key` (accepted, and its PROXY header read if
    /// it owed one). False if the connection ended meanwhile.
    pub(super) fn open(&mut self, key: usize) -> bool {
        let state = self.service.open(&mut Context::new(
            &mut self.conns,
            &mut self.stats,
            &self.locals,
            key,
        ));
        if self.states.len() <= key {
            self.states.resize_with(key + 1, || None);
        }
        self.states[key] = Some(state);
        !self.reap(key)
    }

    /// Accepted past `--max-conns` (or while shutting down): tell the peer, close.
    fn reject(&mut self, i: usize, mut transport: Transport, peer: &PeerAddr) {
        self.stats.rejected += 1;
        debug!(
            "rejected connection from {peer} on {}: server full",
            self.locals[i]
        );
        // Over TLS the message could only be sent after a handshake, which a full
        // server does not spend on a connection it is about to close: the write says
        // so (Handshaking) and sends nothing.
        let msg = self.service.reject_message(i);
        if !msg.is_empty() && self.draining_until.is_none() {
            let _ = transport.write(&[msg], msg.len());
        }
        let _ = transport.shutdown_write();
        // Take whatever already arrived, so the close sends a FIN and not a reset that
        // could destroy the message before the peer reads it.
        let _ = transport.read(&mut self.scratch);
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
                self.locals[i],
                self.conns.len()
            );
        }
        // Shed: free the reserve descriptor for a moment to accept-and-close what is
        // waiting, so those clients learn at once instead of hanging in the backlog.
        if let Some(reserve) = self.reserve.take() {
            drop(reserve);
            if let Some(SocketKind::Listener(l)) = &self.sockets[i].kind {
                for _ in 0..self.config.accept_budget {
                    match l.listener.accept() {
                        Ok((t, _)) => {
                            self.stats.rejected += 1;
                            drop(t);
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
        if let Some(SocketKind::Listener(l)) = &mut self.sockets[i].kind {
            l.paused_until = Some(Instant::now() + l.backoff);
            l.backoff = (l.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// A descriptor came free: listeners paused for lack of them accept again, next
    /// turn (their readable flag was never cleared).
    pub(super) fn resume_listeners(&mut self) {
        for i in 0..self.sockets.len() {
            if let Some(SocketKind::Listener(l)) = &mut self.sockets[i].kind {
                if l.paused_until.take().is_some() {
                    self.carry_over_socket(i);
                }
            }
        }
    }
}
