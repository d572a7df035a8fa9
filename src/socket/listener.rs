//! Stream listeners — TCP (plain or TLS) and Unix — and accepting from them.
//!
//! Options are set through `socket2` before `bind`, because some only work there:
//! `SO_REUSEADDR` (a restarted server can bind while old connections sit in TIME_WAIT),
//! `SO_REUSEPORT` (several loops each get their own socket on one port and the kernel
//! spreads the traffic over them), and `IPV6_V6ONLY` (`[::]` means IPv6 only, so
//! `0.0.0.0` and `[::]` can be bound side by side on one port).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use socket2::{Domain, Protocol, Socket, Type};

use super::socket_file::SocketFile;
use super::{BindOptions, StdSocket, bound_path, first_addr};
use crate::endpoint::{Endpoint, HostPort};
use crate::transport::{PeerAddr, Transport};

/// The accept queue length asked of `listen`; the kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux), so this means "as long as allowed".
const BACKLOG: i32 = 65_535;

/// A bound, non-blocking socket that produces connections.
#[derive(Debug)]
pub(crate) enum Listener {
    /// A TCP listener; with a TLS configuration its connections speak TLS.
    Tcp {
        sock: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    },
    /// A Unix stream listener; the socket file goes when it does, if this process made
    /// it (not for a socket handed over already bound).
    Unix {
        sock: UnixListener,
        _file: Option<SocketFile>,
    },
}

impl Listener {
    /// Binds a `tcp://`, `tls://` or `unix:` endpoint and starts listening.
    pub(super) fn bind(endpoint: &Endpoint, opts: &BindOptions) -> io::Result<Listener> {
        match endpoint {
            Endpoint::Tcp(hp) | Endpoint::Tls(hp) => {
                let tls = match endpoint {
                    Endpoint::Tls(_) => Some(opts.tls.clone().ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "no TLS certificate and key given",
                        )
                    })?),
                    _ => None,
                };
                let sock = inet_socket(first_addr(hp)?, Type::STREAM, Protocol::TCP, opts)?;
                sock.listen(BACKLOG)?;
                Ok(Listener::Tcp {
                    sock: TcpListener::from_std(sock.into()),
                    tls,
                })
            }
            Endpoint::Unix(path) => {
                let (sock, file) = SocketFile::bind(path, Type::STREAM, opts.unix_perm)?;
                sock.listen(BACKLOG)?;
                let std = std::os::unix::net::UnixListener::from(OwnedFd::from(sock));
                Ok(Listener::Unix {
                    sock: UnixListener::from_std(std),
                    _file: Some(file),
                })
            }
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} is not a stream address"),
            )),
        }
    }

    /// Serves a TCP listener bound elsewhere; TLS when given a configuration.
    pub(super) fn adopt_tcp(
        l: std::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<(Listener, Endpoint)> {
        l.set_nonblocking(true)?;
        let hp = HostPort::from(l.local_addr()?);
        let ep = if tls.is_some() {
            Endpoint::Tls(hp)
        } else {
            Endpoint::Tcp(hp)
        };
        let sock = TcpListener::from_std(l);
        Ok((Listener::Tcp { sock, tls }, ep))
    }

    /// Serves a Unix listener bound elsewhere (its file is left alone when it closes).
    pub(super) fn adopt_unix(
        l: std::os::unix::net::UnixListener,
    ) -> io::Result<(Listener, Endpoint)> {
        l.set_nonblocking(true)?;
        let ep = Endpoint::Unix(bound_path(l.local_addr()?)?);
        let sock = UnixListener::from_std(l);
        Ok((Listener::Unix { sock, _file: None }, ep))
    }

    /// The bound internet address (port 0 resolved); `None` for a Unix path.
    pub(super) fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        match self {
            Listener::Tcp { sock, .. } => sock.local_addr().map(Some),
            Listener::Unix { .. } => Ok(None),
        }
    }

    /// Another descriptor for the same socket, for another loop to accept from (Unix
    /// sockets have no `SO_REUSEPORT`). The socket file stays with this one.
    pub(crate) fn share(&self) -> io::Result<StdSocket> {
        Ok(match self {
            Listener::Tcp { sock, .. } => StdSocket::Tcp(sock.as_fd().try_clone_to_owned()?.into()),
            Listener::Unix { sock, .. } => {
                StdSocket::Unix(sock.as_fd().try_clone_to_owned()?.into())
            }
        })
    }

    /// The socket as something `poll` can register.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            Listener::Tcp { sock, .. } => sock,
            Listener::Unix { sock, .. } => sock,
        }
    }

    /// Accepts one pending connection (`accept4`, already non-blocking and
    /// close-on-exec), as the transport its listener speaks.
    pub(crate) fn accept(&self) -> io::Result<(Transport, PeerAddr)> {
        match self {
            Listener::Tcp { sock, tls } => {
                let (s, peer) = sock.accept()?;
                // An echo server answers small writes at once; Nagle would hold them back
                // waiting for an ACK. Failure only costs latency, so it is not fatal.
                let _ = s.set_nodelay(true);
                let transport = match tls {
                    Some(config) => Transport::accept_tls(s, config)?,
                    None => Transport::Tcp(s),
                };
                Ok((transport, PeerAddr::Inet(peer)))
            }
            Listener::Unix { sock, .. } => {
                let (s, peer) = sock.accept()?;
                Ok((Transport::Unix(s), PeerAddr::from_unix(&peer)))
            }
        }
    }
}

/// A non-blocking internet socket bound to `addr`, with the options every bound socket
/// here gets.
pub(super) fn inet_socket(
    addr: SocketAddr,
    ty: Type,
    proto: Protocol,
    opts: &BindOptions,
) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    sock.set_reuse_address(true)?;
    if opts.reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}
