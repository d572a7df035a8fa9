//! The client commands: `sockloop send` and `sockloop bench`, against our server, a
//! Python server, and servers written here to misbehave.

pub mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::thread;

use util::bench::{clean_report, report};
use util::child::{Proc, bin, expect_failure, run_bin, run_bin_with_stdin};
use util::fs::TempDir;
use util::net::pattern;

fn sockloop(args: &[&str]) -> std::process::Output {
    run_bin(args)
}

fn send_stdin(url: &str, input: &[u8]) -> std::process::Output {
    run_bin_with_stdin(&["send", url], input)
}

/// A server on every scheme: TCP over IPv4 and IPv6, UDP, Unix stream and datagram.
fn every_scheme(dir: &TempDir) -> Proc {
    let sock = format!("unix:{}", dir.join("s.sock").display());
    let dgram = format!("unixgram:{}", dir.join("s.dgram").display());
    Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "tcp://[::1]:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        &sock,
        "--listen",
        &dgram,
    ])
}

#[test]
fn send_over_every_scheme() {
    let dir = TempDir::new();
    let server = every_scheme(&dir);
    for ready in &server.ready {
        let url = ready.strip_prefix("listening ").unwrap();
        let out = sockloop(&["send", url, "hello, no newline"]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"hello, no newline", "{url}");
    }
}

#[test]
fn send_reads_stdin_completely() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
    ]);
    // Larger than every buffer on the way: reading and writing must overlap.
    let big = pattern(20 << 20, 21);
    let url = server.ready[0].strip_prefix("listening ").unwrap();
    let out = send_stdin(url, &big);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == big, "echoed stdin differs");
    let url = server.ready[1].strip_prefix("listening ").unwrap();
    let out = send_stdin(url, b"one datagram from stdin");
    assert_eq!(out.stdout, b"one datagram from stdin");
}

#[test]
fn send_fails_cleanly() {
    // Refused: nobody listens on a port we just closed.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = expect_failure(
        &["send", &format!("tcp://127.0.0.1:{port}"), "x"],
        1,
        "refused",
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    expect_failure(
        &["send", "tcp://no-such-host.invalid:5001", "x"],
        1,
        "no-such-host.invalid",
    );
    // A UDP socket that never answers: the timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("udp://{}", silent.local_addr().unwrap());
    let t = std::time::Instant::now();
    expect_failure(
        &["send", &url, "anyone?", "--timeout", "0.5"],
        1,
        "no reply",
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(450));
    expect_failure(&["send", "ftp://x:1", "x"], 2, "unknown scheme");
}

/// An echo server written with Python's `socketserver`, as its documentation shows.
#[test]
fn send_talks_to_a_python_socketserver() {
    let script = r#"
import socketserver, sys
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
with socketserver.TCPServer(("127.0.0.1", 0), Echo) as srv:
    print(srv.server_address[1], flush=True)
    srv.handle_request()
"#;
    let mut py = Command::new("python3")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(py.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!("tcp://127.0.0.1:{}", line.trim());
    let data = pattern(3 << 20, 22);
    let out = send_stdin(&url, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data);
    assert!(py.wait().unwrap().success());
}

#[test]
fn bench_finds_no_errors_against_sockloop_on_every_scheme() {
    let dir = TempDir::new();
    let server = every_scheme(&dir);
    for ready in &server.ready {
        let url = ready.strip_prefix("listening ").unwrap();
        let out = sockloop(&[
            "bench", url, "--conns", "20", "--depth", "4", "--size", "100", "--secs", "0.5",
            "--json",
        ]);
        let r = report(&out);
        assert!(out.status.success(), "{url}: {r}");
        assert_eq!(r["errors"], 0, "{url}: {r}");
        assert_eq!(r["connected"], 20, "{url}: {r}");
        assert!(r["msgs"].as_u64().unwrap() > 100, "{url}: {r}");
    }
    // Reconnect mode and several threads.
    let tcp = server.ready[0].strip_prefix("listening ").unwrap();
    let r = report(&sockloop(&[
        "bench",
        tcp,
        "--reconnect",
        "--conns",
        "4",
        "--secs",
        "0.5",
        "--json",
    ]));
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["conns_per_sec"].as_f64().unwrap() > 100.0, "{r}");
    let r = report(&sockloop(&[
        "bench",
        tcp,
        "--conns",
        "10",
        "--threads",
        "2",
        "--secs",
        "0.5",
        "--json",
    ]));
    assert_eq!(
        (r["errors"].as_u64(), r["threads"].as_u64()),
        (Some(0), Some(2)),
        "{r}"
    );
}

