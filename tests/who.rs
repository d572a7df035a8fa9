//! Who mode, `--banner` and `--prefix`, through the binary: every key of the who line
//! checked against what the test knows of its own sockets, over TCP, behind a PROXY
//! header, over UDP, a Unix socket and mutual TLS; banners in echo mode, prefixes in
//! line mode, and bad templates refused before anything is bound.

pub mod util;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::Command;

use util::child::{Proc, bin, expect_failure};
use util::fs::TempDir;
use util::net::{DEADLINE, connect, exchange, pattern, read_n, read_to_eof, write_in_background};
use util::pki::Pki;

/// The who line's pairs, in order. Panics unless it is one line of `key=value` pairs
/// separated by single spaces and ending in `\n`.
fn pairs(line: &[u8]) -> Vec<(String, String)> {
    let line = std::str::from_utf8(line).expect("a UTF-8 line");
    let body = line
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no final newline: {line:?}"));
    assert!(!body.contains('\n'), "more than one line: {line:?}");
    body.split(' ')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("'{kv}' is not key=value in {line:?}"));
            assert!(!v.is_empty(), "empty value for {k} in {line:?}");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn keys(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().map(|(k, _)| k.as_str()).collect()
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {pairs:?}"))
}

/// The machine's host name, read without the code under test.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read the host name")
        .trim_end()
        .to_string()
}

/// Reads one `\n`-terminated line (the socket's timeout is the deadline).
fn read_line<R: Read>(r: &mut BufReader<R>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("a line");
    assert!(line.ends_with('\n'), "no whole line before EOF: {line:?}");
    line
}

#[test]
fn who_over_tcp_names_the_client_this_end_the_listener_host_worker_and_conn() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--mode", "who"]);
    for n in 1..=2 {
        let mut s = connect(server.addr(0));
        let me = s.local_addr().unwrap();
        let got = read_to_eof(&mut s);
        let p = pairs(&got);
        assert_eq!(
            keys(&p),
            ["peer", "local", "listener", "host", "worker", "conn"],
            "{p:?}"
        );
        assert_eq!(value(&p, "peer"), me.to_string());
        assert_eq!(value(&p, "local"), server.addr(0).to_string());
        assert_eq!(value(&p, "listener"), server.url(0));
        assert_eq!(value(&p, "host"), hostname());
        assert_eq!(value(&p, "worker"), "0");
        assert_eq!(value(&p, "conn"), n.to_string());
    }
    let stats = server.stats();
    assert_eq!(stats["accepted"], 2, "{stats:?}");
    assert_eq!(stats["closed"], 2, "{stats:?}");
}

#[test]
fn behind_a_proxy_v2_header_who_and_the_banner_name_the_client_and_the_balancer() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0?proxy=v2",
        "--mode",
        "who",
        "--banner",
        "{peer} via {via}",
    ]);
    let client: SocketAddr = "203.0.113.9:41000".parse().unwrap();
    let mut s = connect(server.addr(0));
    let balancer = s.local_addr().unwrap();
    s.write_all(&sockloop::proxy::encode(
        sockloop::proxy::ProxyVersion::V2,
        client,
        server.addr(0),
    ))
    .unwrap();
    let got = String::from_utf8(read_to_eof(&mut s)).expect("UTF-8");
    let (banner, who) = got.split_once('\n').expect("a banner line first");
    assert_eq!(banner, format!("{client} via {balancer}"));
    let p = pairs(who.as_bytes());
    assert_eq!(
        keys(&p),
        ["peer", "via", "local", "listener", "host", "worker", "conn"],
        "{p:?}"
    );
    assert_eq!(value(&p, "peer"), client.to_string());
    assert_eq!(value(&p, "via"), balancer.to_string());
    assert_eq!(value(&p, "local"), server.addr(0).to_string());
}

