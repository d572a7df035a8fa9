//! Datagram sockets — UDP and Unix datagram — for the server and the clients.
//!
//! A datagram socket has no connections: one socket receives from every peer, and each
//! datagram is a whole message. The server receives with [`recv_from`](DatagramSocket::recv_from)
//! (or, on Linux, in batches: [`Batch`](super::Batch)) and answers with
//! [`send_to`](DatagramSocket::send_to); a client [`connect`](DatagramSocket::connect)s
//! its socket to the server, so it receives only the server's replies.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use socket2::{Protocol, Type};

use super::listener::inet_socket;
use super::socket_file::SocketFile;
use super::{BindOptions, StdSocket, bound_path, first_addr};
use crate::endpoint::Endpoint;
use crate::transport::PeerAddr;

/// A bound, non-blocking datagram socket.
#[derive(Debug)]
pub(crate) enum DatagramSocket {
    /// UDP.
    Udp(UdpSocket),
    /// A Unix datagram socket; the socket file goes when it does, if this process made
    /// it.
    Unix {
        sock: UnixDatagram,
        _file: Option<SocketFile>,
    },
}

/// One receive's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A datagram of this many bytes from this peer (the bytes are in the buffer).
    Datagram(usize, PeerAddr),
    /// Longer than the buffer (possible on Unix datagram sockets): dropped.
    Truncated(PeerAddr),
}

