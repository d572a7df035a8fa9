//! TLS listeners: echo and line over rustls, half-close, mutual TLS, bad input on the
//! TLS port, the handshake deadline, and clients nobody here wrote (`openssl s_client`,
//! Python's `ssl`).

pub mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use sockloop::Builder;
use sockloop::services::{Mode, Modes};
use util::child::{Proc, bin, expect_failure, run_bin, run_python};
use util::fs::TempDir;
use util::net::{DEADLINE, closed_by_peer, connect, pattern, wait_until};
use util::pki::Pki;
use util::server::LibServer;

type TlsConn = StreamOwned<ClientConnection, TcpStream>;

/// A library server with one `tls://127.0.0.1:0` listener.
fn tls_server(pki: &Pki, client_ca: bool, builder: Builder, mode: Mode) -> LibServer {
    let ca = client_ca.then_some(pki.ca.as_path());
    let config = sockloop::tls::server_config(&pki.server_cert, &pki.server_key, ca)
        .expect("server TLS config");
    LibServer::start(
        builder
            .listen("tls://127.0.0.1:0".parse().unwrap())
            .tls(config),
        Modes::new(mode),
    )
}

fn client_config(pki: &Pki, identity: bool) -> Arc<ClientConfig> {
    let id = identity.then_some((pki.client_cert.as_path(), pki.client_key.as_path()));
    sockloop::tls::client_config(Some(&pki.ca), id).expect("client TLS config")
}

/// A blocking rustls client connection (the handshake runs on first use).
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsConn {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    tcp.set_write_timeout(Some(DEADLINE)).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
        .expect("client connection");
    StreamOwned::new(conn, tcp)
}

/// Reads exactly `n` plaintext bytes.
fn read_exact_tls(s: &mut TlsConn, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).expect("read the echo");
    got
}

/// Sends close_notify and shuts the TCP write side: a TLS half-close.
fn half_close(s: &mut TlsConn) {
    s.conn.send_close_notify();
    while s.conn.wants_write() {
        s.conn.write_tls(&mut s.sock).expect("send close_notify");
    }
    s.sock.shutdown(Shutdown::Write).expect("shutdown write");
}

/// Reads plaintext until the server's close_notify. Panics on a close without one.
fn read_to_close_notify(s: &mut TlsConn) -> Vec<u8> {
    let mut all = Vec::new();
    match s.read_to_end(&mut all) {
        Ok(_) => all,
        Err(e) => panic!("no clean close_notify after {} bytes: {e}", all.len()),
    }
}

/// A read or write that gave up after the socket timeout: the server neither answered
/// nor closed the connection.
fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The connection was closed: end of stream, or an error other than a timeout.
fn closed(r: &io::Result<usize>) -> bool {
    match r {
        Ok(n) => *n == 0,
        Err(e) => !timed_out(e),
    }
}

#[test]
fn rustls_client_echoes_and_the_server_counts_the_handshake() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Echo);
    let mut s = tls_connect(server.addr(), client_config(&pki, false));
    s.write_all(b"hello over tls").unwrap();
    assert_eq!(read_exact_tls(&mut s, 14), b"hello over tls");
    // Many small round trips on one connection.
    for i in 0..200u32 {
        let msg = format!("message {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_exact_tls(&mut s, msg.len()), msg.as_bytes());
    }
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(s);
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, 1);
    assert_eq!(stats.tls_errors, 0);
}

#[test]
fn the_binary_logs_each_handshake_and_keeps_max_conns_over_tls() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "tls://127.0.0.1:0", "--max-conns", "1"])
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .env("RUST_LOG", "debug");
    let server = Proc::spawn(cmd, 1);
    let mut a = tls_connect(server.addr(0), client_config(&pki, false));
    a.write_all(b"first").unwrap();
    assert_eq!(read_exact_tls(&mut a, 5), b"first");
    wait_until("the handshake in the log", || {
        server.stderr().contains("TLS established: TLSv1_3, TLS13_")
    });

    // Over the limit: accepted and closed at once, with no handshake.
    let mut b = tls_connect(server.addr(0), client_config(&pki, false));
    let r = b.write_all(b"second").and_then(|_| b.read(&mut [0u8; 16]));
    assert!(
        closed(&r),
        "a connection over --max-conns was served or left open: {r:?}"
    );
    a.write_all(b"still here").unwrap();
    assert_eq!(read_exact_tls(&mut a, 10), b"still here");
    let stats = server.stats();
    assert_eq!(stats["rejected"], 1, "{stats:?}");
    assert_eq!(stats["tls_handshakes"], 1, "{stats:?}");
}

