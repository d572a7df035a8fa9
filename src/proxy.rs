//! The PROXY protocol, HAProxy's versions 1 and 2: how a load balancer tells the
//! server who its client really is.
//!
//! A balancer that forwards a TCP connection opens a connection of its own to the
//! server, so the server's socket sees the balancer as its peer. With the PROXY
//! protocol the balancer starts that connection with a header naming the client's
//! address and port (and the address it connected to), before any byte of the
//! client's: a line of text in version 1 (`PROXY TCP4 203.0.113.9 192.0.2.1 41000
//! 5001\r\n`, at most 107 bytes), a binary block in version 2 (a 12-byte signature, a
//! command, the address family, a length, the addresses, then optional
//! type-length-value fields — TLVs — with the ALPN, the TLS details, a unique id).
//!
//! A listener that expects the header (`?proxy=v1|v2|any`, `--proxy-protocol`) hands
//! each new connection to the connection table in its own phase (see `conn/mod.rs`):
//! the header is read and taken off before anything else — before the service is
//! opened, before a TLS handshake — and bytes that came with it go on to the service.
//! This module is the format: `parse` for the server side, with the `ppp` crate doing
//! the parsing, and [`encode`] for the clients that pretend to be a balancer
//! (`sockloop send --proxy`, `sockloop bench --proxy`).
//!
//! Two commands mean "no client to report": version 2's `LOCAL`, which HAProxy sends
//! on its health checks, and version 1's `PROXY UNKNOWN`. They are accepted — a health
//! check must never look like an error — and the connection keeps the socket's own
//! addresses.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use ppp::PartialResult;
use ppp::v2::{self, TypeLengthValues};
use serde::{Deserialize, Serialize};

use crate::transport::PeerAddr;

/// The longest version 2 header a server accepts, the 16 fixed bytes included. The
/// format allows 64 KiB; a balancer's addresses and TLVs take a few hundred bytes, and
/// every byte of an unfinished header is held for its connection until it completes.
pub const MAX_V2_HEADER: usize = 4096;

/// The longest version 1 header, `\r\n` included, as the specification fixes it.
pub const MAX_V1_HEADER: usize = 107;

/// Which PROXY protocol header a balancer — or a client playing one — sends. (A
/// server can also expect either, [`ProxyProtocol::Any`], but a balancer speaks one.)
/// The addresses `sockloop send` and `sockloop bench` put in it are described in
/// `client/proxy.rs` and the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// Version 1, the text line (HAProxy `send-proxy`): at most 107 bytes.
    V1,
    /// Version 2, the binary header (HAProxy `send-proxy-v2`, cloud balancers): 28
    /// bytes for IPv4, 52 for IPv6.
    V2,
}

impl ProxyVersion {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            ProxyVersion::V1 => 1,
            ProxyVersion::V2 => 2,
        }
    }
}

impl FromStr for ProxyVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(ProxyVersion::V1),
            "v2" => Ok(ProxyVersion::V2),
            _ => Err(format!(
                "unknown PROXY protocol version '{s}' (expected v1 or v2)"
            )),
        }
    }
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        })
    }
}

/// Which PROXY protocol header a listener expects before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Version 1, the text line (nginx `proxy_protocol on`, HAProxy `send-proxy`).
    V1,
    /// Version 2, the binary header (HAProxy `send-proxy-v2`, cloud balancers).
    V2,
    /// Either, told apart by the first bytes.
    Any,
}

impl From<ProxyVersion> for ProxyProtocol {
    fn from(v: ProxyVersion) -> Self {
        match v {
            ProxyVersion::V1 => ProxyProtocol::V1,
            ProxyVersion::V2 => ProxyProtocol::V2,
        }
    }
}

impl FromStr for ProxyProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(ProxyProtocol::Any),
            _ => s.parse::<ProxyVersion>().map(Into::into).map_err(|_| {
                format!("unknown PROXY protocol version '{s}' (expected v1, v2 or any)")
            }),
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyProtocol::V1 => ProxyVersion::V1.fmt(f),
            ProxyProtocol::V2 => ProxyVersion::V2.fmt(f),
            ProxyProtocol::Any => f.write_str("any"),
        }
    }
}

