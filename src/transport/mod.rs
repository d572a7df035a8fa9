//! The transport layer: a connected byte stream — TCP, Unix or TLS — and the one
//! vocabulary every read and write on it answers in.
//!
//! [`Transport`] plays the role of Redis's `ConnectionType`: the connection above it,
//! the loop and every service treat all three alike. Each call returns an [`Io`] — the
//! bytes it moved, the system calls it made, and a [`Status`] — in the spirit of sozu's
//! `SocketResult`, so no caller has to ask which kind of stream it holds or guess from
//! an `io::ErrorKind` whether TLS failed.
//!
//! Every variant is non-blocking: where a blocking call would wait, the status says
//! [`Status::WouldBlock`], and the loop learns from `poll` when to try again.

mod tls_stream;

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};

use crate::sys::retry;

pub(crate) use tls_stream::TlsStream;

/// A connected, non-blocking stream socket.
#[derive(Debug)]
pub(crate) enum Transport {
    /// TCP over IPv4 or IPv6.
    Tcp(TcpStream),
    /// A Unix-domain stream socket.
    Unix(UnixStream),
    /// TLS over TCP: reads and writes plaintext (boxed: the session is large, and a
    /// plain connection should not pay for it).
    Tls(Box<TlsStream>),
}

/// What one read or write did.
#[derive(Debug)]
#[must_use]
pub(crate) struct Io {
    /// Bytes moved: read into the caller's buffer, or taken from the caller's bytes.
    pub(crate) bytes: usize,
    /// `read`/`recv` system calls made on the socket (TLS reads ciphertext several
    /// times per call, or not at all when it already holds what is asked for).
    pub(crate) reads: u32,
    /// `write`/`send` system calls made on the socket (TLS writes handshake records
    /// while reading, and none while the handshake is under way).
    pub(crate) writes: u32,
    /// How it ended.
    pub(crate) status: Status,
}

/// How a read or write ended.
#[derive(Debug)]
pub(crate) enum Status {
    /// The socket may have more: the read filled the buffer, or the write took
    /// everything it was given.
    Continue,
    /// A short read or write: the kernel's queue was emptied, or its send buffer filled,
    /// at that instant. Another call would only say `WouldBlock`; the next edge says
    /// when to try again.
    Drained,
    /// The last system call returned `EAGAIN`: nothing to read, or no room to write.
    WouldBlock,
    /// Not ready for application bytes: a TLS handshake is under way. No system call
    /// was made for them, and the socket itself may well be writable.
    Handshaking,
    /// Read: the peer ended its output (a FIN, or TLS `close_notify`).
    Closed,
    /// The connection failed.
    Failed(Fault),
}

/// Why a connection failed.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The socket reported an error: a reset, a broken pipe, a timeout.
    Socket(io::Error),
    /// The peer broke the TLS protocol: a failed handshake (no client certificate, an
    /// untrusted one, not TLS at all) or a bad record later.
    Tls(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Socket(e) => write!(f, "{e}"),
            Fault::Tls(what) => f.write_str(what),
        }
    }
}

impl From<Fault> for io::Error {
    fn from(f: Fault) -> io::Error {
        match f {
            Fault::Socket(e) => e,
            Fault::Tls(what) => io::Error::new(io::ErrorKind::InvalidData, what),
        }
    }
}

impl Io {
    /// The outcome of one `read` (`write` false) or `write` of `len` bytes.
    #[inline]
    fn of_call(r: io::Result<usize>, len: usize, write: bool) -> Io {
        let bytes = *r.as_ref().unwrap_or(&0);
        let status = match r {
            Ok(0) if write => Status::Failed(Fault::Socket(io::Error::new(
                io::ErrorKind::WriteZero,
                "the socket accepted no bytes",
            ))),
            Ok(0) => Status::Closed,
            Ok(n) if n < len => Status::Drained,
            Ok(_) => Status::Continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Status::WouldBlock,
            Err(e) => Status::Failed(Fault::Socket(e)),
        };
        Io {
            bytes,
            reads: u32::from(!write),
            writes: u32::from(write),
            status,
        }
    }

