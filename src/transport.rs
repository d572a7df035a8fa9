//! The byte streams under every connection: one enum, so the loop and the services
//! never care which kind of socket they hold (the role of Redis's `ConnectionType`).
//!
//! Every variant is non-blocking: `read` and `write` return `WouldBlock` instead of
//! waiting, and the loop learns from `poll` when to try again.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};

use crate::tls::TlsStream;

/// A connected, non-blocking stream socket.
#[derive(Debug)]
pub(crate) enum Stream {
    /// TCP over IPv4 or IPv6.
    Tcp(TcpStream),
    /// A Unix-domain stream socket.
    Unix(UnixStream),
    /// TLS over TCP: reads and writes plaintext (boxed: the session is large, and a
    /// plain connection should not pay for it).
    Tls(Box<TlsStream>),
}

/// The address of the other end of a connection, or of a datagram's sender.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerAddr {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix-domain socket: its path, or `None` when the peer never bound one (the
    /// usual case for a connecting client; a datagram from such a peer cannot be
    /// answered).
    Unix(Option<PathBuf>),
}

impl PeerAddr {
    /// From the address std reports for a Unix socket.
    pub(crate) fn from_unix(a: &std::os::unix::net::SocketAddr) -> Self {
        PeerAddr::Unix(a.as_pathname().map(PathBuf::from))
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerAddr::Inet(a) => write!(f, "{a}"),
            PeerAddr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

impl Stream {
    /// The socket as something `poll` can register.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
            Stream::Tls(s) => &mut s.tcp,
        }
    }

    /// Shuts down the sending direction: the peer reads EOF after the bytes already
    /// sent. Over TLS a `close_notify` goes first, and this is `WouldBlock` until it
    /// (and every record before it) has left: call again when the socket is writable.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Tls(s) => s.shutdown_write(),
        }
    }

    /// Writes output held below the caller's queue (TLS records that did not fit the
    /// socket). `Ok(false)` while some still wait. Plain sockets hold none.
    pub(crate) fn flush_pending(&mut self) -> io::Result<bool> {
        match self {
            Stream::Tls(s) => s.flush_records(),
            _ => Ok(true),
        }
    }

    /// True when a read would return at once without new input from the socket, so a
    /// short read must not be taken to mean the socket is drained.
    pub(crate) fn has_buffered_input(&self) -> bool {
        match self {
            Stream::Tls(s) => s.has_buffered_input(),
            _ => false,
        }
    }

    /// After a read: `Some(description)` once, when that read completed a TLS
    /// handshake.
    pub(crate) fn take_established(&mut self) -> Option<String> {
        match self {
            Stream::Tls(s) => s.take_established().then(|| s.describe()),
            _ => None,
        }
    }

    /// True for a TLS stream.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// True for a TLS stream whose handshake has not completed.
    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(self, Stream::Tls(s) if s.is_handshaking())
    }

    /// The pending socket error (`SO_ERROR`), used to name why an error event came.
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
            Stream::Tls(s) => s.tcp.take_error(),
        }
    }

    /// The peer's address (a `getpeername` call).
    pub(crate) fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(PeerAddr::Inet),
            Stream::Unix(s) => s.peer_addr().map(|a| PeerAddr::from_unix(&a)),
            Stream::Tls(s) => s.tcp.peer_addr().map(PeerAddr::Inet),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