/// TLV types of version 2 headers, as the specification numbers them.
pub mod tlv {
    /// The application protocol the client negotiated (ALPN), e.g. `h2`.
    pub const ALPN: u8 = 0x01;
    /// The host name the client asked for (TLS SNI or HTTP authority).
    pub const AUTHORITY: u8 = 0x02;
    /// A CRC32c checksum of the header.
    pub const CRC32C: u8 = 0x03;
    /// Padding, to be ignored.
    pub const NOOP: u8 = 0x04;
    /// An opaque id of the connection, unique to the balancer (up to 128 bytes); cloud
    /// balancers send one.
    pub const UNIQUE_ID: u8 = 0x05;
    /// The client's TLS connection to the balancer, with sub-TLVs (see
    /// [`SslInfo`](super::SslInfo)).
    pub const SSL: u8 = 0x20;
    /// SSL sub-TLV: the TLS version (`TLSv1.3`).
    pub const SSL_VERSION: u8 = 0x21;
    /// SSL sub-TLV: the client certificate's common name.
    pub const SSL_CN: u8 = 0x22;
    /// SSL sub-TLV: the cipher (`ECDHE-RSA-AES128-GCM-SHA256`).
    pub const SSL_CIPHER: u8 = 0x23;
    /// SSL sub-TLV: the certificate's signature algorithm.
    pub const SSL_SIG_ALG: u8 = 0x24;
    /// SSL sub-TLV: the certificate's key algorithm.
    pub const SSL_KEY_ALG: u8 = 0x25;
    /// The network namespace the connection came from.
    pub const NETNS: u8 = 0x30;
}

/// A PROXY protocol header that named a client: who connected to the balancer, and
/// where. A service reads it through [`Context::proxy_header`](crate::Context::proxy_header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    version: u8,
    source: PeerAddr,
    destination: PeerAddr,
    /// The TLV bytes of a version 2 header, checked well-formed when parsed.
    tlvs: Box<[u8]>,
}

impl ProxyHeader {
    /// 1 or 2.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The client: the address the balancer's connection came from.
    pub fn source(&self) -> &PeerAddr {
        &self.source
    }

    /// The address the client connected to (the balancer's frontend).
    pub fn destination(&self) -> &PeerAddr {
        &self.destination
    }

    /// Every TLV of a version 2 header as `(type, value)`, in order (none for
    /// version 1). Types are in [`tlv`].
    pub fn tlvs(&self) -> impl Iterator<Item = (u8, &[u8])> {
        tlvs_of(&self.tlvs)
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    /// The application protocol the client negotiated with the balancer (ALPN).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tlv(tlv::ALPN)
    }

    /// The host name the client asked for (SNI), if the balancer passed it and it is
    /// UTF-8.
    pub fn authority(&self) -> Option<&str> {
        self.tlv(tlv::AUTHORITY)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The balancer's unique id of this connection.
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(tlv::UNIQUE_ID)
    }

    /// The client's TLS connection to the balancer, when it said.
    pub fn ssl(&self) -> Option<SslInfo<'_>> {
        let v = self.tlv(tlv::SSL)?;
        (v.len() >= 5).then(|| SslInfo {
            client: v[0],
            verify: u32::from_be_bytes([v[1], v[2], v[3], v[4]]),
            sub: &v[5..],
        })
    }
}

/// The `SSL` TLV: how the client's TLS connection to the balancer went.
#[derive(Clone, Copy, Debug)]
pub struct SslInfo<'a> {
    /// Bit field: 1 the client connected over TLS, 2 it presented a certificate on
    /// this connection, 4 on this session.
    pub client: u8,
    /// 0 when the client's certificate was verified.
    pub verify: u32,
    sub: &'a [u8],
}

impl<'a> SslInfo<'a> {
    /// A sub-TLV as text.
    fn text(&self, kind: u8) -> Option<&'a str> {
        tlvs_of(self.sub)
            .find(|(k, _)| *k == kind)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The TLS version, as the balancer names it (`TLSv1.3`).
    pub fn version(&self) -> Option<&'a str> {
        self.text(tlv::SSL_VERSION)
    }

    /// The client certificate's common name.
    pub fn common_name(&self) -> Option<&'a str> {
        self.text(tlv::SSL_CN)
    }

    /// The cipher.
    pub fn cipher(&self) -> Option<&'a str> {
        self.text(tlv::SSL_CIPHER)
    }

    /// The certificate's signature algorithm.
    pub fn signature_algorithm(&self) -> Option<&'a str> {
        self.text(tlv::SSL_SIG_ALG)
    }

    /// The certificate's key algorithm.
    pub fn key_algorithm(&self) -> Option<&'a str> {
        self.text(tlv::SSL_KEY_ALG)
    }
}

