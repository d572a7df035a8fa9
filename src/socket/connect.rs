//! Client sockets: starting a non-blocking connect, and learning how it ended.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::{TcpStream, UnixStream};
use socket2::{Domain, Protocol, Socket, Type};

use crate::endpoint::Endpoint;
use crate::tls::TlsClient;
use crate::transport::Transport;

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
/// `addr` is the endpoint already resolved (the load generator resolves once for
/// thousands of connections); `source` binds the local end to an address first (it
/// spreads connections over several loopback addresses, so the kernel's search for a
/// free ephemeral port stays short). A `tls://` endpoint needs `tls`; its handshake
/// runs as the connection is read and written.
pub(crate) fn connect(
    endpoint: &Endpoint,
    addr: Option<SocketAddr>,
    source: Option<IpAddr>,
    tls: Option<&TlsClient>,
) -> io::Result<Transport> {
    match endpoint {
        Endpoint::Tcp(_) | Endpoint::Tls(_) => {
            let addr = match addr {
                Some(a) => a,
                None => resolve(endpoint)?,
            };
            // Non-blocking from birth (SOCK_NONBLOCK), where the platform allows: two
            // `fcntl` calls fewer per connection, which a load generator opening
            // thousands of them notices.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let sock = Socket::new(
                Domain::for_address(addr),
                Type::STREAM.nonblocking(),
                Some(Protocol::TCP),
            )?;
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let sock = {
                let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                s.set_nonblocking(true)?;
                s
            };
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
                (Endpoint::Tls(_), Some(t)) => t.wrap(tcp),
                (Endpoint::Tls(_), None) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a tls:// address needs a TLS client configuration",
                )),
                _ => Ok(Transport::Tcp(tcp)),
            }
        }
        Endpoint::Unix(path) => Ok(Transport::Unix(UnixStream::connect(path)?)),
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{other} is not a stream address"),
        )),
    }
}

/// True for an event that says a non-blocking connect has finished, one way or the
/// other: the socket turned writable, or reported an error or a hang-up.
pub(crate) fn connect_settled(ev: &mio::event::Event) -> bool {
    ev.is_writable() || ev.is_error() || ev.is_write_closed()
}

/// After a connect settled ([`connect_settled`]): `Ok` if the connection is established.
pub(crate) fn finish_connect(transport: &Transport) -> io::Result<()> {
    if let Some(e) = transport.take_error()? {
        return Err(e);
    }
    // Writable without an error can still mean "not connected" on some systems.
    transport.peer_addr().map(|_| ())
}
