//! `sockloop send`: connect, write a message (or all of stdin) completely, half-close,
//! and copy everything the server sends until it closes — or, for a datagram address,
//! send one datagram and copy the first reply.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::conn::{Connection, Input, Outboxes};
use crate::endpoint::Endpoint;
use crate::readiness::Readiness;
use crate::socket::{self, DatagramSocket};
use crate::stats::Stats;
use crate::tls::TlsClient;

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
    if endpoint.is_stream() {
        let tls = super::tls_for(endpoint, opts.tls.as_ref()).map_err(context)?;
        send_stream(endpoint, input, out, tls.as_ref()).map_err(context)
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
            }
            conn.add_event(ev);
        }
        if !connected {
            continue;
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