#[test]
fn who_over_udp_answers_a_padded_request_and_drops_a_short_one() {
    let server = Proc::serve(&["--listen", "udp://127.0.0.1:0", "--mode", "who"]);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    let to = server.addr(0);
    // A short request first: it must get no reply. The padded one after it is
    // answered, and datagrams between two loopback sockets keep their order, so the
    // first reply to arrive tells which one was answered.
    c.send_to(b"x", to).unwrap();
    c.send_to(&[b' '; 512], to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = c
        .recv_from(&mut buf)
        .expect("a reply to the padded request");
    assert_eq!(from, to);
    let p = pairs(&buf[..n]);
    assert_eq!(
        keys(&p),
        ["peer", "local", "listener", "host", "worker"],
        "{p:?}"
    );
    assert_eq!(value(&p, "peer"), c.local_addr().unwrap().to_string());
    assert_eq!(value(&p, "local"), to.to_string());
    assert_eq!(value(&p, "listener"), format!("udp://{to}"));
    assert_eq!(value(&p, "host"), hostname());
    assert_eq!(value(&p, "worker"), "0");
    // Nothing else is on its way: the short request was dropped, and counted.
    let stats = server.stats();
    assert_eq!(stats["datagrams_in"], 2, "{stats:?}");
    assert_eq!(stats["datagrams_out"], 1, "{stats:?}");
    assert_eq!(stats["datagrams_dropped"], 1, "{stats:?}");
    c.set_nonblocking(true).unwrap();
    let e = c.recv_from(&mut buf).expect_err("no second reply");
    assert_eq!(e.kind(), ErrorKind::WouldBlock);
}

#[test]
fn who_over_a_unix_stream_socket() {
    let dir = TempDir::new();
    let path = dir.join("who.sock");
    let listen = format!("unix:{}", path.display());
    let server = Proc::serve(&["--listen", &listen, "--mode", "who"]);
    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let p = pairs(&read_to_eof(&mut s));
    assert_eq!(
        keys(&p),
        ["peer", "local", "listener", "host", "worker", "conn"],
        "{p:?}"
    );
    // The client never bound a name; the server's end is the socket file.
    assert_eq!(value(&p, "peer"), "unix:(unnamed)");
    assert_eq!(value(&p, "local"), listen);
    assert_eq!(value(&p, "listener"), listen);
    assert_eq!(server.ready[0], format!("listening {listen}"));
}

/// A TLS client of the binary, with or without the client certificate.
fn tls_who(pki: &Pki, client_ca: bool, identity: bool) -> Vec<(String, String)> {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "tls://127.0.0.1:0", "--mode", "who"])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key);
    if client_ca {
        cmd.arg("--tls-client-ca").arg(&pki.ca);
    }
    let server = Proc::spawn(cmd, 1);
    let tcp = connect(server.addr(0));
    let me = tcp.local_addr().unwrap();
    let mut s = pki.client_stream(identity, tcp);
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("no clean close_notify after {got:?}: {e}"));
    let p = pairs(&got);
    assert_eq!(value(&p, "peer"), me.to_string());
    assert_eq!(value(&p, "local"), server.addr(0).to_string());
    assert_eq!(value(&p, "listener"), format!("tls://{}", server.addr(0)));
    let version = s.conn.protocol_version().expect("a version");
    let suite = s.conn.negotiated_cipher_suite().expect("a suite").suite();
    assert_eq!(
        value(&p, "tls"),
        format!(
            "{}/{}",
            format!("{version:?}").replace('_', "."),
            suite.as_str().expect("a named suite")
        )
    );
    p
}

#[test]
fn who_over_mutual_tls_reports_the_session_and_the_client_certificate() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let p = tls_who(&pki, true, true);
    assert_eq!(
        keys(&p),
        [
            "peer",
            "local",
            "listener",
            "host",
            "worker",
            "conn",
            "tls",
            "tls_client"
        ],
        "{p:?}"
    );
    assert!(value(&p, "tls").starts_with("TLSv1."), "{p:?}");
    assert_eq!(value(&p, "tls_client"), "CN=client.test");

    // Without a client certificate there is no tls_client.
    let p = tls_who(&pki, false, false);
    assert_eq!(keys(&p).last(), Some(&"tls"), "{p:?}");
}

