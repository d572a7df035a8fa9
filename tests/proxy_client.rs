//! The clients as a load balancer: `sockloop send --proxy` and `sockloop bench
//! --proxy` against servers that expect a PROXY protocol header, and against plain
//! listeners that show the exact bytes on the wire.

pub mod util;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpListener;
use std::thread;

use util::bench::clean_report;
use util::child::{Proc, expect_failure, run_bin, run_bin_with_stdin, send_ok};
use util::fs::TempDir;
use util::net::{DEADLINE, pattern, wait_until};
use util::pki::Pki;

/// The distinct clients the server's debug log names (`conn N from ADDR via ...`)
/// that start with `prefix`.
fn proxied_sources(log: &str, prefix: &str) -> HashSet<String> {
    log.lines()
        .filter(|l| l.contains(" via "))
        .filter_map(|l| l.split_once(" from ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|addr| addr.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn send_with_a_proxy_header_is_echoed_byte_exact_in_both_versions() {
    let server = Proc::serve_debug(&[
        "--listen",
        "tcp://127.0.0.1:0?proxy=v2",
        "--listen",
        "tcp://127.0.0.1:0?proxy=v1",
    ]);
    let message = "hello through a balancer\r\n";
    assert_eq!(
        send_ok(&[&server.url(0), message, "--proxy", "v2"]),
        message.as_bytes()
    );
    assert_eq!(server.stats()["proxy_headers"], 1);
    // Without --proxy-source the header names the connection's own address: the
    // client it reports is the socket's peer.
    wait_until("the header in the log", || {
        server.stderr().contains("PROXY v2 header")
    });
    let log = server.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("conn 1 from ") && l.contains("PROXY v2 header"))
        .unwrap_or_else(|| panic!("no header line for conn 1:\n{log}"));
    let (_, rest) = line.split_once("conn 1 from ").expect("a client");
    let (client, rest) = rest.split_once(" via ").expect("a socket peer");
    let (peer, _) = rest.split_once(": PROXY").expect("the header's version");
    assert!(client.starts_with("127.0.0.1:"), "{line}");
    assert_eq!(client, peer, "{line}");

    assert_eq!(
        send_ok(&[
            &server.url(1),
            message,
            "--proxy",
            "v1",
            "--proxy-source",
            "203.0.113.9:41000",
        ]),
        message.as_bytes()
    );
    let stats = server.stats();
    assert_eq!((stats["proxy_headers"], stats["accepted"]), (2, 2));
    assert_eq!(stats["proxy_errors"], 0);
    wait_until("the made-up client in the log", || {
        server
            .stderr()
            .contains("conn 2 from 203.0.113.9:41000 via 127.0.0.1:")
    });

    // Version 2 with an IPv6 client, and a large input: the header is taken off and
    // every byte after it comes back.
    let big = pattern(300_000, 7);
    let out = run_bin_with_stdin(
        &[
            "send",
            &server.url(0),
            "--proxy",
            "v2",
            "--proxy-source",
            "[2001:db8::9]:5000",
        ],
        &big,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == big, "the echo differs from the input");
    wait_until("the IPv6 client in the log", || {
        server
            .stderr()
            .contains("conn 3 from [2001:db8::9]:5000 via ")
    });
}

/// What a plain listener receives from `send --proxy`: the header, exactly as the
/// specification writes it, then the message — and before a TLS handshake.
#[test]
fn the_header_is_the_first_bytes_on_the_wire_even_before_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    let capture = |listener: &TcpListener, n: usize| {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let mut got = vec![0u8; n];
        s.read_exact(&mut got).expect("the client's first bytes");
        got
    };

    let sender = thread::spawn(move || {
        run_bin(&[
            "send",
            &format!("tcp://127.0.0.1:{port}"),
            "hello",
            "--proxy",
            "v1",
            "--proxy-source",
            "203.0.113.9:41000",
        ])
    });
    let expected = format!("PROXY TCP4 203.0.113.9 127.0.0.1 41000 {port}\r\nhello");
    assert_eq!(
        String::from_utf8_lossy(&capture(&listener, expected.len())),
        expected
    );
    drop(sender.join());

    // TLS: the version 2 header in the clear, then a TLS handshake record (the
    // ClientHello: content type 22, version 3.x). Nobody answers it; the client fails.
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let ca = pki.ca.to_str().expect("a UTF-8 path").to_string();
    let sender = thread::spawn(move || {
        run_bin(&[
            "send",
            &format!("tls://127.0.0.1:{port}"),
            "hello",
            "--ca",
            &ca,
            "--proxy",
            "v2",
            "--proxy-source",
            "203.0.113.9:41000",
        ])
    });
    let got = capture(&listener, 28 + 2);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    // Version 2, PROXY; TCP over IPv4; 12 bytes of addresses.
    header.extend([0x21, 0x11, 0, 12]);
    header.extend([203, 0, 113, 9, 127, 0, 0, 1]);
    header.extend(41000u16.to_be_bytes());
    header.extend(port.to_be_bytes());
    assert_eq!(&got[..28], &header[..]);
    assert_eq!(&got[28..], &[0x16, 0x03], "no TLS record after the header");
    drop(listener);
    let out = sender.join().expect("the sender thread");
    assert_eq!(out.status.code(), Some(1), "no server, no handshake");
}

