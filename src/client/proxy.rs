//! The clients as a load balancer: every connection starts with a PROXY protocol
//! header (see [`crate::proxy`]), so a server that expects one can be tried and loaded
//! without a balancer in front of it.
//!
//! The header is the first thing on the connection, in the clear, ahead of a TLS
//! handshake — as a balancer sends it, passing the client's TLS bytes through behind
//! it. So it is written on the socket itself once the connect has completed and
//! before the connection's own machinery writes anything (which for TLS means the
//! ClientHello rustls holds until the first flush). The addresses a header carries
//! are described below.
//!
//! # Addresses
//! - `sockloop send`: the source is `--proxy-source`, or the connection's own local
//!   address; the destination is the server's address.
//! - `sockloop bench`: connection *n* (reconnections count on, so every connection of a
//!   run is another *n*) claims to come from its own address in a benchmarking range —
//!   198.18.0.0/15 (RFC 2544) for an IPv4 server, 2001:2::/48 (RFC 5180) for an IPv6
//!   one — so the server sees many clients: 131,072 addresses, each with ports from
//!   1024 up, and the pair repeats only after 8,257,536 connections. The destination is
//!   the server's address.
//! - A Unix server has no internet address, and version 1 cannot carry a Unix one. A
//!   balancer in front of a Unix server reports the client's TCP address, and so do the
//!   clients: the source as above (for `send` without `--proxy-source`, the address
//!   bench gives its first connection, 198.18.0.1:1024), the destination the unspecified
//!   address of the source's family (`0.0.0.0:0`): there was no address to connect to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use crate::proxy::ProxyVersion;

use crate::conn::Connection;
use crate::stats::Stats;
use crate::transport::Fault;

/// Addresses in 198.18.0.0/15.
const V4_RANGE: u32 = 1 << 17;
/// Ports from here up: below are the well-known ones, which no client connects from.
const FIRST_PORT: u16 = 1024;
const PORTS: u32 = 65536 - FIRST_PORT as u32;

/// The made-up client of connection `n` to a server at `target` (`None`: a Unix
/// server): its own address in 198.18.0.0/15, or in 2001:2::/48 for an IPv6 server.
pub(crate) fn made_up_source(target: Option<SocketAddr>, n: u64) -> SocketAddr {
    // Counting from 1 makes the first client 198.18.0.1 rather than an address that
    // reads as a network's.
    let host = ((n + 1) % u64::from(V4_RANGE)) as u32;
    let port = FIRST_PORT + (n % u64::from(PORTS)) as u16;
    let ip = match target {
        Some(SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x2,
            0,
            0,
            0,
            0,
            (host >> 16) as u16,
            host as u16,
        )),
        _ => IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(198, 18, 0, 0)) + host,
        )),
    };
    SocketAddr::new(ip, port)
}

/// The header a balancer would send for a client at `source` that connected to
/// `target` (`None`: a Unix server, reported as the unspecified address).
pub(crate) fn header(
    version: ProxyVersion,
    source: SocketAddr,
    target: Option<SocketAddr>,
) -> Vec<u8> {
    let destination = target.unwrap_or(match source {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    });
    crate::proxy::encode(version, source, destination)
}

/// A header on its way out: the bytes, and how many the socket has taken.
#[derive(Debug)]
pub(crate) struct Preamble {
    bytes: Vec<u8>,
    sent: usize,
}