#[test]
fn bench_json_has_every_field() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = server.ready[0].strip_prefix("listening ").unwrap();
    let out = sockloop(&["bench", url, "--secs", "0.3", "--warmup", "0.1", "--json"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "one JSON object on one line"
    );
    let r = report(&out);
    for key in [
        "conns",
        "msgs",
        "msgs_per_sec",
        "mb_per_sec",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "errors",
    ] {
        assert!(
            r.get(key).is_some_and(|v| v.is_number()),
            "{key} missing in {r}"
        );
    }
    // Compare numbers, not Option<u64>: as_u64() of a fractional value is None, and
    // None <= None holds.
    let us = |key: &str| {
        r[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number in {r}"))
    };
    assert!(
        us("p50_us") <= us("p99_us") && us("p99_us") <= us("max_us"),
        "percentiles out of order: {r}"
    );
    assert!(
        out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains('\r'),
        "no progress line when stderr is not a terminal"
    );
}

/// A server that echoes but flips one byte of every connection's stream: the bench
/// must notice, report it, and exit non-zero.
#[test]
fn bench_catches_a_corrupting_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut total = 0usize;
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if total <= 100 && 100 < total + n {
                        buf[100 - total] ^= 0x20;
                    }
                    total += n;
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let out = sockloop(&[
        "bench",
        &format!("tcp://{addr}"),
        "--conns",
        "3",
        "--secs",
        "0.5",
        "--json",
    ]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert!(
        r["errors"].as_u64().unwrap() >= 3,
        "every connection is corrupted once: {r}"
    );
    assert!(
        r["first_error"].as_str().unwrap().contains("wrong bytes"),
        "{r}"
    );
}

/// A UDP server that answers with one byte changed, and one that answers twice.
#[test]
fn bench_catches_a_corrupting_datagram_server() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n_seen = 0u64;
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            n_seen += 1;
            if n_seen % 10 == 0 {
                buf[n - 1] ^= 1;
            }
            let _ = sock.send_to(&buf[..n], peer);
        }
    });
    let out = sockloop(&[
        "bench",
        &format!("udp://{addr}"),
        "--secs",
        "0.5",
        "--timeout",
        "0.2",
        "--json",
    ]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r}");
    assert!(r["errors"].as_u64().unwrap() > 0, "{r}");
}

/// Open loop: the rate is the client's, not the server's.
#[test]
fn open_loop_hits_its_target_rate() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = server.ready[0].strip_prefix("listening ").unwrap();
    let r = report(&sockloop(&[
        "bench", url, "--conns", "10", "--rate", "5000", "--secs", "1", "--json",
    ]));
    let rate = r["msgs_per_sec"].as_f64().unwrap();
    assert!(
        (4500.0..=5500.0).contains(&rate),
        "{rate} msg/s for a 5000 target: {r}"
    );
    assert_eq!(r["mode"], "open");
    assert_eq!(r["errors"], 0);
}

#[test]
fn bench_rejects_impossible_settings() {
    expect_failure(&["bench", "udp://127.0.0.1:9", "--size", "4"], 2, "--size");
    expect_failure(
        &["bench", "udp://127.0.0.1:9", "--reconnect"],
        2,
        "--reconnect",
    );
    expect_failure(&["bench", "tcp://127.0.0.1:9", "--conns", "0"], 2, "conns");
}