/// TLVs of a region already checked well-formed (malformed ones end the walk).
fn tlvs_of(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    TypeLengthValues::from(bytes).map_while(|t| {
        let t = t.ok()?;
        match t.value {
            std::borrow::Cow::Borrowed(v) => Some((t.kind, v)),
            // Parsing a borrowed region always borrows.
            std::borrow::Cow::Owned(_) => None,
        }
    })
}

/// What the bytes received so far make of a header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A header may still come: more bytes are needed.
    Incomplete,
    /// A whole header of this many bytes; `None` when it named no client (version 2
    /// `LOCAL` or an unspecified address family, version 1 `UNKNOWN`).
    Done(usize, Option<ProxyHeader>),
    /// Not a header the listener accepts, and no more bytes can make it one.
    Invalid(String),
}

/// The version 2 signature.
const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;

/// Parses the bytes a connection has sent so far as the header `expect` says.
pub(crate) fn parse(input: &[u8], expect: ProxyProtocol) -> Parsed {
    let first = match input.first() {
        None => return Parsed::Incomplete,
        Some(&b) => b,
    };
    let v2 = match expect {
        ProxyProtocol::V1 => false,
        ProxyProtocol::V2 => true,
        ProxyProtocol::Any => first == V2_SIGNATURE[0],
    };
    if v2 { parse_v2(input) } else { parse_v1(input) }
}

