//! The PROXY protocol on the server side, without a balancer: headers written by the
//! test, whole, in pieces, with data behind them, broken, late or never — and what the
//! service sees of them.

pub mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use sockloop::proxy::{self, ProxyProtocol, ProxyVersion};
use sockloop::{Builder, ConnId, Context, ListenOptions, PeerAddr, Service};

use util::fs::TempDir;
use util::net::{connect, read_to_eof};
use util::pki::Pki;
use util::server::LibServer;

/// Answers every connection with a line naming its peer and who passed it on
/// (`PEER via BALANCER`, or `PEER direct`), then echoes: so a test sees both what the
/// loop made of the header and that no byte of it reached the service.
struct Introduce;

impl Service for Introduce {
    type State = ();

    fn open(&mut self, ctx: &mut Context<'_>) {
        let peer = ctx
            .peer_addr()
            .map_or_else(|e| format!("?{e}"), |p| p.to_string());
        let via = match ctx.proxied_by() {
            Some(Ok(b)) => format!("via {b}"),
            Some(Err(e)) => format!("via ?{e}"),
            None => "direct".into(),
        };
        let tlvs = ctx.proxy_header().map_or(0, |h| h.tlvs().count());
        ctx.write(format!("{peer} {via} tlvs={tlvs}\n").as_bytes());
    }

    fn data(&mut self, _: &mut (), data: &[u8], ctx: &mut Context<'_>) {
        ctx.write(data);
    }

    fn close(&mut self, _: (), _: ConnId) {}
}

/// A loop with one `tcp://127.0.0.1:0` listener expecting `version`, deadline 500 ms.
fn server(version: ProxyProtocol) -> LibServer {
    server_with_deadline(version, Duration::from_millis(500))
}

fn server_with_deadline(version: ProxyProtocol, deadline: Duration) -> LibServer {
    let builder = Builder::new()
        .listen_with(
            "tcp://127.0.0.1:0".parse().unwrap(),
            ListenOptions::default().proxy(version),
        )
        .handshake_timeout(deadline);
    LibServer::start(builder, Introduce)
}

/// A loop with one `tls://127.0.0.1:0` listener expecting `version`, with the
/// certificates of `pki`.
fn tls_server(pki: &Pki, version: ProxyProtocol) -> LibServer {
    let config = sockloop::tls::server_config(&pki.server_cert, &pki.server_key, None).unwrap();
    let builder = Builder::new().tls(config).listen_with(
        "tls://127.0.0.1:0".parse().unwrap(),
        ListenOptions::default().proxy(version),
    );
    LibServer::start(builder, Introduce)
}

fn client_addr() -> SocketAddr {
    "203.0.113.9:41000".parse().unwrap()
}

fn frontend_addr() -> SocketAddr {
    "192.0.2.1:5001".parse().unwrap()
}

/// Writes `chunks` one write each (with TCP_NODELAY, each its own segment), shuts the
/// write side and reads everything until the server closes.
fn converse(addr: SocketAddr, chunks: &[&[u8]]) -> String {
    converse_from(addr, chunks).1
}

/// [`converse`], with the client's own address, which the service names when no
/// header named another.
fn converse_from(addr: SocketAddr, chunks: &[&[u8]]) -> (SocketAddr, String) {
    let mut s = connect(addr);
    let local = s.local_addr().unwrap();
    for c in chunks {
        s.write_all(c).unwrap();
    }
    s.shutdown(Shutdown::Write).unwrap();
    (
        local,
        String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned(),
    )
}

#[test]
fn a_header_with_data_behind_it_in_one_segment() {
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let srv = server(ProxyProtocol::Any);
        let mut first = proxy::encode(version, client_addr(), frontend_addr());
        first.extend_from_slice(b"hello");
        let (local, got) = converse_from(srv.addr(), &[&first]);
        assert_eq!(got, format!("203.0.113.9:41000 via {local} tlvs=0\nhello"));
        let stats = srv.stop();
        assert_eq!((stats.proxy_headers, stats.proxy_errors), (1, 0));
        assert_eq!(stats.bytes_in, first.len() as u64);
    }
}

