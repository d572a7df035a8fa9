//! `sockloop send`: connect, write a message (or all of stdin) completely, half-close,
//! and copy everything the server sends until it closes — or, for a datagram address,
//! send one datagram and copy the first reply.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::proxy::{self, Preamble, ProxyVersion};
use crate::conn::{Connection, Input, Outboxes};
use crate::endpoint::Endpoint;
use crate::readiness::Readiness;
use crate::socket::{self, DatagramSocket};
use crate::stats::Stats;
use crate::tls::TlsClient;
use crate::transport::{PeerAddr, Transport};

/// Options of [`send`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SendOptions {
    /// How long a datagram waits for its reply.
    pub timeout: Duration,
    /// How to speak TLS to a `tls://` endpoint; `None` trusts the system's roots and
    /// expects the URL's host in the server's certificate.
    pub tls: Option<TlsClient>,
    /// Start the connection with a PROXY protocol header of this version, as a load
    /// balancer would, so that a server expecting one can be tried without a balancer
    /// (stream endpoints only: a datagram endpoint is an `InvalidInput` error).
    pub proxy: Option<ProxyVersion>,
    /// The client the PROXY header names. `None`: the connection's own local address,
    /// or, on a Unix socket, which has none, 198.18.0.1:1024 (the addresses a header
    /// carries are described at [`ProxyVersion`]).
    pub proxy_source: Option<SocketAddr>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            timeout: Duration::from_secs(2),
            tls: None,
            proxy: None,
            proxy_source: None,
        }
    }
}

/// Connects, writes `input` completely, shuts down the write side, and copies
/// everything the server sends to `out` until it closes. For a datagram endpoint: sends
/// `input` as one datagram and copies the first reply, or fails after
/// [`SendOptions::timeout`].
///
/// Reading and writing go on together, so an echo of a large input never deadlocks
/// against the server's backpressure.
///
/// With [`SendOptions::proxy`] the connection starts with a PROXY protocol header,
/// written in the clear before anything else, a TLS handshake included.
pub fn send(
    endpoint: &Endpoint,
    input: &[u8],
    out: &mut dyn Write,
    opts: &SendOptions,
) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{endpoint}: {e}"));
    if endpoint.is_stream() {
        let tls = super::tls_for(endpoint, opts.tls.as_ref()).map_err(context)?;
        let proxy = opts.proxy.map(|v| (v, opts.proxy_source));
        send_stream(endpoint, input, out, tls.as_ref(), proxy).map_err(context)
    } else if opts.proxy.is_some() {
        Err(context(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a PROXY protocol header needs a stream address (tcp://, tls://, unix:)",
        )))
    } else {
        send_datagram(endpoint, input, out, opts.timeout).map_err(context)
    }
}

const TOKEN: Token = Token(0);

fn send_stream(
    endpoint: &Endpoint,
    input: &[u8],
    out: &mut dyn Write,
    tls: Option<&TlsClient>,
    proxy: Option<(ProxyVersion, Option<SocketAddr>)>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(16);
    let mut conn = Connection::new(socket::connect(endpoint, None, None, tls)?, Readiness::NONE);
    poll.registry().register(
        conn.transport_mut().source(),
        TOKEN,
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let mut outboxes = Outboxes::new(0);
    let mut stats = Stats::default();
    // Not connected yet: the input is queued, to go out as the socket takes it.
    conn.send(&[input], &mut outboxes, &mut stats)?;
    let mut connected = false;
    let mut write_shut = false;
    // The PROXY header, once connected and until the socket has taken all of it.
    let mut preamble: Option<Preamble> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if !connected && socket::connect_settled(ev) {
                socket::finish_connect(conn.transport())
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot connect: {e}")))?;
                connected = true;
                if let Some((version, source)) = proxy {
                    let header = proxy_header(conn.transport(), version, source)
                        .map_err(|e| io::Error::new(e.kind(), format!("PROXY header: {e}")))?;
                    preamble = Some(Preamble::new(header));
                }
            }
            conn.add_event(ev);
        }
        if !connected {
            continue;
        }
        // The header goes out first and alone: no byte of the session — not even the
        // TLS ClientHello, which waits in the transport for the first flush — before it.
        if let Some(p) = preamble.as_mut() {
            let all_sent = p.write(&mut conn, &mut stats).map_err(|f| {
                let e = io::Error::from(f);
                io::Error::new(e.kind(), format!("writing the PROXY header: {e}"))
            })?;
            if !all_sent {
                continue;
            }
            preamble = None;
        }
        // Read what there is: reading also moves a TLS handshake along, so the output
        // below can go out in the same turn once it is complete.
        while conn.readiness().readable() {
            match conn.read(&mut buf, &mut stats) {
                Input::Data(n) => out.write_all(&buf[..n])?,
                Input::Nothing => break,
                Input::Eof => {
                    out.flush()?;
                    let unsent = conn.queued(&outboxes);
                    return if unsent == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the server closed with {unsent} bytes unsent"),
                        ))
                    };
                }
                Input::Failed(fault) => return Err(fault.into()),
            }
        }
        // Write what the socket takes; a writable event brings the rest.
        if conn.can_flush() {
            conn.flush(&mut outboxes, &mut stats)?;
        }
        if !conn.owes() && !write_shut {
            write_shut = conn.shutdown_write(&mut stats)?;
        }
    }
}

/// The header for a connection just established: from `source`, or from the
/// connection's own address, to the server's.
fn proxy_header(
    transport: &Transport,
    version: ProxyVersion,
    source: Option<SocketAddr>,
) -> io::Result<Vec<u8>> {
    let target = match transport.peer_addr()? {
        PeerAddr::Inet(a) => Some(a),
        PeerAddr::Unix(_) => None,
    };
    let source = match source {
        Some(s) => s,
        None => match transport.local_addr()? {
            PeerAddr::Inet(a) => a,
            PeerAddr::Unix(_) => proxy::made_up_source(None, 0),
        },
    };
    Ok(proxy::header(version, source, target))
}

fn send_datagram(
    endpoint: &Endpoint,
    input: &[u8],
    out: &mut dyn Write,
    timeout: Duration,
) -> io::Result<()> {
    let addr = match endpoint.host_port() {
        Some(_) => Some(socket::resolve(endpoint)?),
        None => None,
    };
    let mut sock = DatagramSocket::connect(endpoint, addr)?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4);
    poll.registry()
        .register(sock.source(), TOKEN, Interest::READABLE)?;
    sock.send(input)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                out.write_all(&buf[..n])?;
                return out.flush();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply within {:.1} s", timeout.as_secs_f64()),
            ));
        }
        match poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
