//! Listening sockets: binding them with the right options, and accepting from them.
//!
//! Options are set through `socket2` before `bind`, because some only work there:
//! `SO_REUSEADDR` (a restarted server can bind while old connections sit in TIME_WAIT),
//! `SO_REUSEPORT` (several loops each get their own listener on one port and the kernel
//! spreads connections over them), and `IPV6_V6ONLY` (`[::]` means IPv6 only, so
//! `0.0.0.0` and `[::]` can be bound side by side on one port).

use std::io;
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::endpoint::Endpoint;
use crate::transport::{PeerAddr, Stream};

/// The accept queue length asked of `listen`; the kernel caps it at
/// `net.core.somaxconn` (4096 on current Linux), so this means "as long as allowed".
const BACKLOG: i32 = 65_535;

/// How to bind.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BindOptions {
    /// Set `SO_REUSEPORT`, so that several loops can each bind the same port.
    pub(crate) reuse_port: bool,
}

/// A bound, non-blocking socket that produces connections.
#[derive(Debug)]
pub(crate) enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds the endpoint. Errors name the address.
    pub(crate) fn bind(endpoint: &Endpoint, opts: BindOptions) -> io::Result<Listener> {
        let context =
            |e: io::Error| io::Error::new(e.kind(), format!("cannot bind {endpoint}: {e}"));
        match endpoint {
            Endpoint::Tcp(hp) => {
                let addr = *hp.resolve().map_err(context)?.first().ok_or_else(|| {
                    context(io::Error::new(io::ErrorKind::NotFound, "no address"))
                })?;
                bind_tcp(addr, opts).map(Listener::Tcp).map_err(context)
            }
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "cannot bind {other}: the {} scheme is not served yet",
                    other.scheme()
                ),
            )),
        }
    }

    /// The socket as something `poll` can register.
    pub(crate) fn source(&mut self) -> &mut dyn Source {
        match self {
            Listener::Tcp(l) => l,
        }
    }

    /// The bound endpoint, with port 0 resolved to the real port.
    pub(crate) fn local_endpoint(&self, asked: &Endpoint) -> io::Result<Endpoint> {
        match self {
            Listener::Tcp(l) => Ok(asked.with_addr(l.local_addr()?)),
        }
    }

    /// Accepts one pending connection (`accept4`, already non-blocking and close-on-exec).
    pub(crate) fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                // An echo server answers small writes at once; Nagle would hold them back
                // waiting for an ACK. Failure only costs latency, so it is not fatal.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), PeerAddr::Inet(peer)))
            }
        }
    }
}

fn bind_tcp(addr: SocketAddr, opts: BindOptions) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if opts.reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(TcpListener::from_std(sock.into()))
}
