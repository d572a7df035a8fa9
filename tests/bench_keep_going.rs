//! `sockloop bench --keep-going`: a connection that fails is counted in its kind and
//! replaced, so the load goes on for the whole run. Each test runs a server written
//! here that fails a known number of connections, then behaves: every failure is
//! replaced, exactly once.

pub mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use util::bench::{count, echo_messages, report, reset, tcp_server};
use util::child::run_bin;

const SIZE: usize = 64;

/// Runs `sockloop bench URL ARGS --json`; its exit code, report, and how long it took.
fn bench(url: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, Duration) {
    let started = Instant::now();
    let out = run_bin(&[&["bench", url, "--json"], args].concat());
    let took = started.elapsed();
    (out.status.code(), report(&out), took)
}

/// The run's failures are `kind` alone, and every one of them was replaced.
fn all_replaced(r: &serde_json::Value, kind: &str, expected: u64) {
    assert_eq!(count(r, kind), expected, "{r}");
    assert_eq!(count(r, "errors"), expected, "only {kind}: {r}");
    assert_eq!(count(r, "replaced"), expected, "each failure replaced: {r}");
}

/// The first 6 connections are reset after 20 messages (the 21st has arrived); the
/// rest echo. With 2 connections that is 3 failures in a row per slot, early in the
/// run: 6 resets, 6 replacements, and the load runs on for the whole second.
#[test]
fn reset_connections_are_replaced_and_the_load_goes_on() {
    let resets = Arc::new(AtomicU64::new(0));
    let done = resets.clone();
    let url = tcp_server(move |mut s, n| {
        if n <= 6 {
            let mut buf = [0u8; SIZE];
            if echo_messages::<SIZE>(&mut s, 20) && s.read_exact(&mut buf).is_ok() && reset(s) {
                done.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        echo_messages::<SIZE>(&mut s, usize::MAX);
    });
    let (code, r, took) = bench(&url, &["--keep-going", "--conns", "2", "--secs", "1"]);
    assert_eq!(resets.load(Ordering::SeqCst), 6, "{r}");
    all_replaced(&r, "resets", 6);
    assert_eq!(code, Some(1), "errors still fail the run: {r}");
    assert!(took >= Duration::from_secs(1), "ran {took:?}: {r}");
    // The replacements came within the back-off (10, 20, 40 ms), so no long silence.
    let gap = r["longest_gap_ms"].as_f64().expect("longest_gap_ms");
    assert!(gap < 500.0, "{r}");
    assert!(count(&r, "msgs") > 6 * 20, "{r}");
    assert_eq!(count(&r, "connected"), 2, "{r}");
    assert!(count(&r, "connect_max_us") > 0, "{r}");
    assert!(count(&r, "first_reply_max_us") > 0, "{r}");
}

/// The first 4 connections are closed by the server (a FIN) after 30 messages while
/// more are in flight: 4 `eof_early`, each replaced.
#[test]
fn connections_closed_early_are_replaced() {
    let url = tcp_server(|mut s, n| {
        if n > 4 {
            echo_messages::<SIZE>(&mut s, usize::MAX);
            return;
        }
        if echo_messages::<SIZE>(&mut s, 30) {
            let _ = s.shutdown(Shutdown::Write);
            // Read on until the client closes: unread data at close would be a reset.
            let mut sink = [0u8; 4096];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        }
    });
    let (code, r, _) = bench(
        &url,
        &[
            "--keep-going",
            "--conns",
            "2",
            "--depth",
            "4",
            "--secs",
            "0.5",
        ],
    );
    all_replaced(&r, "eof_early", 4);
    assert_eq!(code, Some(1), "{r}");
}

/// Open loop: the same, at a fixed rate.
#[test]
fn open_loop_replaces_reset_connections() {
    let url = tcp_server(|mut s, n| {
        if n <= 3 {
            let mut buf = [0u8; SIZE];
            if echo_messages::<SIZE>(&mut s, 10) && s.read_exact(&mut buf).is_ok() {
                reset(s);
            }
            return;
        }
        echo_messages::<SIZE>(&mut s, usize::MAX);
    });
    let (_, r, _) = bench(
        &url,
        &[
            "--keep-going",
            "--conns",
            "2",
            "--rate",
            "2000",
            "--secs",
            "0.5",
            "--allow-errors",
        ],
    );
    all_replaced(&r, "resets", 3);
    // Messages due on a slot while it reconnects are not sent; the rest are.
    assert!(count(&r, "msgs") > 800, "{r}");
}

/// Reconnect mode: every 50th connection is reset; each failed attempt is followed
/// by the next one — except one that fails after the window, which no attempt
/// follows: at most one per slot, the attempt that was in flight when it closed.
#[test]
fn reconnect_mode_goes_on_after_failed_attempts() {
    let url = tcp_server(|mut s, n| {
        let mut buf = [0u8; SIZE];
        if s.read_exact(&mut buf).is_err() {
            return;
        }
        if n % 50 == 0 {
            reset(s);
            return;
        }
        let _ = s.write_all(&buf);
        let _ = s.read(&mut buf);
    });
    let (_, r, _) = bench(
        &url,
        &[
            "--keep-going",
            "--reconnect",
            "--conns",
            "2",
            "--secs",
            "0.5",
            "--allow-errors",
        ],
    );
    let resets = count(&r, "resets");
    assert!(resets >= 2, "{r}");
    assert_eq!(count(&r, "errors"), resets, "only resets: {r}");
    let replaced = count(&r, "replaced");
    assert!(
        replaced <= resets && replaced + 2 >= resets,
        "each failure in the window replaced: {r}"
    );
}

#[test]
fn keep_going_needs_a_stream() {
    util::child::expect_failure(
        &[
            "bench",
            "udp://127.0.0.1:9",
            "--keep-going",
            "--secs",
            "0.1",
        ],
        2,
        "--keep-going needs a stream address",
    );
}