#[test]
fn send_with_a_proxy_header_over_tls_and_unix() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let sock = dir.join("proxied.sock");
    let unix = format!("unix:{}?proxy=v2", sock.display());
    let server = Proc::serve_debug(&[
        "--listen",
        "tls://127.0.0.1:0?proxy=v2",
        "--listen",
        &unix,
        "--tls-cert",
        pki.server_cert.to_str().expect("a UTF-8 path"),
        "--tls-key",
        pki.server_key.to_str().expect("a UTF-8 path"),
    ]);
    let tls = server.url(0);
    let ca = pki.ca.to_str().expect("a UTF-8 path");
    assert_eq!(
        send_ok(&[&tls, "over TLS", "--ca", ca, "--proxy", "v2"]),
        b"over TLS"
    );
    let stats = server.stats();
    assert_eq!(
        (
            stats["proxy_headers"],
            stats["tls_handshakes"],
            stats["tls_errors"]
        ),
        (1, 1, 0)
    );

    assert_eq!(
        send_ok(&[&server.url(1), "over Unix", "--proxy", "v2"]),
        b"over Unix"
    );
    assert_eq!(server.stats()["proxy_headers"], 2);
    // A Unix socket has no address of its own: the header names the made-up client
    // bench gives its first connection.
    wait_until("the Unix connection's client in the log", || {
        server.stderr().contains("conn 2 from 198.18.0.1:1024")
    });
}

#[test]
fn bench_gives_every_connection_a_proxy_header_and_a_client_of_its_own() {
    let server = Proc::serve_debug(&["--listen", "tcp://127.0.0.1:0?proxy=v2"]);
    let r = clean_report(&[
        "bench",
        &server.url(0),
        "--proxy",
        "v2",
        "--conns",
        "20",
        "--depth",
        "2",
        "--size",
        "100",
        "--secs",
        "1",
        "--json",
    ]);
    assert_eq!(r["connected"], 20, "{r}");
    assert_eq!(r["proxy"], "v2", "{r}");
    assert!(r["msgs"].as_u64().unwrap_or(0) > 100, "{r}");
    let stats = server.stats();
    assert_eq!(
        (
            stats["proxy_headers"],
            stats["accepted"],
            stats["proxy_errors"]
        ),
        (20, 20, 0)
    );
    let sources = proxied_sources(&server.stderr(), "198.18.");
    assert_eq!(sources.len(), 20, "{sources:?}");
}

/// Reconnect mode: every new connection, not only the first of each slot, gets a
/// header and a client not seen before; an IPv6 server sees clients in 2001:2::/48.
#[test]
fn bench_reconnecting_names_a_new_client_each_time() {
    let server = Proc::serve_debug(&["--listen", "tcp://[::1]:0?proxy=v1"]);
    clean_report(&[
        "bench",
        &server.url(0),
        "--proxy",
        "v1",
        "--reconnect",
        "--conns",
        "3",
        "--secs",
        "0.5",
        "--json",
    ]);
    let stats = server.stats();
    assert_eq!(stats["proxy_headers"], stats["accepted"]);
    assert_eq!(stats["proxy_errors"], 0);
    assert!(stats["accepted"] > 10, "{stats:?}");
    let sources = proxied_sources(&server.stderr(), "[2001:2::");
    assert_eq!(
        sources.len() as u64,
        stats["accepted"],
        "a client named twice, or not in 2001:2::/48"
    );
}

#[test]
fn proxy_usage_errors_are_one_line_and_exit_2() {
    for (args, needle) in [
        (
            vec!["send", "tcp://127.0.0.1:9", "x", "--proxy", "v3"],
            "unknown PROXY protocol version 'v3'",
        ),
        (
            vec!["send", "udp://127.0.0.1:9", "x", "--proxy", "v2"],
            "--proxy needs a stream URL",
        ),
        (
            vec!["send", "unixgram:/tmp/nothing.dgram", "x", "--proxy", "v1"],
            "--proxy needs a stream URL",
        ),
        (
            vec![
                "send",
                "tcp://127.0.0.1:9",
                "x",
                "--proxy",
                "v2",
                "--proxy-source",
                "garbage",
            ],
            "--proxy-source: 'garbage' is not IP:PORT",
        ),
        (
            vec![
                "send",
                "tcp://127.0.0.1:9",
                "x",
                "--proxy",
                "v2",
                "--proxy-source",
                "::1:80",
            ],
            "--proxy-source",
        ),
        (
            vec![
                "send",
                "tcp://127.0.0.1:9",
                "x",
                "--proxy-source",
                "1.2.3.4:5",
            ],
            "--proxy-source needs --proxy",
        ),
        (
            vec!["bench", "tcp://127.0.0.1:9", "--proxy", "v3"],
            "unknown PROXY protocol version 'v3'",
        ),
        (
            vec!["bench", "udp://127.0.0.1:9", "--proxy", "v2"],
            "--proxy needs a stream address",
        ),
    ] {
        let err = expect_failure(&args, 2, needle);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