#[test]
fn a_header_one_byte_at_a_time() {
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let srv = server(ProxyProtocol::Any);
        let header = proxy::encode(version, client_addr(), frontend_addr());
        let mut chunks: Vec<&[u8]> = header.chunks(1).collect();
        chunks.push(b"after");
        let got = converse(srv.addr(), &chunks);
        assert!(got.starts_with("203.0.113.9:41000 via 127.0.0.1:"), "{got}");
        assert!(got.ends_with(" tlvs=0\nafter"), "{got}");
        let stats = srv.stop();
        assert_eq!((stats.proxy_headers, stats.proxy_errors), (1, 0));
    }
}

/// TLVs arrive with the header and reach the service; a header whose TLVs run past
/// its end is an error.
#[test]
fn tlvs_reach_the_service() {
    use ppp::v2;
    let srv = server(ProxyProtocol::V2);
    let header = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client_addr(), frontend_addr()),
    )
    .write_tlv(proxy::tlv::AUTHORITY, b"example.com")
    .unwrap()
    .write_tlv(proxy::tlv::UNIQUE_ID, b"abc")
    .unwrap()
    .build()
    .unwrap();
    let got = converse(srv.addr(), &[&header]);
    assert!(got.ends_with(" tlvs=2\n"), "{got}");
    srv.stop();
}

/// HAProxy's health checks send LOCAL; version 1 has UNKNOWN. Both keep the socket's
/// own addresses and are no error.
#[test]
fn local_and_unknown_keep_the_socket_addresses() {
    let srv = server(ProxyProtocol::Any);
    let local = ppp::v2::Builder::new(
        ppp::v2::Version::Two | ppp::v2::Command::Local,
        ppp::v2::AddressFamily::Unspecified | ppp::v2::Protocol::Unspecified,
    )
    .build()
    .unwrap();
    for header in [&local[..], b"PROXY UNKNOWN\r\n"] {
        let (me, got) = converse_from(srv.addr(), &[header, b"x"]);
        assert_eq!(got, format!("{me} direct tlvs=0\nx"));
    }
    let stats = srv.stop();
    assert_eq!(
        (stats.proxy_headers, stats.proxy_local, stats.proxy_errors),
        (2, 2, 0)
    );
}

/// A client that connects straight to a listener expecting a header is closed, and
/// counted; the loop goes on serving the next one.
#[test]
fn a_client_without_a_header_is_closed_and_the_loop_goes_on() {
    let srv = server(ProxyProtocol::V2);
    for garbage in [
        &b"hello, is this echo?\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        let got = converse(srv.addr(), &[garbage]);
        assert_eq!(
            got, "",
            "no byte of a refused connection reaches the service"
        );
    }
    let header = proxy::encode(ProxyVersion::V2, client_addr(), frontend_addr());
    let got = converse(srv.addr(), &[&header, b"ok"]);
    assert!(got.starts_with("203.0.113.9:41000 via"), "{got}");
    let stats = srv.stop();
    assert_eq!((stats.proxy_errors, stats.proxy_headers), (2, 1));
}

/// A plain port check (connect, close, nothing sent) is no error either: balancers
/// without PROXY health checks do exactly that.
#[test]
fn a_connect_and_close_is_not_an_error() {
    let srv = server(ProxyProtocol::Any);
    assert_eq!(converse(srv.addr(), &[]), "");
    let stats = srv.stop();
    assert_eq!(
        (stats.accepted, stats.proxy_errors, stats.closed),
        (1, 0, 1)
    );
}