impl DatagramSocket {
    /// Binds a `udp://` or `unixgram:` endpoint.
    pub(super) fn bind(endpoint: &Endpoint, opts: &BindOptions) -> io::Result<DatagramSocket> {
        match endpoint {
            Endpoint::Udp(hp) => {
                let sock = inet_socket(first_addr(hp)?, Type::DGRAM, Protocol::UDP, opts)?;
                Ok(DatagramSocket::Udp(UdpSocket::from_std(sock.into())))
            }
            Endpoint::UnixDatagram(path) => Self::bind_unix(path, opts.unix_perm, None),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{other} is not a datagram address"),
            )),
        }
    }

    /// A client's socket for `endpoint` (already resolved to `addr` for UDP), bound to
    /// an address of its own and connected to the server: the kernel then delivers only
    /// the server's datagrams to it, and a Unix datagram server has an address to
    /// answer (a temporary socket file, removed when the socket is dropped). A UDP
    /// client of a loopback server binds the server's own loopback address, so its
    /// replies never leave loopback.
    pub(crate) fn connect(
        endpoint: &Endpoint,
        addr: Option<SocketAddr>,
    ) -> io::Result<DatagramSocket> {
        match (endpoint, addr) {
            (Endpoint::Udp(_), Some(addr)) => {
                let local = match addr.ip() {
                    IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(ip),
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
                sock.connect(addr)?;
                Ok(DatagramSocket::Udp(sock))
            }
            (Endpoint::UnixDatagram(path), _) => {
                Self::bind_unix(&SocketFile::temp_path(), None, Some(path))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{endpoint} is not a datagram address"),
            )),
        }
    }

    /// A Unix datagram socket bound at `path` (its file removed with it), connected to
    /// `peer` if given.
    fn bind_unix(path: &Path, perm: Option<u32>, peer: Option<&Path>) -> io::Result<Self> {
        let (sock, file) = SocketFile::bind(path, Type::DGRAM, perm)?;
        let std = std::os::unix::net::UnixDatagram::from(OwnedFd::from(sock));
        if let Some(peer) = peer {
            std.connect(peer)?;
        }
        Ok(DatagramSocket::Unix {
            sock: UnixDatagram::from_std(std),
            _file: Some(file),
        })
    }

    /// Serves a UDP socket bound elsewhere.
    pub(super) fn adopt_udp(u: std::net::UdpSocket) -> io::Result<(DatagramSocket, Endpoint)> {
        u.set_nonblocking(true)?;
        let ep = Endpoint::Udp(u.local_addr()?.into());
        Ok((DatagramSocket::Udp(UdpSocket::from_std(u)), ep))
    }

    /// Serves a Unix datagram socket bound elsewhere (its file is left alone).
    pub(super) fn adopt_unix(
        u: std::os::unix::net::UnixDatagram,
    ) -> io::Result<(DatagramSocket, Endpoint)> {
        u.set_nonblocking(true)?;
        let ep = Endpoint::UnixDatagram(bound_path(u.local_addr()?)?);
        let sock = UnixDatagram::from_std(u);
        Ok((DatagramSocket::Unix { sock, _file: None }, ep))
    }

    /// The bound internet address (port 0 resolved); `None` for a Unix path.
    pub(super) fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        match self {
            DatagramSocket::Udp(s) => s.local_addr().map(Some),
            DatagramSocket::Unix { .. } => Ok(None),
        }
    }

    /// Another descriptor for the same socket, for another loop to serve.
    pub(crate) fn share(&self) -> io::Result<StdSocket> {
        Ok(match self {
            DatagramSocket::Udp(s) => StdSocket::Udp(s.as_fd().try_clone_to_owned()?.into()),
            DatagramSocket::Unix { sock, .. } => {
                StdSocket::UnixDatagram(sock.as_fd().try_clone_to_owned()?.into())
            }
        })
    }

    /// The socket as something `poll` can register.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            DatagramSocket::Udp(s) => s,
            DatagramSocket::Unix { sock, .. } => sock,
        }
    }

    /// The descriptor, for the batch calls.
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            DatagramSocket::Udp(s) => s.as_raw_fd(),
            DatagramSocket::Unix { sock, .. } => sock.as_raw_fd(),
        }
    }

    /// True for UDP, which the batch path serves on Linux.
    pub(crate) fn is_udp(&self) -> bool {
        matches!(self, DatagramSocket::Udp(_))
    }

    /// Receives one datagram into `buf`.
    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<Received> {
        match self {
            DatagramSocket::Udp(s) => {
                let (n, peer) = s.recv_from(buf)?;
                Ok(Received::Datagram(n, PeerAddr::Inet(peer)))
            }
            DatagramSocket::Unix { sock, .. } => {
                // std's recv_from cannot tell a cut datagram from a whole one. With
                // MSG_TRUNC, Linux returns a Unix datagram's real length even when it
                // did not fit — and a Unix datagram can be longer than any UDP one.
                let flags = nix::sys::socket::MsgFlags::MSG_TRUNC.bits();
                let uninit: &mut [MaybeUninit<u8>] =
                    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and socket2
                    // documents that `recv_from*` never writes uninitialised bytes into
                    // the buffer (it hands it straight to the system call), so the
                    // initialised bytes stay initialised.
                    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
                let (n, addr) = socket2::SockRef::from(sock).recv_from_with_flags(uninit, flags)?;
                let peer = PeerAddr::Unix(addr.as_pathname().map(Into::into));
                if n > buf.len() {
                    return Ok(Received::Truncated(peer));
                }
                Ok(Received::Datagram(n, peer))
            }
        }
    }

    /// Sends one datagram to `to`.
    pub(crate) fn send_to(&self, data: &[u8], to: &PeerAddr) -> io::Result<usize> {
        match (self, to) {
            (DatagramSocket::Udp(s), PeerAddr::Inet(a)) => s.send_to(data, *a),
            (DatagramSocket::Unix { sock, .. }, PeerAddr::Unix(Some(p))) => sock.send_to(data, p),
            (_, to) => Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("cannot send to {to}"),
            )),
        }
    }

    /// Sends one datagram on a [`connect`](Self::connect)ed socket.
    pub(crate) fn send(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.send(data),
            DatagramSocket::Unix { sock, .. } => sock.send(data),
        }
    }

    /// Receives one datagram on a [`connect`](Self::connect)ed socket.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.recv(buf),
            DatagramSocket::Unix { sock, .. } => sock.recv(buf),
        }
    }
}