#[test]
fn half_close_over_tls_gets_everything_back_then_close_notify() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Echo);
    let mut s = tls_connect(server.addr(), client_config(&pki, false));
    let data = pattern(300_000, 5);
    s.write_all(&data).unwrap();
    half_close(&mut s);
    let back = read_to_close_notify(&mut s);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echo differs");
}

#[test]
fn eight_mib_through_sockloop_send_over_tls() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Echo);
    let data = pattern(8 << 20, 9);
    let mut child = Command::new(bin())
        .args(["send", &format!("tls://localhost:{}", server.addr().port())])
        .arg("--ca")
        .arg(&pki.ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sockloop send");
    // The client reads while it writes: 8 MiB does not fit the socket buffers, so a
    // client that wrote everything first would deadlock against backpressure.
    let mut stdin = child.stdin.take().unwrap();
    let input = data.clone();
    let feeder = thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("sockloop send finishes");
    feeder.join().unwrap().expect("feed stdin");
    assert!(
        out.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "echo differs");
    let stats = server.stop();
    assert!(
        stats.bytes_in == data.len() as u64,
        "bytes_in {}",
        stats.bytes_in
    );
}

#[test]
fn line_mode_over_tls() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Line);
    let mut s = tls_connect(server.addr(), client_config(&pki, false));
    s.write_all(b"first line\r\nsecond").unwrap();
    assert_eq!(read_exact_tls(&mut s, 12), b"first line\r\n");
    s.write_all(b" half\nno newline at the end").unwrap();
    assert_eq!(read_exact_tls(&mut s, 12), b"second half\n");
    half_close(&mut s);
    assert_eq!(read_to_close_notify(&mut s), b"no newline at the end");

    // An over-long line is refused over TLS as over TCP.
    let mut s = tls_connect(server.addr(), client_config(&pki, false));
    s.write_all(&vec![b'x'; 100_000]).unwrap();
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got);
    assert_eq!(got, b"ERR line too long\n");
    // The connection ends, cleanly or with a reset; a timeout means it stayed open.
    assert!(
        !r.as_ref().is_err_and(timed_out),
        "the connection stayed open after the error: {r:?}"
    );
}

#[test]
fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, true, Builder::new(), Mode::Echo);
    let url = format!("tls://127.0.0.1:{}", server.addr().port());
    let ca = pki.ca.to_str().unwrap();

    // No certificate: the handshake fails, on the command line and in a library client.
    // In TLS 1.3 the client's side of the handshake is over before the server's
    // verdict arrives; the client learns it from the alert.
    expect_failure(
        &["send", &url, "hello", "--ca", ca],
        1,
        "CertificateRequired",
    );
    let mut s = tls_connect(server.addr(), client_config(&pki, false));
    let r = s.write_all(b"hello").and_then(|_| s.read(&mut [0u8; 16]));
    assert!(
        r.as_ref().is_err_and(|e| !timed_out(e)),
        "a client without a certificate was served or left waiting: {r:?}"
    );

    // A certificate from another CA: refused.
    expect_failure(
        &[
            "send",
            &url,
            "hello",
            "--ca",
            ca,
            "--cert",
            pki.stranger_cert.to_str().unwrap(),
            "--key",
            pki.stranger_key.to_str().unwrap(),
        ],
        1,
        "UnknownCA",
    );

    // The right certificate: served.
    let out = run_bin(&[
        "send",
        &url,
        "hello mtls",
        "--ca",
        ca,
        "--cert",
        pki.client_cert.to_str().unwrap(),
        "--key",
        pki.client_key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello mtls");
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, 1);
    assert!(stats.tls_errors >= 3, "tls_errors {}", stats.tls_errors);
}

/// Connects with plain TCP, writes `junk`, and reads until the server closes.
/// Returns what came back (at most a TLS alert).
fn junk_is_refused(addr: SocketAddr, junk: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(junk).unwrap();
    let mut back = Vec::new();
    match s.read_to_end(&mut back) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close a connection that sent junk: {e}"),
    }
    back
}

#[test]
fn plain_text_and_garbage_on_the_tls_port_close_only_that_connection() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Echo);
    let mut bystander = tls_connect(server.addr(), client_config(&pki, false));
    bystander.write_all(b"before").unwrap();
    assert_eq!(read_exact_tls(&mut bystander, 6), b"before");

    let back = junk_is_refused(server.addr(), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // Nothing but (at most) an alert record: content type 21.
    assert!(back.is_empty() || back[0] == 21, "{back:?}");
    junk_is_refused(server.addr(), &pattern(64 * 1024, 77));
    // A ClientHello-shaped header announcing a huge record, then nothing sane.
    junk_is_refused(server.addr(), &[22, 3, 1, 0xff, 0xff, 1, 2, 3]);

    bystander.write_all(b"after").unwrap();
    assert_eq!(read_exact_tls(&mut bystander, 5), b"after");
    let mut fresh = tls_connect(server.addr(), client_config(&pki, false));
    fresh.write_all(b"fresh").unwrap();
    assert_eq!(read_exact_tls(&mut fresh, 5), b"fresh");
    drop((bystander, fresh));
    let stats = server.stop();
    assert_eq!(stats.tls_errors, 3);
    assert_eq!(stats.tls_handshakes, 2);
}