/// A version 1 line that never ends is refused once it passes 107 bytes; a version 2
/// header announcing more than the bound, from its 16 fixed bytes.
#[test]
fn over_long_headers_are_refused() {
    let srv = server(ProxyProtocol::Any);
    let mut v1 = b"PROXY TCP4 ".to_vec();
    v1.resize(200, b'1');
    assert_eq!(converse(srv.addr(), &[&v1]), "");
    let mut v2 = proxy::encode(ProxyVersion::V2, client_addr(), frontend_addr());
    v2[14..16].copy_from_slice(&(proxy::MAX_V2_HEADER as u16).to_be_bytes());
    // Only the fixed part is sent, and the connection stays open from this side: the
    // refusal must come from the length alone, long before the deadline.
    let mut s = connect(srv.addr());
    s.write_all(&v2[..16]).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed without a byte");
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "refused at once"
    );
    let stats = srv.stop();
    assert_eq!((stats.proxy_errors, stats.proxy_timeouts), (2, 0));
}

/// A header that does not complete in time (a client that sends half and waits) is
/// closed at the deadline and counted as a timeout; one that sends nothing too.
#[test]
fn an_unfinished_header_is_closed_at_the_deadline() {
    let srv = server(ProxyProtocol::Any);
    let header = proxy::encode(ProxyVersion::V2, client_addr(), frontend_addr());
    let start = Instant::now();
    let mut half = connect(srv.addr());
    half.write_all(&header[..10]).unwrap();
    let mut silent = connect(srv.addr());
    for s in [&mut half, &mut silent] {
        let mut buf = [0u8; 1];
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "closed after {waited:?}, the deadline is 500 ms"
    );
    let stats = srv.stop();
    assert_eq!((stats.proxy_timeouts, stats.proxy_errors), (2, 0));
}

/// The header comes before the TLS handshake on a `tls://` listener, as balancers
/// send it; the handshake bytes that arrive with it are not lost.
#[test]
fn tls_after_the_header() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let srv = tls_server(&pki, ProxyProtocol::V2);
    let header = proxy::encode(ProxyVersion::V2, client_addr(), frontend_addr());
    // Python's ssl module over a socket that first carries the header.
    let script = format!(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))
raw.sendall(bytes.fromhex({hex:?}))
s = ctx.wrap_socket(raw, server_hostname="localhost")
s.sendall(b"secret")
data = b""
while not data.endswith(b"secret"):
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(s.version(), data.decode())
"#,
        ca = pki.ca.display().to_string(),
        hex = header
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let out = util::child::run_python(&script, srv.addr());
    assert!(out.starts_with("TLSv1."), "{out}");
    assert!(out.contains("203.0.113.9:41000 via 127.0.0.1:"), "{out}");
    assert!(out.trim_end().ends_with("secret"), "{out}");
    let stats = srv.stop();
    assert_eq!((stats.proxy_headers, stats.tls_handshakes), (1, 1));
}

/// The header and the TLS ClientHello in one segment, as a balancer's first write
/// often carries them: the handshake bytes read with the header go back to the TLS
/// session, and the handshake completes.
#[test]
fn tls_client_hello_in_the_same_segment_as_the_header() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let srv = tls_server(&pki, ProxyProtocol::Any);
    let mut tls = pki.client_session(false);
    let mut first = proxy::encode(ProxyVersion::V1, client_addr(), frontend_addr());
    tls.write_tls(&mut first).unwrap();
    let mut tcp = connect(srv.addr());
    tcp.write_all(&first).unwrap();
    let mut stream = rustls::StreamOwned::new(tls, tcp);
    stream.write_all(b"ping\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b"ping\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("203.0.113.9:41000 via 127.0.0.1:"), "{got}");
    drop(stream);
    let stats = srv.stop();
    assert_eq!(
        (stats.proxy_headers, stats.tls_handshakes, stats.tls_errors),
        (1, 1, 0)
    );
}

/// A Unix stream listener takes a header too (a balancer on the same host), and a
/// version 2 header may carry Unix addresses.
#[test]
fn unix_listener_with_a_header() {
    let dir = TempDir::new();
    let path = dir.join("pp.sock");
    let builder = Builder::new()
        .listen_with(
            format!("unix:{}", path.display()).parse().unwrap(),
            ListenOptions::default().proxy(ProxyProtocol::V1),
        )
        .handshake_timeout(Duration::from_millis(500));
    let srv = LibServer::start(builder, Introduce);
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(util::net::DEADLINE)).unwrap();
    let header = proxy::encode(ProxyVersion::V1, client_addr(), frontend_addr());
    s.write_all(&header).unwrap();
    s.write_all(b"over unix").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(
        got.starts_with("203.0.113.9:41000 via unix:(unnamed)"),
        "{got}"
    );
    assert!(got.ends_with("over unix"), "{got}");
    srv.stop();
}

