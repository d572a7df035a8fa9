//! The client side, on the server's own machinery: non-blocking sockets, one `mio::Poll`,
//! and a [`SendBuf`] for what the socket does not take at once.
//!
//! [`send`] is `sockloop send`: write a message, half-close, print the answer. The
//! load generator in [`bench`](crate::bench) connects through the same functions.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::buffer::SendBuf;
use crate::endpoint::Endpoint;
use crate::tls::{self, TlsClient};
use crate::transport::Stream;

/// Options of [`send`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SendOptions {
    /// How long a datagram waits for its reply.
    pub timeout: Duration,
    /// How to speak TLS to a `tls://` endpoint; `None` trusts the system's roots and
    /// expects the URL's host in the server's certificate.
    pub tls: Option<TlsClient>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            timeout: Duration::from_secs(2),
            tls: None,
        }
    }
}

/// The TLS client for `endpoint`: `given`, or one that trusts the system's roots and
/// checks the URL's host name.
pub(crate) fn tls_client_for(
    endpoint: &Endpoint,
    given: Option<&TlsClient>,
) -> io::Result<Option<TlsClient>> {
    let Endpoint::Tls(hp) = endpoint else {
        return Ok(None);
    };
    match given {
        Some(t) => Ok(Some(t.clone())),
        None => TlsClient::new(tls::client_config(None, None)?, hp.host()).map(Some),
    }
}

/// The address a stream or datagram endpoint resolves to (the first, for a name).
pub(crate) fn resolve(endpoint: &Endpoint) -> io::Result<SocketAddr> {
    let hp = endpoint
        .host_port()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an internet address"))?;
    hp.resolve()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", hp.host())))?
        .first()
        .copied()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", hp.host()),
            )
        })
}

/// Starts connecting to a stream endpoint without waiting. The connection is usable
/// once the socket reports writable and [`finish_connect`] says it succeeded.
///
/// `source` binds the local end to an address first (the load generator spreads many
/// connections over several loopback addresses, so the kernel's search for a free
/// ephemeral port stays short). A `tls://` endpoint needs `tls`; its handshake runs
/// as the stream is read (see [`Stream::take_established`]).
pub(crate) fn connect(
    endpoint: &Endpoint,
    addr: Option<SocketAddr>,
    source: Option<IpAddr>,
    tls: Option<&TlsClient>,
) -> io::Result<Stream> {
    match endpoint {
        Endpoint::Tcp(_) | Endpoint::Tls(_) => {
            let addr = match addr {
                Some(a) => a,
                None => resolve(endpoint)?,
            };
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            sock.set_nonblocking(true)?;
            sock.set_tcp_nodelay(true)?;
            if let Some(ip) = source {
                // Choose the port at connect time, by the whole 4-tuple, not at bind
                // time: after many short connections most ports sit in TIME_WAIT, and a
                // bind-time choice can reuse none of them (connect slows to a crawl).
                #[cfg(any(target_os = "linux", target_os = "android"))]
                nix::sys::socket::setsockopt(
                    &sock,
                    nix::sys::socket::sockopt::IpBindAddressNoPort,
                    &true,
                )
                .map_err(io::Error::from)?;
                sock.bind(&SocketAddr::new(ip, 0).into())?;
            }
            match sock.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            let tcp = TcpStream::from_std(sock.into());
            match (endpoint, tls) {
                (Endpoint::Tls(_), Some(t)) => Ok(Stream::Tls(Box::new(t.wrap(tcp)?))),
                (Endpoint::Tls(_), None) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a tls:// address needs a TLS client configuration",
                )),
                _ => Ok(Stream::Tcp(tcp)),
            }
        }
        Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path)?)),
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{other} is not a stream address this client speaks"),
        )),
    }
}

/// After a connecting socket turned writable: `Ok` if the connection is established.
pub(crate) fn finish_connect(stream: &Stream) -> io::Result<()> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    // Writable without an error can still mean "not connected" on some systems.
    stream.peer_addr().map(|_| ())
}

