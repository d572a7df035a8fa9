//! Binding sockets, and accepting from stream listeners.
//!
//! Options are set through `socket2` before `bind`, because some only work there:
//! `SO_REUSEADDR` (a restarted server can bind while old connections sit in TIME_WAIT),
//! `SO_REUSEPORT` (several loops each get their own socket on one port and the kernel
//! spreads the traffic over them), and `IPV6_V6ONLY` (`[::]` means IPv6 only, so
//! `0.0.0.0` and `[::]` can be bound side by side on one port).
//!
//! A Unix socket lives at a path, as a file. Binding creates that file and closing the
//! socket does not remove it, so a server that died leaves a stale one behind. Before
//! binding, a socket file nobody answers on is removed; a live one is "address in
//! use"; anything that is not a socket is refused and left untouched. The file is
//! removed again when the listener closes — if it is still the one this process made.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::endpoint::Endpoint;
use crate::tls::TlsStream;
use crate::transport::{PeerAddr, Stream};

/// A socket bound by the caller, for [`Builder::listen_socket`](crate::Builder::listen_socket):
/// the loop serves it as it would one it bound from a URL (but leaves a Unix socket's
/// file alone when it closes, since it did not make it).
#[derive(Debug)]
pub enum StdSocket {
    /// A TCP listener (TLS when the listener options carry a TLS configuration).
    Tcp(std::net::TcpListener),
    /// A UDP socket.
    Udp(std::net::UdpSocket),
    /// A Unix stream listener bound to a path.
    Unix(std::os::unix::net::UnixListener),
    /// A Unix datagram socket bound to a path.
    UnixDatagram(std::os::unix::net::UnixDatagram),
}

impl From<std::net::TcpListener> for StdSocket {
    fn from(s: std::net::TcpListener) -> Self {
        StdSocket::Tcp(s)
    }
}

impl From<std::net::UdpSocket> for StdSocket {
    fn from(s: std::net::UdpSocket) -> Self {
        StdSocket::Udp(s)
    }
}

impl From<std::os::unix::net::UnixListener> for StdSocket {
    fn from(s: std::os::unix::net::UnixListener) -> Self {
        StdSocket::Unix(s)
    }
}

impl From<std::os::unix::net::UnixDatagram> for StdSocket {
    fn from(s: std::os::unix::net::UnixDatagram) -> Self {
        StdSocket::UnixDatagram(s)
    }
}

/// The accept queue length asked of `listen`; the kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux), so this means "as long as allowed".
const BACKLOG: i32 = 65_535;

