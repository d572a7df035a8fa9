//! Metrics and health over HTTP on the loop, and drain for rolling updates: scraped
//! under load and checked by `promtool` (Prometheus's own parser), against the stats
//! line; `/readyz` through a drain; bad requests.

pub mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use util::child::{Proc, bin, require, run_with_stdin};
use util::net::{DEADLINE, connect, exchange, http_response, wait_until};

/// `sockloop serve` with the given listeners and `--metrics tcp://127.0.0.1:0`; the
/// metrics address is the line after the ready lines.
fn serve_with_metrics(listen: &[&str], extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args: Vec<&str> = listen.iter().flat_map(|l| ["--listen", l]).collect();
    args.extend(["--metrics", "tcp://127.0.0.1:0"]);
    args.extend(extra);
    let p = Proc::serve_env(&[], &args, listen.len() + 1);
    let addr = p.metrics_addr();
    (p, addr)
}

/// Writes `request` as it is and returns the whole response, read until the server
/// closes.
fn request(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .expect("a response, then a close");
    resp
}

/// One HTTP/1.1 request; the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    );
    http_response(&resp)
}

/// The samples of a Prometheus text page, by name.
fn samples(page: &str) -> HashMap<String, u64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse::<f64>().ok()? as u64)))
        .collect()
}

#[test]
fn scraped_under_load_promtool_accepts_it_and_it_matches_the_stats_line() {
    let (server, metrics) = serve_with_metrics(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &[]);
    let url = format!("tcp://{}", server.addr(0));
    let mut load = Command::new(bin())
        .args(["bench", &url, "--conns", "10", "--secs", "1", "--json"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the load");
    let mut last = String::new();
    let mut scrapes = 0;
    while load.try_wait().expect("wait").is_none() {
        let (code, body) = get(metrics, "/metrics");
        assert_eq!(code, 200);
        last = body;
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scrapes >= 5, "only {scrapes} scrapes during the load");
    assert!(samples(&last)["sockloop_bytes_in_total"] > 0, "{last}");
    let mut check = Command::new(require("promtool", "--version", "prometheus"));
    check.args(["check", "metrics"]);
    let out = run_with_stdin(check, last.as_bytes());
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{last}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Quiet now: a datagram, one scrape, then the stats line. The scrape's own
    // connection is accepted before it is answered, so counters of connections made
    // and datagrams agree exactly.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(DEADLINE)).unwrap();
    udp.send_to(b"ping", server.addr(1)).unwrap();
    let mut buf = [0u8; 8];
    udp.recv_from(&mut buf).unwrap();
    let (_, page) = get(metrics, "/metrics");
    let scraped = samples(&page);
    let stats = server.stats();
    for name in [
        "accepted",
        "rejected",
        "datagrams_in",
        "datagrams_out",
        "slow_consumers",
    ] {
        assert_eq!(
            scraped[&format!("sockloop_{name}_total")],
            stats[name],
            "{name}: scraped {page}\nstats {stats:?}"
        );
    }
    assert!(
        scraped["sockloop_build_info{version=\"0.1.0\"}"] == 1,
        "{page}"
    );
    assert_eq!(scraped["sockloop_ready"], 1);
}

#[test]
fn readyz_says_503_from_sigterm_while_echo_goes_on_then_the_server_exits_0() {
    let (mut server, metrics) = serve_with_metrics(&["tcp://127.0.0.1:0"], &["--drain-delay", "2"]);
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(metrics, "/readyz").0, 200);
    let start = Instant::now();
    server.signal(Signal::SIGTERM);
    wait_until("/readyz to say 503", || get(metrics, "/readyz").0 == 503);
    // Still serving, new connections too, during the delay.
    assert_eq!(exchange(server.addr(0), b"still here"), b"still here");
    assert_eq!(get(metrics, "/healthz").0, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "checked within the delay"
    );
    let status = server.wait();
    assert!(status.success(), "exit {status:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "left before the delay"
    );
    let log = server.stderr();
    assert!(
        log.contains("SIGTERM: not ready; still accepting and serving for 2s"),
        "{log}"
    );
    assert!(log.contains("drain delay over: closing listeners"), "{log}");
}

#[test]
fn garbage_huge_and_slow_requests_are_refused_and_counted_echo_unaffected() {
    let (server, metrics) =
        serve_with_metrics(&["tcp://127.0.0.1:0"], &["--handshake-timeout", "1"]);
    // Garbage.
    let resp = request(metrics, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp:?}");
    // A 1 MiB header: refused once past 8 KiB, without reading the rest.
    let mut h = connect(metrics);
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    big.resize(1 << 20, b'a');
    let _ = h.write_all(&big);
    let mut resp = Vec::new();
    let _ = h.read_to_end(&mut resp);
    assert!(
        resp.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    // Slowloris: half a request, then nothing; closed at the deadline.
    let start = Instant::now();
    let mut slow = connect(metrics);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
    // Meanwhile echo answers.
    assert_eq!(exchange(server.addr(0), b"unaffected"), b"unaffected");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Other paths and methods.
    assert_eq!(get(metrics, "/nope").0, 404);
    let resp = request(
        metrics,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp:?}");
    let scraped = samples(&get(metrics, "/metrics").1);
    assert_eq!(scraped["sockloop_metrics_bad_requests_total"], 2);
    let stats = server.stats();
    assert_eq!(stats["request_timeouts"], 1, "{stats:?}");
}

/// The gauges say how things are now: a client that does not read is paused, one that
/// has not sent its PROXY header is waiting, and the output queued for them is counted.
#[test]
fn gauges_show_paused_and_waiting_connections() {
    let (server, metrics) =
        serve_with_metrics(&["tcp://127.0.0.1:0", "tcp://127.0.0.1:0?proxy=v2"], &[]);
    let _unread = server.flood_unread(8 << 20);
    let _silent = connect(server.addr(1));
    wait_until("the silent client to be accepted", || {
        server.stats()["accepted"] >= 2
    });
    let scraped = samples(&get(metrics, "/metrics").1);
    assert_eq!(scraped["sockloop_paused_connections"], 1);
    assert_eq!(scraped["sockloop_handshaking_connections"], 1);
    assert!(scraped["sockloop_queued_output_bytes"] > 0);
    assert_eq!(
        scraped["sockloop_active_connections"], 3,
        "two clients and the scrape"
    );
    let stats = server.stats();
    assert_eq!((stats["paused"], stats["handshaking"]), (1, 1));
}

/// A second signal during the drain delay does not wait for it: everything is closed
/// at once and the server exits.
#[test]
fn a_second_signal_during_the_drain_delay_stops_at_once() {
    let (mut server, metrics) =
        serve_with_metrics(&["tcp://127.0.0.1:0"], &["--drain-delay", "30"]);
    let _idle = connect(server.addr(0));
    server.signal(Signal::SIGTERM);
    wait_until("/readyz to say 503", || get(metrics, "/readyz").0 == 503);
    let start = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait();
    assert!(status.success(), "exit {status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        server.stderr().contains("second signal: closing"),
        "{}",
        server.stderr()
    );
}