/// Connects, writes `input` completely, shuts down the write side, and copies
/// everything the server sends to `out` until it closes. For a datagram endpoint: sends
/// `input` as one datagram and copies the first reply, or fails after
/// [`SendOptions::timeout`].
///
/// Reading and writing go on together, so an echo of a large input never deadlocks
/// against the server's backpressure.
pub fn send(
    endpoint: &Endpoint,
    input: &[u8],
    out: &mut dyn Write,
    opts: &SendOptions,
) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{endpoint}: {e}"));
    match endpoint {
        Endpoint::Udp(_) | Endpoint::UnixDgram(_) => {
            send_datagram(endpoint, input, out, opts).map_err(context)
        }
        _ => {
            let tls = tls_client_for(endpoint, opts.tls.as_ref()).map_err(context)?;
            send_stream(endpoint, input, out, tls.as_ref()).map_err(context)
        }
    }
}

const CONN: Token = Token(0);

fn send_stream(
    endpoint: &Endpoint,
    input: &[u8],
    out: &mut dyn Write,
    tls: Option<&TlsClient>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    let mut stream = connect(endpoint, None, None, tls)?;
    poll.registry().register(
        stream.source(),
        CONN,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let mut pending = SendBuf::new();
    pending.push(input);
    let mut connected = false;
    let mut write_shut = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if !connected {
                if !(ev.is_writable() || ev.is_error() || ev.is_write_closed()) {
                    continue;
                }
                finish_connect(&stream)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot connect: {e}")))?;
                connected = true;
            }
            // Edge-triggered: read until the kernel has nothing more. Reading first
            // also moves a TLS handshake along, so the writes below can go out in
            // the same turn once it is complete.
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        out.flush()?;
                        return if pending.is_empty() {
                            Ok(())
                        } else {
                            Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("the server closed with {} bytes unsent", pending.len()),
                            ))
                        };
                    }
                    Ok(n) => out.write_all(&buf[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // Write what the socket takes; a writable event brings the rest. TLS
            // records held back from last time go first; while some still wait, the
            // socket is full.
            if !stream.flush_pending()? {
                continue;
            }
            if !pending.is_empty() {
                pending.write_to(&mut stream)?;
            }
            if pending.is_empty() && !write_shut {
                match stream.shutdown_write() {
                    Ok(()) => write_shut = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

fn send_datagram(
    endpoint: &Endpoint,
    input: &[u8],
    out: &mut dyn Write,
    opts: &SendOptions,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4);
    let mut buf = vec![0u8; 64 * 1024];
    let _guard;
    let n = match endpoint {
        Endpoint::Udp(_) => {
            let addr = resolve(endpoint)?;
            let local: SocketAddr = if addr.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            }
            .parse()
            .expect("a literal address");
            let mut sock = UdpSocket::bind(local)?;
            // Connected: only the server's replies are received.
            sock.connect(addr)?;
            poll.registry()
                .register(&mut sock, CONN, Interest::READABLE)?;
            sock.send(input)?;
            wait_readable(&mut poll, &mut events, opts.timeout)?;
            sock.recv(&mut buf)?
        }
        Endpoint::UnixDgram(path) => {
            // A reply needs an address to come back to.
            let me = TempSocketPath::new()?;
            let mut sock = UnixDatagram::bind(&me.0)?;
            _guard = me;
            sock.connect(path)?;
            poll.registry()
                .register(&mut sock, CONN, Interest::READABLE)?;
            sock.send(input)?;
            wait_readable(&mut poll, &mut events, opts.timeout)?;
            sock.recv(&mut buf)?
        }
        _ => unreachable!("send_datagram is only called for datagram endpoints"),
    };
    out.write_all(&buf[..n])?;
    out.flush()
}

fn wait_readable(poll: &mut Poll, events: &mut Events, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply within {:.1} s", timeout.as_secs_f64()),
            ));
        }
        match poll.poll(events, Some(left)) {
            Ok(()) if !events.is_empty() => return Ok(()),
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A path for a client's Unix datagram socket, removed when dropped.
pub(crate) struct TempSocketPath(pub(crate) PathBuf);

impl TempSocketPath {
    pub(crate) fn new() -> io::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("sockloop-client-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Ok(TempSocketPath(p))
    }
}

impl Drop for TempSocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
