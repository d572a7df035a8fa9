//! Addresses written as URLs: `tcp://HOST:PORT`, `udp://HOST:PORT`, `tls://HOST:PORT`,
//! `unix:PATH` and `unixgram:PATH`, each optionally followed by a `?key=value&...` query.
//!
//! Parsing never touches the network: a host name stays a name until
//! [`HostPort::resolve`] is called, so a malformed URL is caught before anything is bound
//! and an unknown host is reported where the address is used.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A host (IP literal or name) and a port, as written in a `tcp://`, `udp://` or `tls://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// The host as written, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port; 0 means "any free port" when binding.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resolves the host to socket addresses (a DNS lookup for names, which may block).
    ///
    /// An IP literal resolves to itself without a lookup.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no address", self.host),
            ));
        }
        Ok(addrs)
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where a socket lives: the scheme and the address, without any query.
///
/// `Display` writes the canonical URL (`tcp://[::1]:5001`, `unix:/tmp/s.sock`), which is
/// what the server prints in its `listening` lines.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP stream socket.
    Tcp(HostPort),
    /// A UDP datagram socket.
    Udp(HostPort),
    /// TLS over TCP.
    Tls(HostPort),
    /// A Unix-domain stream socket at a filesystem path.
    Unix(PathBuf),
    /// A Unix-domain datagram socket at a filesystem path.
    UnixDatagram(PathBuf),
}

impl Endpoint {
    /// The URL scheme: `tcp`, `udp`, `tls`, `unix` or `unixgram`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Tcp(_) => "tcp",
            Endpoint::Udp(_) => "udp",
            Endpoint::Tls(_) => "tls",
            Endpoint::Unix(_) => "unix",
            Endpoint::UnixDatagram(_) => "unixgram",
        }
    }

    /// True for the connection-oriented schemes (`tcp`, `tls`, `unix`).
    pub fn is_stream(&self) -> bool {
        matches!(
            self,
            Endpoint::Tcp(_) | Endpoint::Tls(_) | Endpoint::Unix(_)
        )
    }

    /// The host and port of an internet endpoint, `None` for Unix paths.
    pub fn host_port(&self) -> Option<&HostPort> {
        match self {
            Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) => Some(hp),
            Endpoint::Unix(_) | Endpoint::UnixDatagram(_) => None,
        }
    }

    /// The filesystem path of a Unix endpoint, `None` for internet ones.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Endpoint::Unix(p) | Endpoint::UnixDatagram(p) => Some(p),
            _ => None,
        }
    }

    /// The same scheme with a concrete bound address (port 0 replaced by the real port).
    pub fn with_addr(&self, addr: SocketAddr) -> Endpoint {
        let hp = HostPort::from(addr);
        match self {
            Endpoint::Tcp(_) => Endpoint::Tcp(hp),
            Endpoint::Udp(_) => Endpoint::Udp(hp),
            Endpoint::Tls(_) => Endpoint::Tls(hp),
            other => other.clone(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) => {
                write!(f, "{}://{}", self.scheme(), hp)
            }
            Endpoint::Unix(p) | Endpoint::UnixDatagram(p) => {
                write!(f, "{}:{}", self.scheme(), p.display())
            }
        }
    }
}

/// A URL: an [`Endpoint`] and the `key=value` pairs of its query, in order.
///
/// The query's meaning belongs to whoever consumes the URL (`?mode=line` selects a
/// service for one listener); the parser only splits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// The address part.
    pub endpoint: Endpoint,
    /// The query pairs; a key without `=` has an empty value.
    pub query: Vec<(String, String)>,
}

impl Url {
    /// `endpoint` with the pairs of `query` (what follows a `?`), split as a whole
    /// URL's query is: for an address that comes without a URL, such as a socket a
    /// service manager passes, but takes the same options.
    pub fn with_query(endpoint: Endpoint, query: &str) -> Result<Url, ParseError> {
        let pairs = split_query(query).map_err(|reason| ParseError {
            input: format!("{endpoint}?{query}"),
            reason: reason.to_string(),
        })?;
        Ok(Url {
            endpoint,
            query: pairs,
        })
    }

    /// The value of the first query pair with this key.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.endpoint)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{k}={v}")?;
        }
        Ok(())
    }
}

/// Why a URL could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    input: String,
    reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid address '{}': {}", self.input, self.reason)
    }
}

impl std::error::Error for ParseError {}

impl FromStr for Url {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ParseError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (addr, query) = match input.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (input, None),
        };
        let (scheme, rest) = addr.split_once(':').ok_or_else(|| {
            fail("expected SCHEME:ADDRESS (tcp://, udp://, tls://, unix:, unixgram:)")
        })?;
        let endpoint = match scheme {
            "tcp" | "udp" | "tls" => {
                let hostport = rest
                    .strip_prefix("//")
                    .ok_or_else(|| fail("expected //HOST:PORT after the scheme"))?;
                let hp = parse_host_port(hostport).map_err(|r| fail(&r))?;
                match scheme {
                    "tcp" => Endpoint::Tcp(hp),
                    "udp" => Endpoint::Udp(hp),
                    _ => Endpoint::Tls(hp),
                }
            }
            "unix" | "unixgram" => {
                // `unix:///tmp/s.sock` is the URL form of `unix:/tmp/s.sock`.
                let path = match rest.strip_prefix("//") {
                    Some(p) if p.starts_with('/') => p,
                    Some(_) => return Err(fail("expected unix:PATH or unix:///ABSOLUTE/PATH")),
                    None => rest,
                };
                if path.is_empty() {
                    return Err(fail("empty socket path"));
                }
                if scheme == "unix" {
                    Endpoint::Unix(PathBuf::from(path))
                } else {
                    Endpoint::UnixDatagram(PathBuf::from(path))
                }
            }
            other => {
                return Err(fail(&format!(
                    "unknown scheme '{other}' (expected tcp, udp, tls, unix or unixgram)"
                )));
            }
        };
        let pairs = match query {
            Some(q) => split_query(q).map_err(fail)?,
            None => Vec::new(),
        };
        Ok(Url {
            endpoint,
            query: pairs,
        })
    }
}

