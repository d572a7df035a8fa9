//! UDP and Unix datagram sockets: echo, safety rules, bursts, errors.

pub mod util;

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::{Duration, Instant};

use sockloop::services::{Echo, Line};
use sockloop::{Builder, Stats};
use util::child::{Proc, run_python};
use util::fs::TempDir;
use util::net::{DEADLINE, pattern, wait_until};
use util::procfs::udp_socket_drops;
use util::server::LibServer;

fn udp_server(batch: bool) -> LibServer {
    let b = Builder::new()
        .listen("udp://127.0.0.1:0".parse().unwrap())
        .datagram_batch(batch);
    LibServer::start(b, Echo)
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

fn round_trip(s: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    s.send_to(msg, to).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, from) = s.recv_from(&mut buf).expect("a reply");
    assert_eq!(from, to, "the reply came from the server's address");
    buf.truncate(n);
    buf
}

/// Counters add up: every datagram received was answered, dropped or failed, and
/// nothing else.
fn assert_accounted(stats: &Stats) {
    assert_eq!(
        stats.datagrams_in,
        stats.datagrams_out + stats.datagrams_dropped + stats.datagram_errors,
        "{stats:?}"
    );
}

#[test]
fn udp_echo_of_every_size_batched_and_one_by_one() {
    for batch in [true, false] {
        let server = udp_server(batch);
        let c = client();
        for size in [1, 1400, 65_507, 0] {
            let msg = pattern(size, size as u64);
            assert_eq!(
                round_trip(&c, server.addr(), &msg),
                msg,
                "size {size}, batch {batch}"
            );
        }
        let stats = server.stop();
        assert_eq!(stats.datagrams_in, 4);
        assert_eq!(stats.datagrams_out, 4);
        assert_eq!(stats.bytes_out, 1 + 1400 + 65_507);
        assert_accounted(&stats);
    }
}

#[test]
fn many_clients_each_get_their_own_answers() {
    for batch in [true, false] {
        let server = udp_server(batch);
        let clients: Vec<UdpSocket> = (0..8).map(|_| client()).collect();
        // Each round every client has a datagram in flight at once; a burst much
        // larger than the socket buffer would be dropped by the kernel (another test).
        for round in 0..50u32 {
            for (i, c) in clients.iter().enumerate() {
                c.send_to(
                    format!("client {i} datagram {round}").as_bytes(),
                    server.addr(),
                )
                .unwrap();
            }
            for (i, c) in clients.iter().enumerate() {
                let mut buf = [0u8; 64];
                let n = c
                    .recv(&mut buf)
                    .expect("every datagram answered on loopback");
                assert_eq!(&buf[..n], format!("client {i} datagram {round}").as_bytes());
            }
        }
        let stats = server.stop();
        assert_eq!(stats.datagrams_out, 400);
        if batch {
            assert!(
                stats.datagram_recv_calls < stats.datagrams_in,
                "batching took one call per datagram: {stats:?}"
            );
        }
    }
}

/// The client pattern from Python's documentation: `sendto`, then `recvfrom`.
#[test]
fn python_udp_client() {
    let server = Proc::serve(&["--listen", "udp://127.0.0.1:0"]);
    let addr = server.addr(0);
    let script = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(10)
    for msg in [b"hello", b"", bytes(range(256)) * 5]:
        s.sendto(msg, (host, port))
        data, addr = s.recvfrom(65535)
        assert data == msg, (data, msg)
        assert addr == (host, port), addr
print("ok")
"#;
    assert_eq!(run_python(script, addr).trim(), "ok");
}

#[test]
fn a_client_gone_before_its_reply_does_not_disturb_the_server() {
    let server = udp_server(true);
    for _ in 0..20 {
        let gone = client();
        gone.send_to(b"nobody will read this", server.addr())
            .unwrap();
        drop(gone);
    }
    let c = client();
    assert_eq!(
        round_trip(&c, server.addr(), b"still serving"),
        b"still serving"
    );
    let stats = server.stop();
    assert_eq!(stats.datagrams_in, 21);
    assert_accounted(&stats);
}

