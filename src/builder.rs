//! Building an [`EventLoop`]: which addresses to listen on and the limits to keep.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::conn::Limits;
use crate::endpoint::Endpoint;
use crate::event_loop::EventLoop;
use crate::lifecycle::{Observer, ObserverSlot};
use crate::proxy::ProxyProtocol;
use crate::service::Service;
use crate::socket::{BindOptions, Bound, StdSocket};
use crate::sys;
use crate::token;
use crate::workers::Workers;

/// Collects listener addresses and a [`Config`], then binds and makes an [`EventLoop`].
///
/// ```no_run
/// use sockloop::{Builder, services::Echo};
///
/// let mut server = Builder::new()
///     .listen("tcp://127.0.0.1:0".parse()?)
///     .build(Echo)?;
/// println!("listening {}", server.local_addrs()[0]);
/// server.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    listen: Vec<Listen>,
    config: Config,
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// One listener to be: an address to bind, or a socket already bound.
#[derive(Debug)]
enum Listen {
    Bind(Endpoint, ListenOptions),
    Adopt(StdSocket, ListenOptions),
}

/// Options of one listener that belong to the socket, not to the service.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Permission bits for a Unix socket file, as `chmod` takes them (`0o660`);
    /// `None` keeps what the umask gives.
    pub unix_perm: Option<u32>,
    /// The TLS server configuration of a `tls://` listener; `None` uses the one given
    /// to [`Builder::tls`].
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The PROXY protocol header every connection to this stream listener must start
    /// with (see [`crate::proxy`]); `None`: no header.
    pub proxy: Option<ProxyProtocol>,
    /// Connections of this listener are closed [`Config::handshake_timeout`] after
    /// their accept, whatever they are doing: for a listener whose connections carry
    /// one short request each (the metrics listener), so a client that trickles its
    /// request cannot hold one open.
    pub short_lived: bool,
}

impl ListenOptions {
    /// Sets the permission bits of a Unix socket file.
    pub fn unix_perm(mut self, mode: u32) -> Self {
        self.unix_perm = Some(mode);
        self
    }

    /// Sets this listener's TLS configuration (certificate, key, client
    /// authentication); see [`tls::server_config`](crate::tls::server_config).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Makes the listener short-lived (see [`ListenOptions::short_lived`]).
    pub fn short_lived(mut self) -> Self {
        self.short_lived = true;
        self
    }

    /// Expects a PROXY protocol header on every connection (stream listeners only:
    /// building fails for a datagram socket).
    pub fn proxy(mut self, version: ProxyProtocol) -> Self {
        self.proxy = Some(version);
        self
    }
}

impl Builder {
    /// No listeners yet, default limits.
    pub fn new() -> Self {
        Builder::default()
    }

    /// Adds a listener. Listeners are numbered from 0 in the order they are added; a
    /// service sees the number through [`Context::listener`](crate::Context::listener).
    pub fn listen(self, endpoint: Endpoint) -> Self {
        self.listen_with(endpoint, ListenOptions::default())
    }

    /// Adds a listener with socket options (a Unix socket file's permissions).
    pub fn listen_with(mut self, endpoint: Endpoint, options: ListenOptions) -> Self {
        self.listen.push(Listen::Bind(endpoint, options));
        self
    }