fn parse_v2(input: &[u8]) -> Parsed {
    let fixed = V2_SIGNATURE.len() + 4;
    if input.len() >= fixed && input.starts_with(V2_SIGNATURE) {
        let len = fixed + usize::from(u16::from_be_bytes([input[14], input[15]]));
        if len > MAX_V2_HEADER {
            return Parsed::Invalid(format!(
                "PROXY v2 header of {len} bytes, over the {MAX_V2_HEADER}-byte limit"
            ));
        }
    }
    let header = match v2::Header::try_from(input) {
        Ok(h) => h,
        Err(e) if e.is_incomplete() => return Parsed::Incomplete,
        Err(v2::ParseError::Prefix) => {
            return Parsed::Invalid("no PROXY v2 signature".into());
        }
        Err(e) => return Parsed::Invalid(format!("bad PROXY v2 header: {e}")),
    };
    let len = header.len();
    if let Some(Err(e)) = header.tlvs().find(Result::is_err) {
        return Parsed::Invalid(format!("bad PROXY v2 header: {e}"));
    }
    if header.command == v2::Command::Local {
        return Parsed::Done(len, None);
    }
    let (source, destination) = match header.addresses {
        v2::Addresses::Unspecified => return Parsed::Done(len, None),
        v2::Addresses::IPv4(a) => inet_pair(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        v2::Addresses::IPv6(a) => inet_pair(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        v2::Addresses::Unix(a) => (unix_addr(&a.source), unix_addr(&a.destination)),
    };
    Parsed::Done(
        len,
        Some(ProxyHeader {
            version: 2,
            source,
            destination,
            tlvs: header.tlv_bytes().into(),
        }),
    )
}

/// A header's source and destination as internet addresses.
fn inet_pair<I: Into<IpAddr>>(source: (I, u16), destination: (I, u16)) -> (PeerAddr, PeerAddr) {
    let inet = |(ip, port): (I, u16)| PeerAddr::Inet(SocketAddr::new(ip.into(), port));
    (inet(source), inet(destination))
}

/// A Unix address of a version 2 header: a path padded with NUL bytes (none: unnamed).
fn unix_addr(raw: &[u8; 108]) -> PeerAddr {
    use std::os::unix::ffi::OsStrExt;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if end == 0 {
        return PeerAddr::Unix(None);
    }
    PeerAddr::Unix(Some(PathBuf::from(std::ffi::OsStr::from_bytes(
        &raw[..end],
    ))))
}

fn parse_v1(input: &[u8]) -> Parsed {
    // ppp reads a line cut short after a space as a bad address rather than an
    // incomplete one, so the line is given to it only once it is whole; until then the
    // bytes must start as a header does and stay within the length limit.
    const PREFIX: &[u8] = b"PROXY ";
    let k = input.len().min(PREFIX.len());
    if input[..k] != PREFIX[..k] {
        return Parsed::Invalid("no PROXY header".into());
    }
    let end = match input.iter().position(|&b| b == b'\n') {
        Some(i) if i < MAX_V1_HEADER => i + 1,
        None if input.len() < MAX_V1_HEADER => return Parsed::Incomplete,
        _ => {
            return Parsed::Invalid(format!("PROXY v1 header longer than {MAX_V1_HEADER} bytes"));
        }
    };
    let h = match ppp::v1::Header::try_from(&input[..end]) {
        Ok(h) => h,
        Err(e) => return Parsed::Invalid(format!("bad PROXY v1 header: {e}")),
    };
    let (source, destination) = match h.addresses {
        ppp::v1::Addresses::Unknown => return Parsed::Done(end, None),
        ppp::v1::Addresses::Tcp4(a) => inet_pair(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
        ppp::v1::Addresses::Tcp6(a) => inet_pair(
            (a.source_address, a.source_port),
            (a.destination_address, a.destination_port),
        ),
    };
    Parsed::Done(
        end,
        Some(ProxyHeader {
            version: 1,
            source,
            destination,
            tlvs: Box::default(),
        }),
    )
}

/// A header as a balancer would send it for a client at `source` that connected to
/// `destination`: version 1 or 2, TCP over IPv4 or IPv6. A source and destination of
/// different families are both written as IPv6 (an IPv4 address mapped into IPv6).
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    if version == ProxyVersion::V1 {
        return ppp::v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes();
    }
    // Building into a Vec cannot fail: the addresses are far below the length limit.
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap_or_default()
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    };
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_round_trip_and_the_bytes_behind_it_are_not_taken() {
        let mut h = encode(
            ProxyVersion::V1,
            addr("203.0.113.9:41000"),
            addr("192.0.2.1:5001"),
        );
        assert_eq!(h, b"PROXY TCP4 203.0.113.9 192.0.2.1 41000 5001\r\n");
        let len = h.len();
        h.extend_from_slice(b"hello");
        match parse(&h, ProxyProtocol::Any) {
            Parsed::Done(n, Some(p)) => {
                assert_eq!(n, len);
                assert_eq!(p.source(), &PeerAddr::Inet(addr("203.0.113.9:41000")));
                assert_eq!(p.version(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v2_round_trip_ipv6() {
        let h = encode(
            ProxyVersion::V2,
            addr("[2001:db8::9]:41000"),
            addr("[2001:db8::1]:5001"),
        );
        match parse(&h, ProxyProtocol::V2) {
            Parsed::Done(n, Some(p)) => {
                assert_eq!(n, h.len());
                assert_eq!(p.source(), &PeerAddr::Inet(addr("[2001:db8::9]:41000")));
                assert_eq!(p.destination(), &PeerAddr::Inet(addr("[2001:db8::1]:5001")));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A balancer in front of a Unix socket server may name Unix addresses (paths
    /// padded with NUL bytes); an unnamed client has an empty path.
    #[test]
    fn v2_unix_addresses() {
        let mut source = [0u8; 108];
        source[..14].copy_from_slice(b"/run/lb/c.sock");
        let h = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            v2::Unix::new(source, [0u8; 108]),
        )
        .build()
        .unwrap();
        assert_eq!(h.len(), 16 + 216);
        let Parsed::Done(n, Some(p)) = parse(&h, ProxyProtocol::Any) else {
            panic!("not parsed");
        };
        assert_eq!(n, h.len());
        assert_eq!(
            p.source(),
            &PeerAddr::Unix(Some(PathBuf::from("/run/lb/c.sock")))
        );
        assert_eq!(p.destination(), &PeerAddr::Unix(None));
    }

    #[test]
    fn local_and_unknown_name_no_client() {
        let local = v2::Builder::new(
            v2::Version::Two | v2::Command::Local,
            v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local, ProxyProtocol::Any), Parsed::Done(16, None));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n", ProxyProtocol::V1),
            Parsed::Done(15, None)
        );
    }

    #[test]
    fn tlvs_are_kept_and_read() {
        let ssl: Vec<u8> = [1u8, 0, 0, 0, 0]
            .into_iter()
            .chain([tlv::SSL_VERSION, 0, 7])
            .chain(*b"TLSv1.3")
            .collect();
        let h = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (addr("198.51.100.7:1234"), addr("192.0.2.1:443")),
        )
        .write_tlv(tlv::ALPN, b"h2")
        .unwrap()
        .write_tlv(tlv::AUTHORITY, b"example.com")
        .unwrap()
        .write_tlv(tlv::UNIQUE_ID, b"id-42")
        .unwrap()
        .write_tlv(tlv::SSL, &ssl)
        .unwrap()
        .build()
        .unwrap();
        let Parsed::Done(_, Some(p)) = parse(&h, ProxyProtocol::V2) else {
            panic!("not parsed");
        };
        assert_eq!(p.alpn(), Some(&b"h2"[..]));
        assert_eq!(p.authority(), Some("example.com"));
        assert_eq!(p.unique_id(), Some(&b"id-42"[..]));
        let s = p.ssl().unwrap();
        assert_eq!((s.client, s.verify, s.version()), (1, 0, Some("TLSv1.3")));
        assert_eq!(p.tlvs().count(), 4);
    }

    #[test]
    fn bad_headers_are_refused() {
        for (input, expect) in [
            (&b"GET / HTTP/1.1\r\n"[..], ProxyProtocol::Any),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ProxyProtocol::V2),
            (b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0c", ProxyProtocol::V1),
            (b"PROXY TCP4 1.2.3.x 5.6.7.8 1 2\r\n", ProxyProtocol::V1),
            (&[b'A'; 120], ProxyProtocol::V1),
        ] {
            assert!(
                matches!(parse(input, expect), Parsed::Invalid(_)),
                "{input:?} as {expect}"
            );
        }
        // A version 1 line with no end: refused once it passes 107 bytes.
        let mut long = b"PROXY TCP6 ".to_vec();
        long.resize(MAX_V1_HEADER, b'1');
        assert!(matches!(
            parse(&long, ProxyProtocol::V1),
            Parsed::Invalid(_)
        ));
        // A version 2 length past the bound: refused from the 16 fixed bytes alone.
        let mut big = V2_SIGNATURE.to_vec();
        big.extend([0x21, 0x11, 0x10, 0x00]);
        assert!(matches!(parse(&big, ProxyProtocol::V2), Parsed::Invalid(_)));
        // A TLV running past the end.
        let mut h = encode(ProxyVersion::V2, addr("1.2.3.4:1"), addr("5.6.7.8:2"));
        h.extend([tlv::ALPN, 0, 9, b'x']);
        let len = (h.len() - 16) as u16;
        h[14..16].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(parse(&h, ProxyProtocol::V2), Parsed::Invalid(_)));
    }

    /// Every prefix of a good header is incomplete, never an error.
    #[test]
    fn prefixes_are_incomplete() {
        for h in [
            encode(
                ProxyVersion::V1,
                addr("203.0.113.9:41000"),
                addr("192.0.2.1:5001"),
            ),
            encode(
                ProxyVersion::V2,
                addr("203.0.113.9:41000"),
                addr("192.0.2.1:5001"),
            ),
            encode(
                ProxyVersion::V1,
                addr("[2001:db8::9]:1"),
                addr("[2001:db8::1]:2"),
            ),
        ] {
            for n in 0..h.len() {
                assert_eq!(
                    parse(&h[..n], ProxyProtocol::Any),
                    Parsed::Incomplete,
                    "{n}"
                );
            }
        }
    }

    proptest! {
        /// Any bytes at all: no panic, and a verdict that never claims more bytes than
        /// were given.
        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300),
                                which in 0..3u8) {
            let expect = [ProxyProtocol::V1, ProxyProtocol::V2, ProxyProtocol::Any][which as usize];
            if let Parsed::Done(n, _) = parse(&input, expect) {
                prop_assert!(n <= input.len());
            }
        }

        /// A good header with its tail cut off or some byte changed: no panic; cut, it
        /// is incomplete; changed, it may be anything but a header longer than given.
        #[test]
        fn damaged_headers(v2 in any::<bool>(), a in any::<[u8; 4]>(), b in any::<[u8; 4]>(),
                           p in any::<u16>(), q in any::<u16>(),
                           cut in any::<prop::sample::Index>(),
                           flip in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let v = if v2 { ProxyVersion::V2 } else { ProxyVersion::V1 };
            let h = encode(v, SocketAddr::from((a, p)), SocketAddr::from((b, q)));
            let n = cut.index(h.len());
            prop_assert_eq!(parse(&h[..n], ProxyProtocol::Any), Parsed::Incomplete);
            let mut bad = h.clone();
            bad[flip.index(h.len())] = byte;
            if let Parsed::Done(n, _) = parse(&bad, ProxyProtocol::Any) {
                prop_assert!(n <= bad.len());
            }
        }
    }
}