/// A UDP socket on `127.0.0.1:PORT`, a port below 1024. Binding one needs root or
/// CAP_NET_BIND_SERVICE (CI runs as root); without either the test fails here, as it
/// cannot send from a service port any other way. Another run of these tests on the
/// same machine may hold the port for a moment: wait for it, up to [`DEADLINE`].
fn bind_service_port(port: u16) -> UdpSocket {
    let start = Instant::now();
    loop {
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if e.kind() == ErrorKind::AddrInUse && start.elapsed() < DEADLINE => {
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == ErrorKind::PermissionDenied => panic!(
                "cannot bind 127.0.0.1:{port}: {e}: a port below 1024 needs root or \
                 CAP_NET_BIND_SERVICE (CI runs the tests as root)"
            ),
            Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Two echo services pointed at each other by one spoofed datagram would bounce it
/// forever; datagrams from the classic service ports are not answered.
#[test]
fn a_datagram_from_source_port_7_gets_no_reply_and_is_counted() {
    let server = Proc::serve(&["--listen", "udp://127.0.0.1:0"]);
    let sock = bind_service_port(7);
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(b"storm?", server.addr(0)).unwrap();
    let mut buf = [0u8; 16];
    assert!(sock.recv_from(&mut buf).is_err(), "a reply went to port 7");
    wait_until("the drop to be counted", || {
        server.stats()["datagrams_dropped"] == 1
    });
    // The same datagram from an ordinary port is answered.
    assert_eq!(round_trip(&client(), server.addr(0), b"storm?"), b"storm?");
}

#[test]
fn service_ports_can_be_allowed_explicitly() {
    let server = Proc::serve(&["--listen", "udp://127.0.0.1:0", "--allow-service-ports"]);
    let sock = bind_service_port(13);
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(round_trip(&sock, server.addr(0), b"allowed"), b"allowed");
}

/// A burst far larger than the socket buffers: the kernel drops what does not fit,
/// which it counts on the socket; the server counts what it drops itself. Every
/// datagram sent is accounted for, and the server serves on.
#[test]
fn a_burst_larger_than_the_socket_buffer_loses_only_counted_datagrams() {
    const N: u64 = 20_000;
    let server = Proc::serve(&["--listen", "udp://127.0.0.1:0"]);
    let addr = server.addr(0);
    let c = client();
    let payload = [0x5au8; 1000];
    for _ in 0..N {
        c.send_to(&payload, addr).unwrap();
    }
    // Wait until the server has taken everything the kernel kept for it.
    let mut last = u64::MAX;
    wait_until("the server to go quiet", || {
        let now = server.stats()["datagrams_in"];
        let quiet = now == last;
        last = now;
        quiet
    });
    let stats = server.stats();
    let kernel_drops = udp_socket_drops(server.child.id(), addr.port());
    assert_eq!(
        stats["datagrams_in"] + kernel_drops,
        N,
        "{stats:?}, kernel drops {kernel_drops}"
    );
    assert_eq!(
        stats["datagrams_in"],
        stats["datagrams_out"] + stats["datagrams_dropped"] + stats["datagram_errors"]
    );
    assert_eq!(
        round_trip(&client(), addr, b"after the burst"),
        b"after the burst"
    );
}

#[test]
fn line_mode_datagrams_are_one_line_each() {
    let b = Builder::new().listen("udp://127.0.0.1:0".parse().unwrap());
    let server = LibServer::start(b, Line::new(32));
    let c = client();
    assert_eq!(
        round_trip(&c, server.addr(), b"no newline needed"),
        b"no newline needed"
    );
    let long = [b'x'; 40];
    assert_eq!(round_trip(&c, server.addr(), &long), b"ERR line too long\n");
    // An error longer than the request would amplify it: not sent, counted.
    let short_server = LibServer::start(
        Builder::new().listen("udp://127.0.0.1:0".parse().unwrap()),
        Line::new(4),
    );
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.send_to(b"12345", short_server.addr()).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        c.recv_from(&mut buf).is_err(),
        "an amplified reply was sent"
    );
    assert_eq!(short_server.stop().datagrams_dropped, 1);
}

#[test]
fn unixgram_echo_to_a_bound_client_and_unnamed_senders_are_counted() {
    let dir = TempDir::new();
    let path = dir.join("echo.dgram");
    let b = Builder::new().listen(format!("unixgram:{}", path.display()).parse().unwrap());
    let server = LibServer::start(b, Echo);

    let me = dir.join("client.dgram");
    let c = UnixDatagram::bind(&me).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    for msg in [&b"over a unix datagram socket"[..], b""] {
        c.send_to(msg, &path).unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg);
        assert_eq!(from.as_pathname(), Some(path.as_path()));
    }
    // A sender without an address cannot be answered: counted, not fatal.
    let anon = UnixDatagram::unbound().unwrap();
    anon.send_to(b"who am I", &path).unwrap();
    // A datagram longer than the receive buffer is dropped, never cut short.
    let big = UnixDatagram::bind(dir.join("big.dgram")).unwrap();
    big.send_to(&vec![1u8; 100 * 1024], &path)
        .expect("a 100 KiB Unix datagram fits the default send buffer");
    c.send_to(b"after", &path).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"after");
    let stats = server.stop();
    assert_eq!(stats.datagrams_dropped, 2, "{stats:?}");
    assert_accounted(&stats);
    assert!(!path.exists(), "the socket file outlived the server");
}