    /// Nothing done, nothing to do.
    #[inline]
    pub(crate) const fn idle() -> Io {
        Io {
            bytes: 0,
            reads: 0,
            writes: 0,
            status: Status::Continue,
        }
    }
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

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Inet(a) => write!(f, "{a}"),
            PeerAddr::Unix(Some(p)) => write!(f, "unix:{}", p.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

impl Transport {
    /// The server side of a TLS handshake over an accepted socket.
    pub(crate) fn accept_tls(
        tcp: TcpStream,
        config: &Arc<rustls::ServerConfig>,
    ) -> io::Result<Transport> {
        Ok(Transport::Tls(Box::new(TlsStream::accept(tcp, config)?)))
    }

    /// The socket as something `poll` can register.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            Transport::Tcp(s) => s,
            Transport::Unix(s) => s,
            Transport::Tls(s) => &mut s.tcp,
        }
    }

    /// Reads what is there, up to `buf.len()` bytes, with one `read` (TLS: as many as
    /// it takes to fill `buf` or drain the socket).
    #[inline]
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Io {
        match self {
            Transport::Tcp(s) => Io::of_call(retry(|| s.read(buf)), buf.len(), false),
            Transport::Unix(s) => Io::of_call(retry(|| s.read(buf)), buf.len(), false),
            Transport::Tls(s) => s.read(buf),
        }
    }

    /// Reads the socket itself, beneath any TLS session: for what comes before the
    /// session, a PROXY protocol header.
    pub(crate) fn read_raw(&mut self, buf: &mut [u8]) -> Io {
        let r = match self {
            Transport::Tcp(s) => retry(|| s.read(buf)),
            Transport::Unix(s) => retry(|| s.read(buf)),
            Transport::Tls(s) => retry(|| s.tcp.read(buf)),
        };
        Io::of_call(r, buf.len(), false)
    }

    /// Writes to the socket itself, beneath any TLS session: for what a client sends
    /// before the session, a PROXY protocol header (a balancer sends it in the clear,
    /// ahead of the TLS handshake).
    pub(crate) fn write_raw(&mut self, buf: &[u8]) -> Io {
        let r = match self {
            Transport::Tcp(s) => retry(|| s.write(buf)),
            Transport::Unix(s) => retry(|| s.write(buf)),
            Transport::Tls(s) => retry(|| s.tcp.write(buf)),
        };
        Io::of_call(r, buf.len(), true)
    }