/// On a terminal, a progress line is redrawn once a second on stderr. `script` runs the
/// command on a pseudo-terminal and records what it printed.
#[test]
fn progress_line_on_a_terminal() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = server.ready[0].strip_prefix("listening ").unwrap();
    let dir = TempDir::new();
    let log = dir.join("typescript");
    let cmd = format!("{} bench {url} --secs 2.5 --json", bin());
    let status = Command::new("script")
        .args(["-qfec", &cmd, &log.display().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("script (util-linux) runs");
    assert!(status.success());
    let screen = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(
        screen.contains("msg/s") && screen.contains("measuring"),
        "no progress line: {screen}"
    );
    assert!(
        screen.contains("\"errors\":0"),
        "the report still comes: {screen}"
    );
}

/// `--bind` spreads the connections over the given source addresses, round robin, and
/// needs an internet stream address.
#[test]
fn bench_bind_spreads_connections_over_the_given_sources() {
    let server = Proc::serve_debug(&["--listen", "tcp://127.0.0.1:0"]);
    let url = server.url(0);
    clean_report(&[
        "bench",
        &url,
        "--conns",
        "6",
        "--secs",
        "0.3",
        "--bind",
        "127.0.0.2,127.0.0.3",
        "--json",
    ]);
    util::net::wait_until("six accepts in the log", || {
        server.stderr().matches("accepted from 127.0.0.").count() >= 6
    });
    let log = server.stderr();
    assert_eq!(log.matches("accepted from 127.0.0.2:").count(), 3, "{log}");
    assert_eq!(log.matches("accepted from 127.0.0.3:").count(), 3, "{log}");
    expect_failure(
        &["bench", "unix:/nonexistent.sock", "--bind", "127.0.0.2"],
        2,
        "--bind needs a tcp:// or tls:// address",
    );
    expect_failure(&["bench", &url, "--bind", "not-an-ip"], 2, "not-an-ip");
}

/// When the source addresses run out of ephemeral ports, the report says how many
/// connections the run could open (`connected`) and, in its first error, why the rest
/// failed and what helps; three `--bind` addresses then open all of them. Run in a
/// network namespace of its own (`unshare -n`, as root), whose port range is ten ports
/// wide, so that running out takes ten connections rather than 28,000.
#[test]
fn bench_says_how_many_connections_the_ports_allowed_and_why() {
    let dir = TempDir::new();
    let script = format!(
        r#"set -e
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="40000 40009"
"{bin}" serve --listen tcp://127.0.0.1:5001 >"$DIR/ready" 2>/dev/null &
server=$!
# The ready line, within 10 s.
i=0
until grep -q '^listening' "$DIR/ready"; do
  i=$((i + 1)); [ $i -lt 500 ] || {{ echo "no ready line" >&2; exit 1; }}
  sleep 0.02
done
"{bin}" bench tcp://127.0.0.1:5001 --conns 30 --secs 0.3 --bind 127.0.0.1 \
  --json --allow-errors >"$DIR/one.json"
"{bin}" bench tcp://127.0.0.1:5001 --conns 30 --secs 0.3 \
  --bind 127.0.0.1,127.0.0.2,127.0.0.3 --json >"$DIR/three.json"
kill $server
"#,
        bin = bin()
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .env("DIR", dir.path())
        // ip and sysctl live in /usr/sbin, not on every PATH.
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "a network namespace of its own (needs root, unshare and ip): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join(name)).expect("report");
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    let one = read("one.json");
    let connected = one["connected"].as_u64().expect("connected");
    assert!((1..=10).contains(&connected), "{one}");
    assert_eq!(one["other_errors"].as_u64(), Some(30 - connected), "{one}");
    assert_eq!(one["errors"].as_u64(), Some(30 - connected), "{one}");
    let why = one["first_error"].as_str().expect("first_error");
    assert!(why.contains("no free local port left"), "{why}");
    assert!(why.contains("--bind"), "{why}");
    let three = read("three.json");
    assert_eq!(three["connected"], 30, "{three}");
    assert_eq!(three["errors"], 0, "{three}");
}
