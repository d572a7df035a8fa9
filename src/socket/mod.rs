//! The socket layer: binding listeners and datagram sockets, accepting, connecting.
//!
//! Everything the kernel calls a socket is made here, and nothing here reads or writes
//! a byte stream: that is the [transport](crate::transport) layer's job. A `--listen`
//! URL becomes one [`Bound`] socket — a [`Listener`] for streams (TCP, TLS, Unix) or a
//! [`DatagramSocket`] (UDP, Unix datagram) — and the loop numbers them in the order
//! given. Clients get their sockets here too ([`connect`]), so the server and the
//! clients set sockets up one way.

mod batch;
mod connect;
mod datagram_socket;
mod listener;
mod socket_file;

use std::io;
use std::path::Path;
use std::sync::Arc;

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use batch::{BATCH, Batch, peer_of};
pub(crate) use connect::{connect, connect_settled, finish_connect, resolve};
pub(crate) use datagram_socket::{DatagramSocket, Received};
pub(crate) use listener::Listener;

use crate::endpoint::{Endpoint, HostPort};

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

impl StdSocket {
    /// The address the socket is bound to, as the ready line prints it
    /// (`tcp://127.0.0.1:5001`, `unix:/run/s.sock`). A Unix socket without a path
    /// (abstract or unbound) is an error: the loop cannot serve it.
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        Ok(match self {
            StdSocket::Tcp(s) => Endpoint::Tcp(s.local_addr()?.into()),
            StdSocket::Udp(s) => Endpoint::Udp(s.local_addr()?.into()),
            StdSocket::Unix(s) => Endpoint::Unix(bound_path(s.local_addr()?)?),
            StdSocket::UnixDatagram(s) => Endpoint::UnixDatagram(bound_path(s.local_addr()?)?),
        })
    }
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

/// One bound socket: what a `--listen` URL (or a socket given by the caller) becomes.
#[derive(Debug)]
pub(crate) enum Bound {
    /// A stream listener: TCP, TLS or Unix.
    Listener(Listener),
    /// A datagram socket: UDP or Unix datagram.
    Datagram(DatagramSocket),
}

impl Bound {
    /// Binds the endpoint. Errors name the address.
    pub(crate) fn bind(endpoint: &Endpoint, opts: BindOptions) -> io::Result<Bound> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot bind {endpoint}: {e}"));
        match endpoint {
            Endpoint::Tcp(_) | Endpoint::Tls(_) | Endpoint::Unix(_) => {
                Listener::bind(endpoint, &opts).map(Bound::Listener)
            }
            Endpoint::Udp(_) | Endpoint::UnixDatagram(_) => {
                DatagramSocket::bind(endpoint, &opts).map(Bound::Datagram)
            }
        }
        .map_err(context)
    }

    /// Takes over a socket bound elsewhere, and the endpoint it is bound to. A TCP
    /// listener with a TLS configuration becomes a TLS listener.
    pub(crate) fn adopt(
        socket: StdSocket,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<(Bound, Endpoint)> {
        Ok(match socket {
            StdSocket::Tcp(l) => {
                let (listener, ep) = Listener::adopt_tcp(l, tls)?;
                (Bound::Listener(listener), ep)
            }
            StdSocket::Unix(l) => {
                let (listener, ep) = Listener::adopt_unix(l)?;
                (Bound::Listener(listener), ep)
            }
            StdSocket::Udp(u) => {
                let (sock, ep) = DatagramSocket::adopt_udp(u)?;
                (Bound::Datagram(sock), ep)
            }
            StdSocket::UnixDatagram(u) => {
                let (sock, ep) = DatagramSocket::adopt_unix(u)?;
                (Bound::Datagram(sock), ep)
            }
        })
    }

    /// The bound endpoint, with port 0 resolved to the real port.
    pub(crate) fn local_endpoint(&self, asked: &Endpoint) -> io::Result<Endpoint> {
        let addr = match self {
            Bound::Listener(l) => l.local_addr()?,
            Bound::Datagram(d) => d.local_addr()?,
        };
        Ok(match addr {
            Some(a) => asked.with_addr(a),
            None => asked.clone(),
        })
    }
}

/// The first address a host name resolves to, as the internet endpoints use it.
fn first_addr(hp: &HostPort) -> io::Result<std::net::SocketAddr> {
    hp.resolve()?
        .first()
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// The path of an adopted Unix socket; one without a path cannot be served.
fn bound_path(addr: std::os::unix::net::SocketAddr) -> io::Result<std::path::PathBuf> {
    addr.as_pathname().map(Path::to_path_buf).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a Unix socket without a path (unbound or abstract) cannot be served",
        )
    })
}