    /// Bytes read with [`read_raw`](Self::read_raw) that belong to the session: TLS
    /// keeps them as ciphertext for its next read. Plain streams have no session;
    /// their caller hands such bytes on itself.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        if let Transport::Tls(s) = self {
            s.unread(bytes);
        }
    }

    /// Writes `parts`, `len` bytes in all, as if concatenated: one `write` for one
    /// part, one `writev` for several.
    #[inline]
    pub(crate) fn write(&mut self, parts: &[&[u8]], len: usize) -> Io {
        match self {
            Transport::Tcp(s) => Io::of_call(write_parts(s, parts), len, true),
            Transport::Unix(s) => Io::of_call(write_parts(s, parts), len, true),
            Transport::Tls(s) => s.write(parts),
        }
    }

    /// Writes output the transport holds below its caller's queue — TLS records that
    /// did not fit the socket — which is older than anything queued above it. Plain
    /// sockets hold none.
    pub(crate) fn flush_held(&mut self) -> Io {
        match self {
            Transport::Tls(s) => s.flush_records(),
            _ => Io::idle(),
        }
    }

    /// True while the transport holds output of its own (see [`flush_held`](Self::flush_held)).
    #[inline]
    pub(crate) fn holds_output(&self) -> bool {
        match self {
            Transport::Tls(s) => s.holds_output(),
            _ => false,
        }
    }

    /// Shuts down the sending direction: the peer reads EOF after the bytes already
    /// sent. Over TLS a `close_notify` goes first, and this is `WouldBlock` until it
    /// (and every record before it) has left: call again when the socket is writable.
    pub(crate) fn shutdown_write(&mut self) -> Io {
        let r = match self {
            Transport::Tcp(s) => s.shutdown(Shutdown::Write),
            Transport::Unix(s) => s.shutdown(Shutdown::Write),
            Transport::Tls(s) => return s.shutdown_write(),
        };
        Io {
            bytes: 0,
            reads: 0,
            writes: 0,
            status: match r {
                Ok(()) => Status::Continue,
                Err(e) => Status::Failed(Fault::Socket(e)),
            },
        }
    }

    /// Ends a session politely before the socket is closed: TLS queues and sends
    /// `close_notify`, best effort; a plain stream has nothing to say.
    pub(crate) fn say_goodbye(&mut self) {
        if let Transport::Tls(s) = self {
            let _ = s.shutdown_write();
        }
    }

    /// Once, right after the read that completed a TLS handshake: the negotiated
    /// protocol and cipher suite, for the log. Plain streams have no handshake.
    #[inline]
    pub(crate) fn take_established(&mut self) -> Option<String> {
        match self {
            Transport::Tls(s) => s.take_established().then(|| s.describe()),
            _ => None,
        }
    }

    /// True for a TLS stream: bytes meant for the socket itself (a PROXY header) cannot
    /// simply go first in its output, which the session encrypts.
    #[inline]
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// True while a handshake is under way: the connection is on the handshake
    /// deadline, not the idle timer.
    #[inline]
    pub(crate) fn is_handshaking(&self) -> bool {
        matches!(self, Transport::Tls(s) if s.is_handshaking())
    }

    /// The pending socket error (`SO_ERROR`): why an error event came, or whether a
    /// connect failed.
    pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Transport::Tcp(s) => s.take_error(),
            Transport::Unix(s) => s.take_error(),
            Transport::Tls(s) => s.tcp.take_error(),
        }
    }

    /// What a TLS session negotiated, once its handshake is over; `None` for a plain
    /// stream.
    pub(crate) fn tls_info(&self) -> Option<crate::tls::TlsInfo> {
        match self {
            Transport::Tls(s) => s.info(),
            _ => None,
        }
    }

    /// This end's address (a `getsockname` call).
    pub(crate) fn local_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Transport::Tcp(s) => s.local_addr().map(PeerAddr::Inet),
            Transport::Unix(s) => s.local_addr().map(|a| PeerAddr::from_unix(&a)),
            Transport::Tls(s) => s.tcp.local_addr().map(PeerAddr::Inet),
        }
    }

    /// The peer's address (a `getpeername` call).
    pub(crate) fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Transport::Tcp(s) => s.peer_addr().map(PeerAddr::Inet),
            Transport::Unix(s) => s.peer_addr().map(|a| PeerAddr::from_unix(&a)),
            Transport::Tls(s) => s.tcp.peer_addr().map(PeerAddr::Inet),
        }
    }
}

/// One `write` for one slice, one `writev` for several, without allocating for the
/// common small case.
#[inline]
fn write_parts<W: Write>(w: &mut W, parts: &[&[u8]]) -> io::Result<usize> {
    const INLINE: usize = 16;
    if let [one] = parts {
        return retry(|| w.write(one));
    }
    if parts.len() <= INLINE {
        let mut slices = [IoSlice::new(&[]); INLINE];
        for (s, p) in slices.iter_mut().zip(parts) {
            *s = IoSlice::new(p);
        }
        retry(|| w.write_vectored(&slices[..parts.len()]))
    } else {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        retry(|| w.write_vectored(&slices))
    }
}