/// A query's `key=value` pairs, in order; a key without `=` has an empty value.
fn split_query(query: &str) -> Result<Vec<(String, String)>, &'static str> {
    let mut pairs = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if k.is_empty() {
            return Err("empty query key");
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(pairs)
}

impl FromStr for Endpoint {
    type Err = ParseError;

    /// Parses a URL that must not carry a query.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let url: Url = input.parse()?;
        if !url.query.is_empty() {
            return Err(ParseError {
                input: input.to_string(),
                reason: "a query is not allowed here".to_string(),
            });
        }
        Ok(url.endpoint)
    }
}

fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let port = after
            .strip_prefix(':')
            .ok_or("expected :PORT after the IPv6 address")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{h}' is not an IPv6 address"));
        }
        (h, port)
    } else {
        let (h, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
        if h.contains(':') {
            return Err("an IPv6 address must be written in brackets: [::1]:PORT".into());
        }
        (h, port)
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!("'{host}' is not a host name"));
    }
    // RFC 1123 section 2.1: the top-level label of a host name is alphabetic, so a host
    // of only digits and dots can only be meant as an IPv4 address. Refusing it here
    // makes a typo a usage error instead of a failed name lookup, and keeps resolvers
    // from reading forms such as `127.1` or octal `010.0.0.1` their own way.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(format!(
            "'{host}' is not an IPv4 address (four numbers 0-255, such as 127.0.0.1), \
             and a host name cannot be only digits and dots"
        ));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{port}' is not a port number (0-65535)"))?;
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            url("tcp://127.0.0.1:5001").endpoint.to_string(),
            "tcp://127.0.0.1:5001"
        );
        assert_eq!(url("udp://[::1]:0").endpoint.to_string(), "udp://[::1]:0");
        assert_eq!(
            url("tls://localhost:5443").endpoint.to_string(),
            "tls://localhost:5443"
        );
        assert_eq!(
            url("unix:/tmp/s.sock").endpoint,
            Endpoint::Unix("/tmp/s.sock".into())
        );
        assert_eq!(
            url("unix:///tmp/s.sock").endpoint,
            Endpoint::Unix("/tmp/s.sock".into())
        );
        assert_eq!(
            url("unixgram:rel.dgram").endpoint,
            Endpoint::UnixDatagram("rel.dgram".into())
        );
    }

    #[test]
    fn splits_the_query_on_every_scheme() {
        let u = url("unix:/tmp/s.sock?mode=line&perm=0660");
        assert_eq!(u.endpoint, Endpoint::Unix("/tmp/s.sock".into()));
        assert_eq!(u.param("mode"), Some("line"));
        assert_eq!(u.param("perm"), Some("0660"));
        assert_eq!(
            url("tcp://127.0.0.1:1?mode=echo").param("mode"),
            Some("echo")
        );
    }

    #[test]
    fn rejects_malformed_urls() {
        for bad in [
            "",
            "127.0.0.1:5001",
            "http://127.0.0.1:80",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:70000",
            "tcp://127.0.0.1:x",
            "tcp://:5001",
            "tcp://::1:5001",
            "tcp://[::1:5001",
            "tcp://[nothost]:5001",
            "tcp:127.0.0.1:5001",
            "unix:",
            "unix://relative",
            "tcp://127.0.0.1:1?=x",
        ] {
            assert!(bad.parse::<Url>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn a_host_of_digits_and_dots_must_be_an_ipv4_address() {
        for bad in [
            "999.1.1.1",
            "1.2.3",
            "127.1",
            "1.2.3.4.5",
            "010.0.0.1",
            "1.2.3.4.",
            "5",
        ] {
            let e = format!("tcp://{bad}:5").parse::<Url>().expect_err(bad);
            assert!(e.to_string().contains("not an IPv4 address"), "{bad}: {e}");
        }
        for good in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "1.2.3.example",
            "3com.com",
        ] {
            let u = url(&format!("udp://{good}:5"));
            assert_eq!(u.endpoint.host_port().map(HostPort::host), Some(good));
        }
    }

    #[test]
    fn endpoint_refuses_a_query() {
        assert!("tcp://127.0.0.1:1?mode=line".parse::<Endpoint>().is_err());
        assert!("tcp://127.0.0.1:1".parse::<Endpoint>().is_ok());
    }

    #[test]
    fn bound_address_replaces_port_zero() {
        let e = url("tcp://[::1]:0").endpoint;
        let bound = e.with_addr("[::1]:4242".parse().unwrap());
        assert_eq!(bound.to_string(), "tcp://[::1]:4242");
    }
}
