//! Building an [`EventLoop`]: which addresses to listen on and the limits to keep.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::Limits;
use crate::endpoint::Endpoint;
use crate::event_loop::EventLoop;
use crate::service::Service;
use crate::socket::{BindOptions, Bound, StdSocket};
use crate::sys;
use crate::token;
use crate::workers::Workers;

/// The loop's limits and tunables. [`Config::default`] holds the binary's defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Most stream connections open at once; past it a new connection is accepted and
    /// closed at once (after the service's [`reject_message`](Service::reject_message)).
    /// `None`: the descriptor limit less some headroom, read when the loop is built.
    pub max_conns: Option<usize>,
    /// Close a stream connection with no traffic either way for this long. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A connection whose unsent output passes this many bytes is a slow consumer and
    /// is closed.
    pub max_outbuf: usize,
    /// When the unsent output of all connections together passes this many bytes, the
    /// connections that owe the most are closed as slow consumers until it is a tenth
    /// below. `None`: a quarter of the memory available to the process (the cgroup
    /// limit in a container, else the machine's memory), read when the loop is built;
    /// [`Builder::build_workers`] divides it between the loops.
    pub max_outbuf_total: Option<usize>,
    /// Most bytes of spare output buffer kept for the next burst once output has been
    /// written; beyond this, memory goes back to the system.
    pub spare_output: usize,
    /// Stop reading a connection while its unsent output is at least this many bytes.
    pub high_water: usize,
    /// Resume reading once its unsent output has drained to at most this many bytes.
    pub low_water: usize,
    /// Reads per connection per turn before it yields to the others.
    pub read_budget: u32,
    /// Accepts per listener per turn.
    pub accept_budget: u32,
    /// How long a closing connection discards input waiting for the peer to close.
    pub linger: Duration,
    /// How long a TLS connection may take to complete its handshake, counted from
    /// accept; a client that connects and never sends a ClientHello is closed then.
    pub handshake_timeout: Duration,
    /// How long a graceful shutdown waits for connections to drain.
    pub shutdown_timeout: Duration,
    /// Handle SIGINT/SIGTERM (graceful shutdown; a second one stops at once) and
    /// SIGUSR1 (log the counters) inside the loop. Off by default: signals belong to
    /// the program, which may want them for itself.
    pub handle_signals: bool,
    /// Bind with `SO_REUSEPORT`, so other loops can bind the same addresses.
    pub reuse_port: bool,
    /// Answer datagrams from source port 0 and the classic service ports (7, 13, 19,
    /// 37). Off by default: see the datagram safety rules.
    pub allow_service_ports: bool,
    /// Receive and answer UDP datagrams in batches (`recvmmsg`/`sendmmsg`, Linux).
    /// Off, every datagram costs a `recv_from` and a `send_to`.
    pub datagram_batch: bool,
    /// Datagrams received per datagram socket per turn before it yields to the others.
    pub datagram_budget: u32,
    /// Most replies waiting for a full datagram socket; past it replies are dropped.
    pub reply_queue_max: usize,
    /// Most bytes of replies waiting for a full datagram socket.
    pub reply_queue_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns: None,
            idle_timeout: None,
            max_outbuf: 4 * 1024 * 1024,
            max_outbuf_total: None,
            spare_output: 4 * 1024 * 1024,
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            read_budget: 16,
            accept_budget: 256,
            linger: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            handle_signals: false,
            reuse_port: false,
            allow_service_ports: false,
            datagram_batch: cfg!(any(target_os = "linux", target_os = "android")),
            datagram_budget: 128,
            reply_queue_max: 1024,
            reply_queue_bytes: 1024 * 1024,
        }
    }
}

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
    /// already in use`); listeners bound before the failure are closed again.
    pub fn build<S: Service>(self, service: S) -> io::Result<EventLoop<S>> {
        if self.listen.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listener given",
            ));
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
                    listeners.push((bound, local));
                }
                Listen::Adopt(socket, options) => {
                    let tls = options.tls;
                    let adopted = Bound::adopt(socket, tls).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot serve a given socket: {e}"))
                    })?;
                    listeners.push(adopted);
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
        let n = n.max(1);
        if n > 1 {
            self.config.reuse_port = true;
        }
        // The memory ceiling is the process's: each loop gets its share.
        if self.config.max_outbuf_total.is_none() {
            self.config.max_outbuf_total = Some(sys::default_max_outbuf_total() / n);
        }
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
        max_outbuf_total: config
            .max_outbuf_total
            .unwrap_or_else(sys::default_max_outbuf_total),
        high_water: config.high_water,
        low_water: config.low_water,
        idle_ms: config.idle_timeout.map(|d| d.as_millis() as u64),
        linger_ms: config.linger.as_millis() as u64,
        handshake_ms: config.handshake_timeout.as_millis() as u64,
        spare_output: config.spare_output,
    })
}