/// How to bind.
#[derive(Clone, Debug, Default)]
pub(crate) struct BindOptions {
    /// Set `SO_REUSEPORT`, so that several loops can each bind the same port.
    pub(crate) reuse_port: bool,
    /// Permission bits for a Unix socket file (`?perm=0660`); `None` leaves the umask's.
    pub(crate) unix_perm: Option<u32>,
    /// The server side of TLS, for a `tls://` endpoint.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

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

/// A bound datagram socket.
#[derive(Debug)]
pub(crate) enum DgramSocket {
    /// UDP.
    Udp(UdpSocket),
    /// A Unix datagram socket; the socket file goes when it does (as for a listener).
    Unix {
        sock: UnixDatagram,
        _file: Option<SocketFile>,
    },
}

/// What binding an endpoint produced.
pub(crate) enum Bound {
    Stream(Listener),
    Datagram(DgramSocket),
}

impl Bound {
    /// Binds the endpoint. Errors name the address.
    pub(crate) fn bind(endpoint: &Endpoint, opts: BindOptions) -> io::Result<Bound> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot bind {endpoint}: {e}"));
        let inet = |hp: &crate::endpoint::HostPort| -> io::Result<SocketAddr> {
            hp.resolve()?
                .first()
                .copied()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
        };
        match endpoint {
            Endpoint::Tcp(hp) | Endpoint::Tls(hp) => {
                let tls = match endpoint {
                    Endpoint::Tls(_) => Some(opts.tls.clone().ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("cannot bind {endpoint}: no TLS certificate and key given"),
                        )
                    })?),
                    _ => None,
                };
                let addr = inet(hp).map_err(context)?;
                let sock =
                    inet_socket(addr, Type::STREAM, Protocol::TCP, &opts).map_err(context)?;
                sock.listen(BACKLOG).map_err(context)?;
                Ok(Bound::Stream(Listener::Tcp {
                    sock: TcpListener::from_std(sock.into()),
                    tls,
                }))
            }
            Endpoint::Udp(hp) => {
                let addr = inet(hp).map_err(context)?;
                let sock = inet_socket(addr, Type::DGRAM, Protocol::UDP, &opts).map_err(context)?;
                Ok(Bound::Datagram(DgramSocket::Udp(UdpSocket::from_std(
                    sock.into(),
                ))))
            }
            Endpoint::Unix(path) => {
                let (sock, file) = unix_socket(path, Type::STREAM, &opts).map_err(context)?;
                sock.listen(BACKLOG).map_err(context)?;
                let std = std::os::unix::net::UnixListener::from(OwnedFd::from(sock));
                Ok(Bound::Stream(Listener::Unix {
                    sock: UnixListener::from_std(std),
                    _file: Some(file),
                }))
            }
            Endpoint::UnixDgram(path) => {
                let (sock, file) = unix_socket(path, Type::DGRAM, &opts).map_err(context)?;
                let std = std::os::unix::net::UnixDatagram::from(OwnedFd::from(sock));
                Ok(Bound::Datagram(DgramSocket::Unix {
                    sock: UnixDatagram::from_std(std),
                    _file: Some(file),
                }))
            }
        }
    }

    /// Takes over a socket bound elsewhere, and the endpoint it is bound to. A TCP
    /// listener with a TLS configuration becomes a TLS listener.
    pub(crate) fn adopt(
        socket: StdSocket,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<(Bound, Endpoint)> {
        let path = |addr: std::os::unix::net::SocketAddr| {
            addr.as_pathname().map(Path::to_path_buf).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a Unix socket without a path (unbound or abstract) cannot be served",
                )
            })
        };
        Ok(match socket {
            StdSocket::Tcp(l) => {
                l.set_nonblocking(true)?;
                let hp = crate::endpoint::HostPort::from(l.local_addr()?);
                let ep = if tls.is_some() {
                    Endpoint::Tls(hp)
                } else {
                    Endpoint::Tcp(hp)
                };
                let sock = TcpListener::from_std(l);
                (Bound::Stream(Listener::Tcp { sock, tls }), ep)
            }
            StdSocket::Udp(u) => {
                u.set_nonblocking(true)?;
                let ep = Endpoint::Udp(u.local_addr()?.into());
                (
                    Bound::Datagram(DgramSocket::Udp(UdpSocket::from_std(u))),
                    ep,
                )
            }
            StdSocket::Unix(l) => {
                l.set_nonblocking(true)?;
                let ep = Endpoint::Unix(path(l.local_addr()?)?);
                let sock = UnixListener::from_std(l);
                (Bound::Stream(Listener::Unix { sock, _file: None }), ep)
            }
            StdSocket::UnixDatagram(u) => {
                u.set_nonblocking(true)?;
                let ep = Endpoint::UnixDgram(path(u.local_addr()?)?);
                let sock = UnixDatagram::from_std(u);
                (Bound::Datagram(DgramSocket::Unix { sock, _file: None }), ep)
            }
        })
    }

    /// The bound endpoint, with port 0 resolved to the real port.
    pub(crate) fn local_endpoint(&self, asked: &Endpoint) -> io::Result<Endpoint> {
        Ok(match self {
            Bound::Stream(Listener::Tcp { sock, .. }) => asked.with_addr(sock.local_addr()?),
            Bound::Datagram(DgramSocket::Udp(s)) => asked.with_addr(s.local_addr()?),
            Bound::Stream(Listener::Unix { .. }) | Bound::Datagram(DgramSocket::Unix { .. }) => {
                asked.clone()
            }
        })
    }
}

impl Listener {
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

    /// Accepts one pending connection (`accept4`, already non-blocking and close-on-exec).
    pub(crate) fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp { sock, tls } => {
                let (s, peer) = sock.accept()?;
                // An echo server answers small writes at once; Nagle would hold them back
                // waiting for an ACK. Failure only costs latency, so it is not fatal.
                let _ = s.set_nodelay(true);
                let stream = match tls {
                    Some(config) => Stream::Tls(Box::new(TlsStream::accept(s, config)?)),
                    None => Stream::Tcp(s),
                };
                Ok((stream, PeerAddr::Inet(peer)))
            }
            Listener::Unix { sock, .. } => {
                let (s, peer) = sock.accept()?;
                Ok((Stream::Unix(s), PeerAddr::from_unix(&peer)))
            }
        }
    }
}

impl DgramSocket {
    /// Another descriptor for the same socket (see [`Listener::share`]).
    pub(crate) fn share(&self) -> io::Result<StdSocket> {
        Ok(match self {
            DgramSocket::Udp(s) => StdSocket::Udp(s.as_fd().try_clone_to_owned()?.into()),
            DgramSocket::Unix { sock, .. } => {
                StdSocket::UnixDatagram(sock.as_fd().try_clone_to_owned()?.into())
            }
        })
    }

    /// The socket as something `poll` can register.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            DgramSocket::Udp(s) => s,
            DgramSocket::Unix { sock, .. } => sock,
        }
    }
}

fn inet_socket(
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

fn unix_socket(path: &Path, ty: Type, opts: &BindOptions) -> io::Result<(Socket, SocketFile)> {
    clear_stale_socket(path, ty)?;
    let sock = Socket::new(Domain::UNIX, ty, None)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::unix(path)?)?;
    let file = SocketFile::claim(path)?;
    if let Some(mode) = opts.unix_perm {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok((sock, file))
}

/// Makes way for a new socket at `path`: nothing there is fine; a socket file nobody
/// answers on is removed; a live socket or anything else is an error.
fn clear_stale_socket(path: &Path, ty: Type) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; left untouched",
                path.display()
            ),
        ));
    }
    // A socket file: ask whether anyone is behind it.
    let probe = Socket::new(Domain::UNIX, ty, None)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is serving on this socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// A Unix socket file this process created. Dropping it removes the file, unless the
/// path now holds something else (another server took it over).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn claim(path: &Path) -> io::Result<SocketFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}