    /// Adds a socket the program has already bound (and, for a stream socket, put in
    /// the listening state): a `std::net::TcpListener`, `UdpSocket`, or a Unix
    /// `UnixListener` / `UnixDatagram`. It is numbered like a [`listen`](Self::listen)
    /// address and made non-blocking. A program that binds its own sockets keeps
    /// control of their options, or receives them from a supervisor such as systemd.
    ///
    /// ```
    /// use sockloop::{Builder, services::Echo};
    ///
    /// let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = std_listener.local_addr()?.port();
    /// let server = Builder::new().listen_socket(std_listener).build(Echo)?;
    /// assert_eq!(server.local_addrs()[0].to_string(), format!("tcp://127.0.0.1:{port}"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listen_socket(self, socket: impl Into<StdSocket>) -> Self {
        self.listen_socket_with(socket, ListenOptions::default())
    }

    /// [`listen_socket`](Self::listen_socket) with options: a TCP listener given a TLS
    /// configuration ([`ListenOptions::tls`]) serves TLS. A Unix socket's permissions
    /// are the caller's business.
    pub fn listen_socket_with(
        mut self,
        socket: impl Into<StdSocket>,
        options: ListenOptions,
    ) -> Self {
        self.listen.push(Listen::Adopt(socket.into(), options));
        self
    }

    /// The TLS configuration of every `tls://` listener that has none of its own; see
    /// [`tls::server_config`](crate::tls::server_config).
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.config.handshake_timeout = d;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets [`Config::max_conns`].
    pub fn max_conns(mut self, n: usize) -> Self {
        self.config.max_conns = Some(n);
        self
    }

    /// Sets [`Config::idle_timeout`]; zero means never.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = (!d.is_zero()).then_some(d);
        self
    }

    /// Sets [`Config::max_outbuf`].
    pub fn max_outbuf(mut self, bytes: usize) -> Self {
        self.config.max_outbuf = bytes;
        self
    }

    /// Sets [`Config::drain_delay`].
    pub fn drain_delay(mut self, d: Duration) -> Self {
        self.config.drain_delay = d;
        self
    }

    /// Tells `observer` when the loop (each loop, with workers) stops being ready,
    /// begins its shutdown, and what its counters are (see [`Observer`]).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.config.observer = ObserverSlot(Some(observer));
        self
    }

    /// Sets [`Config::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.config.shutdown_timeout = d;
        self
    }

    /// Sets [`Config::allow_service_ports`].
    pub fn allow_service_ports(mut self, on: bool) -> Self {
        self.config.allow_service_ports = on;
        self
    }

    /// Sets [`Config::datagram_batch`].
    pub fn datagram_batch(mut self, on: bool) -> Self {
        self.config.datagram_batch = on;
        self
    }

    /// Sets [`Config::handle_signals`].
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.config.handle_signals = on;
        self
    }

    /// Binds every listener and makes the loop. Nothing is served until it runs.
    ///
    /// Errors name the address that failed (`cannot bind tcp://127.0.0.1:5001: Address
    /// already in use`); listeners bound before the failure are closed again. Limits
    /// that do not fit together ([`Config::validate`]) are refused before any binding.
    pub fn build<S: Service>(self, service: S) -> io::Result<EventLoop<S>> {
        self.config.validate()?;
        if self.listen.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listener given",
            ));
        }
        for listen in &self.listen {
            let (datagram, name) = match listen {
                Listen::Bind(ep, o) => (!ep.is_stream(), o.proxy.map(|_| ep.to_string())),
                Listen::Adopt(s, o) => (
                    matches!(s, StdSocket::Udp(_) | StdSocket::UnixDatagram(_)),
                    o.proxy.map(|_| "a given datagram socket".to_string()),
                ),
            };
            if let (true, Some(name)) = (datagram, name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name}: the PROXY protocol applies to stream listeners only"),
                ));
            }
        }
        let mut listeners = Vec::with_capacity(self.listen.len());
        for listen in self.listen {
            match listen {
                Listen::Bind(ep, options) => {
                    let opts = BindOptions {
                        reuse_port: self.config.reuse_port,
                        unix_perm: options.unix_perm,
                        tls: options.tls.or_else(|| self.tls.clone()),
                    };
                    let bound = Bound::bind(&ep, opts)?;
                    let local = bound.local_endpoint(&ep)?;
                    listeners.push((bound, local, options.proxy, options.short_lived));
                }
                Listen::Adopt(socket, options) => {
                    let (bound, local) = Bound::adopt(socket, options.tls).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot serve a given socket: {e}"))
                    })?;
                    listeners.push((bound, local, options.proxy, options.short_lived));
                }
            }
        }
        let limits = limits(&self.config)?;
        EventLoop::new(listeners, service, self.config, limits)
    }

    /// Makes `n` loops serving the same listeners, for [`Workers`] to run on `n`
    /// threads. `make(i)` makes worker `i`'s service: each loop has its own, with no
    /// state shared between them.
    ///
    /// Each loop gets its own sockets: internet listeners are bound `n` times with
    /// `SO_REUSEPORT` (the first binds port 0 and the others the port it got), and the
    /// kernel spreads new connections and datagrams over them. Unix sockets have no
    /// such option: the loops share one socket, each through its own descriptor.
    /// Sockets given with [`listen_socket`](Self::listen_socket) are shared the same way.
    pub fn build_workers<S, F>(mut self, n: usize, mut make: F) -> io::Result<Workers<S>>
    where
        S: Service,
        F: FnMut(usize) -> S,
    {
        self.config.validate()?;
        let n = n.max(1);
        if n > 1 {
            self.config.reuse_port = true;
        }
        // The memory ceiling is the process's: each loop gets its share.
        self.config.max_outbuf_total = Some(self.config.max_outbuf_total_per_loop(n));
        // For each listener: bind it again (internet addresses), or share loop 0's socket.
        let plan: Vec<(bool, ListenOptions)> = self
            .listen
            .iter()
            .map(|l| match l {
                Listen::Bind(Endpoint::Unix(_) | Endpoint::UnixDatagram(_), o)
                | Listen::Adopt(_, o) => (false, o.clone()),
                Listen::Bind(_, o) => (true, o.clone()),
            })
            .collect();
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let mut first = self.build(make(0))?;
        if n > 1 {
            first.set_worker(0);
        }
        let addrs = first.local_addrs();
        let mut loops = vec![first];
        for i in 1..n {
            let mut b = Builder {
                listen: Vec::with_capacity(plan.len()),
                config: config.clone(),
                tls: tls.clone(),
            };
            for (j, (rebind, options)) in plan.iter().enumerate() {
                b.listen.push(if *rebind {
                    Listen::Bind(addrs[j].clone(), options.clone())
                } else {
                    Listen::Adopt(loops[0].share_socket(j)?, options.clone())
                });
            }
            let mut lp = b.build(make(i))?;
            lp.set_worker(i);
            loops.push(lp);
        }
        Ok(Workers::new(loops))
    }
}

/// The limits a loop's connection table keeps, with the defaults that depend on the
/// machine filled in.
fn limits(config: &Config) -> io::Result<Limits> {
    let max_conns = match config.max_conns {
        Some(n) => n,
        None => sys::default_max_conns(sys::nofile_limit()?),
    };
    Ok(Limits {
        max_conns: max_conns.min(token::MAX_KEY),
        max_outbuf: config.max_outbuf,
        max_outbuf_total: config.max_outbuf_total_per_loop(1),
        high_water: config.high_water,
        low_water: config.low_water,
        idle_ms: config.idle_timeout.map(|d| d.as_millis() as u64),
        linger_ms: config.linger.as_millis() as u64,
        handshake_ms: config.handshake_timeout.as_millis() as u64,
        spare_output: config.spare_output,
    })
}