/// `?proxy=` belongs to stream listeners: a datagram socket with it is refused.
#[test]
fn a_datagram_socket_cannot_expect_a_header() {
    let err = Builder::new()
        .listen_with(
            "udp://127.0.0.1:0".parse().unwrap(),
            ListenOptions::default().proxy(ProxyProtocol::V2),
        )
        .build(Introduce)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("stream listeners only"), "{err}");
}

/// What a connection sent, and what became of it.
#[derive(Debug, Clone)]
enum Sent {
    /// Random bytes.
    Garbage(Vec<u8>),
    /// A good header cut short, then silence.
    Truncated(ProxyVersion, usize),
    /// A good header with one byte changed, then data.
    Damaged(ProxyVersion, usize, u8),
}

fn version() -> impl Strategy<Value = ProxyVersion> {
    prop_oneof![Just(ProxyVersion::V1), Just(ProxyVersion::V2)]
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..200).prop_map(Sent::Garbage),
        (version(), 0..28usize).prop_map(|(v, n)| Sent::Truncated(v, n)),
        (version(), 0..28usize, any::<u8>()).prop_map(|(v, i, b)| Sent::Damaged(v, i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever comes where a header should be, over a real socket: the connection is
    /// answered or closed within the deadline, never left hanging, and the loop serves
    /// a good connection afterwards.
    #[test]
    fn fuzzed_headers_never_stall_the_loop(inputs in proptest::collection::vec(sent(), 1..4)) {
        let srv = server_with_deadline(ProxyProtocol::Any, Duration::from_millis(200));
        for input in &inputs {
            let bytes = match input {
                Sent::Garbage(b) => b.clone(),
                Sent::Truncated(v, n) => {
                    let h = proxy::encode(*v, client_addr(), frontend_addr());
                    h[..(*n).min(h.len() - 1)].to_vec()
                }
                Sent::Damaged(v, i, b) => {
                    let mut h = proxy::encode(*v, client_addr(), frontend_addr());
                    let i = *i % h.len();
                    h[i] = *b;
                    h.extend_from_slice(b"data");
                    h
                }
            };
            let mut s = TcpStream::connect(srv.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&bytes).unwrap();
            let start = Instant::now();
            let mut sink = Vec::new();
            // The server either answers (a damaged header that is still a header) and
            // waits for our end, or closes on us; either way it never stalls.
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        sink.extend_from_slice(&buf[..n]);
                        if sink.contains(&b'\n') {
                            let _ = s.shutdown(Shutdown::Write);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("no answer and no close within 5 s: {e}"),
                }
            }
            prop_assert!(start.elapsed() < Duration::from_secs(2));
        }
        let good = proxy::encode(ProxyVersion::V2, client_addr(), frontend_addr());
        let got = converse(srv.addr(), &[&good, b"still here"]);
        prop_assert!(got.ends_with("still here"), "{}", got);
        let stats = srv.stop();
        prop_assert_eq!(stats.accepted, inputs.len() as u64 + 1);
        prop_assert_eq!(stats.active, 0);
    }
}

/// The peer a service sees is the header's: `PeerAddr` from a version 2 header with
/// IPv6 addresses.
#[test]
fn ipv6_client_through_a_v2_header() {
    let srv = server(ProxyProtocol::V2);
    let header = proxy::encode(
        ProxyVersion::V2,
        "[2001:db8::9]:41000".parse().unwrap(),
        "[2001:db8::1]:5001".parse().unwrap(),
    );
    let got = converse(srv.addr(), &[&header]);
    let expected = PeerAddr::Inet("[2001:db8::9]:41000".parse().unwrap()).to_string();
    assert!(got.starts_with(&format!("{expected} via ")), "{got}");
    srv.stop();
}