impl Preamble {
    /// A header of `bytes`, none of it sent yet.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Preamble { bytes, sent: 0 }
    }

    /// The part of the header not yet sent.
    pub(crate) fn unsent(&self) -> &[u8] {
        &self.bytes[self.sent..]
    }

    /// Writes what is left, beneath any TLS session, while the socket takes it.
    /// `Ok(true)` once all of it has gone; `Ok(false)` when the socket filled first (on
    /// a new connection, with a send buffer of kilobytes, hardly ever): call again on
    /// the next writable event, and let the connection write nothing else until then.
    pub(crate) fn write(
        &mut self,
        conn: &mut Connection,
        stats: &mut Stats,
    ) -> Result<bool, Fault> {
        while self.sent < self.bytes.len() && conn.readiness().writable() {
            self.sent += conn.write_raw(&self.bytes[self.sent..], stats)?;
        }
        Ok(self.sent == self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn made_up_sources_stay_in_the_benchmarking_ranges_and_differ() {
        let v4 = Some(addr("127.0.0.1:5001"));
        assert_eq!(made_up_source(v4, 0), addr("198.18.0.1:1024"));
        assert_eq!(made_up_source(None, 0), addr("198.18.0.1:1024"));
        assert_eq!(made_up_source(v4, 255), addr("198.18.1.0:1279"));
        // The last address of the /15, then around again.
        assert_eq!(
            made_up_source(v4, 131_070).ip(),
            addr("198.19.255.255:0").ip()
        );
        assert_eq!(made_up_source(v4, 131_071).ip(), addr("198.18.0.0:0").ip());
        let v6 = Some(addr("[::1]:5001"));
        assert_eq!(made_up_source(v6, 0), addr("[2001:2::1]:1024"));
        assert_eq!(made_up_source(v6, 65_535), addr("[2001:2::1:0]:2047"));

        let mut seen = std::collections::HashSet::new();
        for n in 0..200_000 {
            let s = made_up_source(v4, n);
            let IpAddr::V4(ip) = s.ip() else {
                panic!("{s}")
            };
            assert_eq!(
                u32::from(ip) >> 17,
                u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17
            );
            assert!(s.port() >= FIRST_PORT);
            assert!(seen.insert(s), "{n}: {s} repeats");
        }
    }

    #[test]
    fn unix_servers_get_the_unspecified_destination() {
        let src = addr("198.18.0.1:1024");
        assert_eq!(
            header(ProxyVersion::V1, src, None),
            b"PROXY TCP4 198.18.0.1 0.0.0.0 1024 0\r\n"
        );
        let h = header(ProxyVersion::V2, addr("[2001:2::1]:1024"), None);
        assert_eq!(h.len(), 52);
    }

    /// A header the socket cannot take at once (made huge here; a real one is short
    /// enough that this hardly ever happens): the rest goes out on later writable
    /// events, every byte once, in order.
    #[test]
    fn a_header_cut_short_is_finished_on_later_writable_events() {
        use std::io::Read;
        use std::time::Duration;

        use mio::{Events, Interest, Poll, Token};

        use crate::readiness::Readiness;
        use crate::transport::Transport;

        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut conn = Connection::new(
            Transport::Unix(mio::net::UnixStream::from_std(ours)),
            Readiness::WRITABLE,
        );
        let bytes: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut preamble = Preamble::new(bytes.clone());
        let mut stats = Stats::default();
        assert!(!preamble.write(&mut conn, &mut stats).unwrap());
        assert!(
            !conn.readiness().writable(),
            "a full socket must not look writable"
        );
        assert!(preamble.sent > 0 && preamble.sent < bytes.len());

        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut theirs = theirs;
            theirs.read_to_end(&mut got).map(|_| got)
        });
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(conn.transport_mut().source(), Token(0), Interest::WRITABLE)
            .unwrap();
        let mut events = Events::with_capacity(4);
        let mut rounds = 0;
        while !preamble.write(&mut conn, &mut stats).unwrap() {
            rounds += 1;
            assert!(rounds < 10_000, "the header never finished");
            poll.poll(&mut events, Some(Duration::from_secs(10)))
                .unwrap();
            for ev in events.iter() {
                conn.add_event(ev);
            }
        }
        assert!(rounds > 0);
        assert_eq!(stats.bytes_out, bytes.len() as u64);
        drop(conn);
        let got = reader.join().unwrap().unwrap();
        assert!(got == bytes, "the header arrived damaged");
    }

    #[test]
    fn versions_parse_and_print() {
        for v in [ProxyVersion::V1, ProxyVersion::V2] {
            assert_eq!(v.to_string().parse::<ProxyVersion>(), Ok(v));
        }
        assert!("any".parse::<ProxyVersion>().is_err());
        assert!("v3".parse::<ProxyVersion>().is_err());
    }
}