#[test]
fn a_banner_with_every_placeholder_comes_before_a_byte_exact_echo() {
    let mut cmd = Command::new(bin());
    cmd.args([
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--banner",
        "{host}|{peer}|{via}|{local}|{conn}|{worker}|{env:WHO_TEST_POD}|{env:WHO_TEST_UNSET}|{{x}}",
    ])
    .env("WHO_TEST_POD", "pod-7")
    .env_remove("WHO_TEST_UNSET");
    let server = Proc::spawn(cmd, 1);
    for n in 1..=2 {
        let s = connect(server.addr(0));
        let me = s.local_addr().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let banner = read_line(&mut r);
        assert_eq!(
            banner,
            format!(
                "{}|{me}||{}|{n}|0|pod-7||{{x}}\n",
                hostname(),
                server.addr(0)
            )
        );
        // Echo after the banner: every byte back, nothing added, nothing lost.
        let writer = write_in_background(&s, pattern(100_000, n), true);
        let mut back = Vec::new();
        r.read_to_end(&mut back).expect("the echo");
        writer.join().unwrap().expect("write");
        assert!(back == pattern(100_000, n), "the echo differs");
    }
}

#[test]
fn a_prefix_goes_before_every_line_in_line_mode_and_echo_stays_exact() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0?mode=line",
        "--listen",
        "tcp://127.0.0.1:0",
        "--prefix",
        "[{conn}@{worker}]",
    ]);
    // Several lines in one write, a line across two writes, and a tail at EOF.
    let mut s = connect(server.addr(0));
    s.write_all(b"a\nbb\r\nccc\nd").unwrap();
    let want = b"[1@0]a\n[1@0]bb\r\n[1@0]ccc\n";
    assert_eq!(read_n(&mut s, want.len()), want);
    s.write_all(b"d\nee").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"[1@0]dd\n[1@0]ee");
    // Many lines in one read: more than one writev takes, all prefixed.
    let lines: Vec<u8> = (0..3000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let want: Vec<u8> = (0..3000)
        .flat_map(|i| format!("[2@0]{i}\n").into_bytes())
        .collect();
    assert!(
        exchange(server.addr(0), &lines) == want,
        "prefixed lines differ"
    );
    // The echo listener beside it is unchanged.
    assert_eq!(exchange(server.addr(1), b"as\nis\n"), b"as\nis\n");
    // An over-long line still gets the plain error.
    let long = vec![b'x'; 9000];
    assert_eq!(
        exchange(server.addr(0), &long),
        sockloop::services::TOO_LONG
    );
}

#[test]
fn bad_templates_are_usage_errors_before_anything_is_bound() {
    let dir = TempDir::new();
    let sock = dir.join("s.sock");
    let listen = format!("unix:{}", sock.display());
    for (args, needle) in [
        (["--banner", "{nope}"], "unknown placeholder '{nope}'"),
        (["--banner", "hello {peer"], "not closed"),
        (["--prefix", "{env:}"], "unknown placeholder '{env:}'"),
    ] {
        let mut all = vec!["serve", "--listen", &listen, "--mode", "line"];
        all.extend(args);
        let err = expect_failure(&all, 2, needle);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(args[0]), "names the option: {err}");
        assert!(
            !sock.exists(),
            "a listener was bound before the usage error"
        );
    }
    // A prefix that no listener would print.
    let err = expect_failure(
        &["serve", "--listen", &listen, "--prefix", "> "],
        2,
        "--prefix applies to line mode",
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !sock.exists(),
        "a listener was bound before the usage error"
    );
}