#[test]
fn a_silent_client_is_closed_at_the_handshake_deadline_and_an_idle_one_at_the_idle_timeout() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(
        &pki,
        false,
        Builder::new()
            .handshake_timeout(Duration::from_millis(400))
            .idle_timeout(Duration::from_millis(1500)),
        Mode::Echo,
    );
    // Established before the handshake deadline passes: that deadline no longer
    // applies, the idle timeout does.
    let mut talker = tls_connect(server.addr(), client_config(&pki, false));
    talker.write_all(b"x").unwrap();
    assert_eq!(read_exact_tls(&mut talker, 1), b"x");

    let start = Instant::now();
    let mut silent = connect(server.addr());
    assert!(
        closed_by_peer(&mut silent),
        "the silent client was not closed"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "closed too early: {waited:?}"
    );

    // The talker outlived the handshake deadline and still works.
    talker.write_all(b"still here").unwrap();
    assert_eq!(read_exact_tls(&mut talker, 10), b"still here");
    // Then, left idle, it is closed by the idle timeout.
    let mut buf = [0u8; 1];
    let r = talker.read(&mut buf);
    assert!(closed(&r), "expected the idle connection closed, got {r:?}");
    let stats = server.stop();
    assert_eq!(stats.handshake_timeouts, 1);
    assert_eq!(stats.idle_timeouts, 1);
}

#[test]
fn a_client_that_never_reads_is_paused_not_buffered() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = Proc::serve(&[
        "--listen",
        "tls://127.0.0.1:0",
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
    ]);
    let rss_before = server.rss_kb();
    let mut s = tls_connect(server.addr(0), client_config(&pki, false));
    s.write_all(b"hi").unwrap();
    assert_eq!(read_exact_tls(&mut s, 2), b"hi");
    // Write without reading until the writes stall: the server stopped reading us.
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = thread::spawn(move || {
        let chunk = vec![b'z'; 16 * 1024];
        for _ in 0..(256 << 20) / chunk.len() {
            if s.write_all(&chunk).is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    wait_until("the server to pause the connection", || {
        server.stats()["backpressure_pauses"] >= 1
    });
    let mut last = written.load(Ordering::Relaxed);
    wait_until("the client's writes to stall", || {
        thread::sleep(Duration::from_millis(200));
        let now = written.load(Ordering::Relaxed);
        std::mem::replace(&mut last, now) == now
    });
    let stalled_at = written.load(Ordering::Relaxed);
    assert!(stalled_at < 64 << 20, "{stalled_at} bytes taken");
    // A write that failed ends the writer, and its count stalls too.
    assert!(
        !writer.is_finished(),
        "the writes failed after {stalled_at} bytes: the connection was closed, not paused"
    );
    let grown = server.rss_kb().saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "server grew by {grown} KiB");
    drop(server);
    let _ = writer.join();
}

#[test]
fn tls_command_line_errors_are_usage_errors() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let (cert, key) = (
        pki.server_cert.to_str().unwrap(),
        pki.server_key.to_str().unwrap(),
    );
    let listen = ["serve", "--listen", "tls://127.0.0.1:0"];
    let with = |extra: &[&str]| -> Vec<String> {
        listen
            .iter()
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>, needle: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_failure(&refs, 2, needle);
    };
    run(with(&[]), "--tls-cert");
    run(with(&["--tls-cert", cert]), "--tls-key");
    run(
        with(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key]),
        "/nonexistent/cert.pem",
    );
    run(
        with(&["--tls-cert", cert, "--tls-key", "/nonexistent/key.pem"]),
        "/nonexistent/key.pem",
    );
    // A key that belongs to another certificate.
    run(
        with(&[
            "--tls-cert",
            cert,
            "--tls-key",
            pki.client_key.to_str().unwrap(),
        ]),
        "key",
    );
    // Files that are not PEM at all.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, b"not a certificate\n").unwrap();
    run(
        with(&["--tls-cert", junk.to_str().unwrap(), "--tls-key", key]),
        "no certificate",
    );
    run(
        with(&["--tls-cert", cert, "--tls-key", junk.to_str().unwrap()]),
        "private key",
    );
    run(
        with(&[
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-client-ca",
            "/nonexistent/ca.pem",
        ]),
        "/nonexistent/ca.pem",
    );
    // Client side: TLS options on a plain URL, a missing CA file.
    expect_failure(
        &[
            "send",
            "tcp://127.0.0.1:9",
            "x",
            "--ca",
            pki.ca.to_str().unwrap(),
        ],
        2,
        "tls://",
    );
    expect_failure(
        &[
            "send",
            "tls://127.0.0.1:9",
            "x",
            "--ca",
            "/nonexistent/ca.pem",
        ],
        2,
        "/nonexistent/ca.pem",
    );
    expect_failure(
        &["bench", "tcp://127.0.0.1:9", "--no-resume"],
        2,
        "--no-resume",
    );
}

