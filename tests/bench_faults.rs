//! `sockloop bench` counts failures by kind. Each test runs a server written here to
//! fail in one way, on purpose and a known number of times, and checks that the
//! report counts exactly that kind, exactly as often as the server misbehaved (or
//! within bounds where timing makes an exact count impossible).

pub mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use util::bench::{count, echo_messages, report, reset, tcp_server};
use util::child::run_bin;

const SIZE: usize = 64;

/// Runs `sockloop bench URL ARGS --json`; its exit code and report.
fn bench(url: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = run_bin(&[&["bench", url, "--json"], args].concat());
    (out.status.code(), report(&out))
}

/// Every error kind but `kind` is zero, and `errors` is `kind`'s count.
fn only(r: &serde_json::Value, kind: &str) -> u64 {
    let kinds = [
        "connect_refused",
        "connect_timeouts",
        "resets",
        "eof_early",
        "timeouts",
        "corrupt",
        "other_errors",
    ];
    for k in kinds.iter().filter(|&&k| k != kind) {
        assert_eq!(count(r, k), 0, "{k}: {r}");
    }
    assert_eq!(count(r, "errors"), count(r, kind), "errors is the sum: {r}");
    count(r, kind)
}

/// Every 100th connection is reset (SO_LINGER 0, then close) once its message has
/// arrived: each one is a reset for the client, and nothing else is wrong.
#[test]
fn resets_are_counted_one_per_reset_connection() {
    let resets = Arc::new(AtomicU64::new(0));
    let done = resets.clone();
    let url = tcp_server(move |mut s, n| {
        let mut buf = [0u8; SIZE];
        if s.read_exact(&mut buf).is_err() {
            return;
        }
        if n % 100 == 0 {
            if reset(s) {
                done.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        let _ = s.write_all(&buf);
        // Wait for the client's close, so that it is the one that closes first.
        let _ = s.read(&mut buf);
    });
    let (code, r) = bench(&url, &["--reconnect", "--conns", "4", "--secs", "1"]);
    let server = resets.load(Ordering::SeqCst);
    assert!(server >= 3, "too few connections to test: {r}");
    assert_eq!(only(&r, "resets"), server, "{r}");
    assert_eq!(code, Some(1), "{r}");
}

/// After 50 messages the server closes its side (a FIN) while the client has more
/// in flight: one `eof_early` per connection.
#[test]
fn a_close_with_messages_in_flight_is_eof_early() {
    let url = tcp_server(|mut s, _| {
        if echo_messages::<SIZE>(&mut s, 50) {
            let _ = s.shutdown(Shutdown::Write);
            // Read on until the client closes: unread data at close would be a reset.
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        }
    });
    let (code, r) = bench(&url, &["--conns", "3", "--depth", "4", "--secs", "0.5"]);
    assert_eq!(only(&r, "eof_early"), 3, "{r}");
    assert_eq!(count(&r, "msgs"), 3 * 50, "{r}");
    assert_eq!(code, Some(1), "{r}");
}

/// A server that answers each message a second late, against `--timeout 0.3`: each
/// connection is given up once, as a timeout.
#[test]
fn replies_later_than_the_timeout_are_timeouts() {
    let url = tcp_server(|mut s, _| {
        let mut buf = [0u8; SIZE];
        while s.read_exact(&mut buf).is_ok() {
            thread::sleep(Duration::from_secs(1));
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let (code, r) = bench(&url, &["--conns", "2", "--secs", "0.6", "--timeout", "0.3"]);
    assert_eq!(only(&r, "timeouts"), 2, "{r}");
    assert_eq!(count(&r, "msgs"), 0, "{r}");
    assert_eq!(code, Some(1), "{r}");
}

/// Without `--timeout` a slow stream server is waited for: the same second-late
/// replies complete, with no error.
#[test]
fn without_a_timeout_a_slow_stream_is_waited_for() {
    let url = tcp_server(|mut s, _| {
        let mut buf = [0u8; SIZE];
        while s.read_exact(&mut buf).is_ok() {
            thread::sleep(Duration::from_millis(600));
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let (code, r) = bench(&url, &["--conns", "2", "--secs", "0.5"]);
    assert_eq!(count(&r, "errors"), 0, "{r}");
    assert_eq!(code, Some(0), "{r}");
}

/// One byte flipped, once, in the whole run: exactly one `corrupt`.
#[test]
fn one_wrong_byte_is_one_corrupt() {
    let flipped = Arc::new(AtomicBool::new(false));
    let url = tcp_server(move |mut s, _| {
        let mut buf = [0u8; SIZE];
        let mut echoed = 0u64;
        while s.read_exact(&mut buf).is_ok() {
            echoed += 1;
            if echoed == 20 && !flipped.swap(true, Ordering::SeqCst) {
                buf[SIZE / 2] ^= 0x20;
            }
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let (code, r) = bench(&url, &["--conns", "2", "--depth", "2", "--secs", "0.5"]);
    assert_eq!(only(&r, "corrupt"), 1, "{r}");
    assert!(
        r["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("wrong bytes")),
        "{r}"
    );
    assert_eq!(code, Some(1), "{r}");
}

/// A UDP server that drops every 10th datagram, answers every 7th twice, and holds
/// back every 5th (from the first) until it has answered the next one. The client
/// counts exactly what the server did, and none of it is an error.
#[test]
fn datagrams_lost_duplicated_and_reordered_are_counted_exactly() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("local address");
    // Dropped, duplicated, reordered.
    let did = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let counts = did.clone();
    thread::spawn(move || {
        // A datagram held back is let go when no other comes: at the end of the run.
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        let mut held: Option<(Vec<u8>, std::net::SocketAddr)> = None;
        loop {
            let Ok((len, peer)) = sock.recv_from(&mut buf) else {
                if let Some((d, peer)) = held.take() {
                    let _ = sock.send_to(&d, peer);
                }
                continue;
            };
            n += 1;
            let d = &buf[..len];
            let sent = if n % 10 == 0 {
                counts[0].fetch_add(1, Ordering::SeqCst);
                false
            } else if n % 7 == 0 {
                let _ = sock.send_to(d, peer);
                let _ = sock.send_to(d, peer);
                counts[1].fetch_add(1, Ordering::SeqCst);
                true
            } else if n % 5 == 1 && held.is_none() {
                held = Some((d.to_vec(), peer));
                continue;
            } else {
                let _ = sock.send_to(d, peer);
                true
            };
            if let Some((h, peer)) = held.take() {
                let _ = sock.send_to(&h, peer);
                if sent {
                    counts[2].fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    let (code, r) = bench(
        &format!("udp://{addr}"),
        &[
            "--conns",
            "1",
            "--depth",
            "4",
            "--secs",
            "0.5",
            "--timeout",
            "0.3",
        ],
    );
    let [dropped, duplicated, reordered] = [0, 1, 2].map(|i| did[i].load(Ordering::SeqCst));
    assert!(dropped > 0 && duplicated > 0 && reordered > 0, "{r}");
    assert_eq!(count(&r, "lost"), dropped, "{r}");
    assert_eq!(count(&r, "duplicated"), duplicated, "{r}");
    assert_eq!(count(&r, "reordered"), reordered, "{r}");
    assert_eq!(count(&r, "errors"), 0, "not errors: {r}");
    assert_eq!(code, Some(0), "{r}");
}

/// A port nobody listens on (bound, then closed): every attempt is refused.
fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    format!("tcp://{addr}")
}

#[test]
fn refused_connections_are_connect_refused() {
    let url = refused_url();
    let (code, r) = bench(&url, &["--reconnect", "--secs", "0.3"]);
    assert!(only(&r, "connect_refused") > 0, "{r}");
    assert!(
        r["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{r}"
    );
    assert_eq!(code, Some(1), "{r}");
}

/// `--allow-errors`: the errors are reported, the exit code is 0; the text report
/// names the kinds that are not zero.
#[test]
fn allow_errors_exits_zero_with_errors() {
    let url = refused_url();
    let (code, r) = bench(&url, &["--reconnect", "--secs", "0.3", "--allow-errors"]);
    assert!(count(&r, "errors") > 0, "{r}");
    assert_eq!(code, Some(0), "{r}");

    let out = run_bin(&["bench", &url, "--reconnect", "--secs", "0.3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("errors"))
        .unwrap_or_else(|| panic!("no errors line: {text}"));
    assert!(
        line.contains("(connect_refused ") && !line.contains("resets"),
        "{line}"
    );
}
