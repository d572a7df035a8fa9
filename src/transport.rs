//! The byte streams under every connection: one enum, so the loop and the services
//! never care which kind of socket they hold (the role of Redis's `ConnectionType`).
//!
//! Every variant is non-blocking: `read` and `write` return `WouldBlock` instead of
//! waiting, and the loop learns from `poll` when to try again.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::event::Source;
use mio::net::TcpStream;

/// A connected, non-blocking stream socket.
#[derive(Debug)]
pub(crate) enum Stream {
    /// TCP over IPv4 or IPv6.
    Tcp(TcpStream),
}

/// The address of the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAddr {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Inet(a) => write!(f, "{a}"),
        }
    }
}

impl Stream {
    /// The socket as something `poll` can register.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
        }
    }

    /// Shuts down the sending direction: the peer reads EOF after the bytes already sent.
    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// The pending socket error (`SO_ERROR`), used to name why an error event came.
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
        }
    }

    /// The peer's address (a `getpeername` call).
    pub(crate) fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(PeerAddr::Inet),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