#[test]
fn the_wrong_server_name_fails_the_handshake() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Echo);
    let url = format!("tls://127.0.0.1:{}", server.addr().port());
    let ca = pki.ca.to_str().unwrap();
    let err = expect_failure(
        &[
            "send",
            &url,
            "x",
            "--ca",
            ca,
            "--server-name",
            "example.com",
        ],
        1,
        "handshake",
    );
    assert!(err.contains("not valid for name"), "{err}");
    // A CA that did not sign the server's certificate.
    expect_failure(
        &["send", &url, "x", "--ca", pki.other_ca.to_str().unwrap()],
        1,
        "UnknownIssuer",
    );
}

#[test]
fn sockloop_bench_over_tls_checks_every_byte() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Echo);
    let url = format!("tls://localhost:{}", server.addr().port());
    let ca = pki.ca.to_str().unwrap();
    for extra in [
        &["--conns", "4", "--depth", "4", "--size", "1000"][..],
        &["--conns", "2", "--reconnect"][..],
        &["--conns", "2", "--reconnect", "--no-resume"][..],
    ] {
        let mut args = vec!["bench", &url, "--secs", "0.5", "--json", "--ca", ca];
        args.extend_from_slice(extra);
        let out = run_bin(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
        assert_eq!(report["errors"], 0, "{stdout}");
        assert!(report["msgs"].as_u64().unwrap() > 0, "{stdout}");
        // Connect time runs to the handshake done; the first reply from then on.
        for key in ["connect_max_us", "first_reply_max_us"] {
            assert!(report[key].as_u64().unwrap() > 0, "{key}: {stdout}");
        }
    }
}

// ------------------------------------------------------------------ other clients

#[test]
fn openssl_s_client_round_trip() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Echo);
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(server.addr().to_string())
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&pki.ca)
        .args(["-quiet", "-no_ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello from openssl\n").unwrap();
    stdin.flush().unwrap();
    // Wait for the echo before closing stdin: s_client quits at end of input.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE);
    drop(stdin);
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(
        line.as_deref(),
        Ok("hello from openssl\n"),
        "s_client stderr: {err}"
    );
    assert!(status.success(), "s_client failed: {err}");
    assert!(err.contains("verify return:1"), "{err}");
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, 1);
}

#[test]
fn python_ssl_round_trip() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, true, Builder::new(), Mode::Line);
    let script = format!(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
ctx.load_cert_chain({cert:?}, {key:?})
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"one\ntwo\n")
        got = b""
        while got.count(b"\n") < 2:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        print(s.version(), got.decode().replace("\n", "|"))
        s.unwrap()
"#,
        ca = pki.ca.to_str().unwrap(),
        cert = pki.client_cert.to_str().unwrap(),
        key = pki.client_key.to_str().unwrap(),
    );
    let out = run_python(&script, server.addr());
    assert_eq!(out.trim(), "TLSv1.3 one|two|");
}

#[test]
fn chargen_and_chat_run_over_tls_unchanged() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki, false, Builder::new(), Mode::Chargen);
    let mut s = tls_connect(server.addr(), client_config(&pki, false));
    let cycle = sockloop::services::Chargen::new().pattern().to_vec();
    for _ in 0..3 {
        assert!(
            read_exact_tls(&mut s, cycle.len()) == cycle,
            "chargen over TLS"
        );
    }
    drop(s);

    let server = tls_server(&pki, false, Builder::new(), Mode::Chat);
    let mut a = BufReader::new(tls_connect(server.addr(), client_config(&pki, false)));
    let mut b = BufReader::new(tls_connect(server.addr(), client_config(&pki, false)));
    b.get_mut().write_all(b"ready\n").unwrap();
    let mut line = String::new();
    a.read_line(&mut line).unwrap();
    assert_eq!(line, "<2> ready\n");
    a.get_mut().write_all(b"secret\n").unwrap();
    line.clear();
    b.read_line(&mut line).unwrap();
    assert_eq!(line, "<1> secret\n");
}
