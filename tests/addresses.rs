//! Address families and listener mixes: IPv6, both wildcards on one port, every scheme
//! side by side in one process with per-listener modes.

pub mod util;

use std::net::{SocketAddr, TcpListener, UdpSocket};

use nix::sys::signal::Signal;
use util::child::{Proc, bin, last_stats};
use util::fs::TempDir;
use util::net::{DEADLINE, exchange, read_to_eof};

fn udp_round_trip(to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let bind = if to.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let s = UdpSocket::bind(bind).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.send_to(msg, to).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, from) = s.recv_from(&mut buf).expect("a reply");
    assert_eq!(from, to);
    buf.truncate(n);
    buf
}

#[test]
fn ipv6_tcp_and_udp_on_the_loopback() {
    let server = Proc::serve(&["--listen", "tcp://[::1]:0", "--listen", "udp://[::1]:0"]);
    assert!(server.ready[0].starts_with("listening tcp://[::1]:"));
    assert!(server.ready[1].starts_with("listening udp://[::1]:"));
    assert_eq!(exchange(server.addr(0), b"six"), b"six");
    assert_eq!(
        udp_round_trip(server.addr(1), b"six over udp"),
        b"six over udp"
    );
}

/// `[::]` is bound IPv6-only, so the IPv4 wildcard can share its port.
#[test]
fn both_wildcards_on_one_port() {
    let port = {
        // A port free on both families at this moment.
        let probe = TcpListener::bind("0.0.0.0:0").unwrap();
        let p = probe.local_addr().unwrap().port();
        drop(probe);
        p
    };
    let tcp4 = format!("tcp://0.0.0.0:{port}");
    let tcp6 = format!("tcp://[::]:{port}");
    let udp4 = format!("udp://0.0.0.0:{port}");
    let udp6 = format!("udp://[::]:{port}");
    let server = Proc::serve(&[
        "--listen", &tcp4, "--listen", &tcp6, "--listen", &udp4, "--listen", &udp6,
    ]);
    assert_eq!(
        server.ready,
        vec![
            format!("listening {tcp4}"),
            format!("listening {tcp6}"),
            format!("listening {udp4}"),
            format!("listening {udp6}"),
        ]
    );
    // Traffic only to the loopback addresses of each family.
    let v4: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    assert_eq!(exchange(v4, b"four"), b"four");
    assert_eq!(exchange(v6, b"six"), b"six");
    assert_eq!(udp_round_trip(v4, b"four/udp"), b"four/udp");
    assert_eq!(udp_round_trip(v6, b"six/udp"), b"six/udp");
}

#[test]
fn every_scheme_side_by_side_with_per_listener_modes() {
    let dir = TempDir::new();
    let sock = dir.join("line.sock");
    let dgram = dir.join("echo.dgram");
    let unix_url = format!("unix:{}?mode=line", sock.display());
    let dgram_url = format!("unixgram:{}", dgram.display());
    let mut server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0?mode=line",
        "--listen",
        &unix_url,
        "--listen",
        &dgram_url,
        "--max-line",
        "8",
    ]);
    assert_eq!(
        server.ready[2],
        format!("listening unix:{}", sock.display()),
        "no query in the ready line"
    );
    let long = b"longer than eight\n";
    // TCP echoes, whatever the line length.
    assert_eq!(exchange(server.addr(0), long), long);
    // UDP in line mode: one datagram is one line.
    assert_eq!(udp_round_trip(server.addr(1), b"short"), b"short");
    assert_eq!(udp_round_trip(server.addr(1), long), b"ERR line too long\n");
    // Unix stream in line mode.
    let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut u, long).unwrap();
    assert_eq!(read_to_eof(&mut u), b"ERR line too long\n");
    // Unix datagram echoes.
    let me = dir.join("me.dgram");
    let c = std::os::unix::net::UnixDatagram::bind(&me).unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.send_to(long, &dgram).unwrap();
    let mut buf = [0u8; 64];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], long);

    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
    assert!(
        !sock.exists() && !dgram.exists(),
        "socket files left behind"
    );
    let stats = last_stats(&server.stderr());
    assert_eq!(stats["datagrams_in"], 3);
    assert_eq!(stats["datagrams_out"], 3);
}

#[test]
fn perm_is_only_for_unix_sockets() {
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "tcp://127.0.0.1:0?perm=0600"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("perm="));
}
