//! The command line: ready lines, exit codes, what goes to stdout and stderr.

pub mod util;

use std::io::Write;
use std::net::TcpListener;
use std::process::Command;
use std::thread;

use nix::sys::signal::Signal;
use util::child::{Proc, bin, expect_failure, last_stats, run_bin};
use util::fs::TempDir;
use util::net::{DEADLINE, connect, exchange, pattern, read_n, read_to_eof, wait_until};

#[test]
fn ready_lines_one_per_listener_in_order_with_real_ports() {
    let mut server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "tcp://[::1]:0?mode=line",
        "--listen",
        "tcp://localhost:0",
    ]);
    assert_eq!(server.ready.len(), 3);
    assert!(
        server.ready[0].starts_with("listening tcp://127.0.0.1:"),
        "{:?}",
        server.ready
    );
    assert!(
        server.ready[1].starts_with("listening tcp://[::1]:"),
        "{:?}",
        server.ready
    );
    assert!(
        !server.ready[1].contains('?'),
        "the query is not part of the address"
    );
    for i in 0..3 {
        assert_ne!(server.addr(i).port(), 0);
        // Each ready line names a socket that answers.
        assert_eq!(exchange(server.addr(i), b"x\n"), b"x\n");
    }
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
    assert_eq!(
        server.stdout_rest(),
        "",
        "nothing but the ready lines goes to stdout"
    );
}

#[test]
fn a_listener_can_override_the_mode() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "tcp://127.0.0.1:0?mode=line",
        "--max-line",
        "8",
    ]);
    let long = b"0123456789\n";
    assert_eq!(
        exchange(server.addr(0), long),
        long,
        "echo does not care about lines"
    );
    assert_eq!(exchange(server.addr(1), long), b"ERR line too long\n");
}

#[test]
fn bad_command_lines_exit_2_before_binding() {
    for (args, needle) in [
        (
            vec!["serve", "--listen", "127.0.0.1:5001"],
            "invalid address",
        ),
        (
            vec!["serve", "--listen", "http://127.0.0.1:80"],
            "unknown scheme",
        ),
        (vec!["serve", "--listen", "tcp://127.0.0.1:99999"], "port"),
        (
            vec!["serve", "--listen", "tcp://127.0.0.1:0?color=red"],
            "unknown parameter",
        ),
        (
            vec!["serve", "--listen", "tcp://127.0.0.1:0?mode=nope"],
            "unknown mode",
        ),
        (vec!["serve", "--mode", "nope"], "unknown mode"),
        (
            vec!["serve", "--listen", "tcp://127.0.0.1:0?proxy=v3"],
            "unknown PROXY protocol version",
        ),
        (
            vec!["serve", "--listen", "udp://127.0.0.1:0?proxy=v2"],
            "stream listeners only",
        ),
        (
            vec!["serve", "--proxy-protocol", "yes"],
            "expected v1, v2 or any",
        ),
        (vec!["serve", "--max-conns", "0"], "max-conns"),
        (vec!["serve", "--idle-timeout", "soon"], "seconds"),
        (vec!["serve", "--bogus"], "--bogus"),
        (vec!["frobnicate"], "frobnicate"),
    ] {
        expect_failure(&args, 2, needle);
    }
}

#[test]
fn a_numeric_host_that_is_no_ipv4_address_is_a_usage_error() {
    // A Unix listener before the bad one shows whether anything was bound.
    let dir = TempDir::new();
    let sock = dir.join("first.sock");
    let first = format!("unix:{}", sock.display());
    let err = expect_failure(
        &["serve", "--listen", &first, "--listen", "tcp://999.1.1.1:5"],
        2,
        "not an IPv4 address",
    );
    assert!(err.contains("999.1.1.1"), "{err}");
    assert!(
        !sock.exists(),
        "a listener was bound before the usage error"
    );

    expect_failure(&["send", "tcp://1.2.3:5", "x"], 2, "not an IPv4 address");
}

#[test]
fn a_max_outbuf_below_the_minimum_is_a_usage_error_naming_it() {
    let config = sockloop::Config::default();
    let min = config.high_water + sockloop::READ_BUFFER;
    let dir = TempDir::new();
    let sock = dir.join("s.sock");
    let listen = format!("unix:{}", sock.display());
    for below in [0, 1000, min - 1] {
        let below = below.to_string();
        let err = expect_failure(
            &["serve", "--listen", &listen, "--max-outbuf", &below],
            2,
            &format!("minimum of {min} bytes"),
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("max_outbuf"), "{err}");
        assert!(
            !sock.exists(),
            "a listener was bound before the usage error"
        );
    }
    // The minimum itself is a working limit.
    let min = min.to_string();
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--max-outbuf", &min]);
    assert_eq!(exchange(server.addr(0), b"fits"), b"fits");
}

/// A ceiling on all output below one connection's own limit cannot be meant.
#[test]
fn a_max_outbuf_total_below_max_outbuf_is_a_usage_error() {
    let dir = TempDir::new();
    let sock = dir.join("s.sock");
    let listen = format!("unix:{}", sock.display());
    let err = expect_failure(
        &["serve", "--listen", &listen, "--max-outbuf-total", "1000"],
        2,
        "below max_outbuf",
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !sock.exists(),
        "a listener was bound before the usage error"
    );
    expect_failure(
        &["serve", "--listen", &listen, "--max-outbuf-total", "0"],
        2,
        "--max-outbuf-total",
    );
}

#[test]
fn an_address_in_use_exits_1_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", taken.local_addr().unwrap());
    let out = run_bin(&["serve", "--listen", "tcp://127.0.0.1:0", "--listen", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("cannot bind"))
        .expect("an error line");
    assert!(line.contains(&url), "{line}");
    assert!(line.to_lowercase().contains("in use"), "{line}");
    assert!(
        out.stdout.is_empty(),
        "ready lines printed although binding failed"
    );
}

#[test]
fn sigusr1_logs_every_counter_on_one_line() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    assert_eq!(exchange(server.addr(0), b"count me"), b"count me");
    wait_until("the connection to close", || server.stats()["closed"] == 1);
    let stats = server.stats();
    for key in [
        "accepted",
        "rejected",
        "closed",
        "active",
        "bytes_in",
        "bytes_out",
        "reads",
        "writes",
        "read_would_block",
        "write_would_block",
        "short_writes",
        "backpressure_pauses",
        "backpressure_resumes",
        "polls",
        "events",
        "datagrams_in",
        "datagrams_out",
        "datagrams_dropped",
    ] {
        assert!(stats.contains_key(key), "no {key} in {stats:?}");
    }
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["bytes_in"], 8);
    assert_eq!(stats["bytes_out"], 8);
    assert!(stats["polls"] >= 1 && stats["events"] >= 1);
}

#[test]
fn trace_log_shows_readiness_events_and_partial_writes() {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "tcp://127.0.0.1:0"])
        .env("RUST_LOG", "trace");
    let mut server = Proc::spawn(cmd, 1);
    // 24 MiB written before reading is more than the kernel buffers on both sides
    // hold, so the server's writes come up short.
    let data = pattern(24 << 20, 5);
    let mut s = connect(server.addr(0));
    let mut w = s.try_clone().unwrap();
    let d = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&d).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    wait_until("the server to queue output", || {
        server.stderr().contains("partial write") || server.stderr().contains("would block")
    });
    assert!(read_to_eof(&mut s) == data);
    writer.join().unwrap();
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
    let log = server.stderr();
    assert!(
        log.contains("event: conn 1 readable"),
        "no readiness event in the trace"
    );
    assert!(log.contains("writable"), "no writable event in the trace");
    assert!(
        log.contains("partial write") || log.contains("flush: wrote"),
        "no partial write in the trace"
    );
    assert!(log.contains("read EOF"));
}

#[test]
fn help_lists_the_serve_options() {
    let out = run_bin(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--listen",
        "--mode",
        "--max-conns",
        "--max-line",
        "--idle-timeout",
        "--max-outbuf",
        "--max-outbuf-total",
        "--shutdown-timeout",
        "--allow-service-ports",
    ] {
        assert!(help.contains(opt), "help lacks {opt}");
    }
    // The defaults shown are the library's.
    let config = sockloop::Config::default();
    for (opt, default) in [
        ("--max-outbuf", config.max_outbuf.to_string()),
        (
            "--shutdown-timeout",
            config.shutdown_timeout.as_secs().to_string(),
        ),
        (
            "--handshake-timeout",
            config.handshake_timeout.as_secs().to_string(),
        ),
    ] {
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(opt))
            .unwrap_or_else(|| panic!("no {opt} line in {help}"));
        assert!(line.contains(&format!("[default: {default}]")), "{line}");
    }
}

#[test]
fn two_workers_serve_tcp_and_udp_and_shut_down_cleanly() {
    let mut server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--workers",
        "2",
    ]);
    // Many connections from different source ports: the kernel spreads them over
    // both workers' sockets.
    let data = pattern(200_000, 3);
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let (addr, data) = (server.addr(0), data.clone());
            thread::spawn(move || exchange(addr, &data) == data)
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap(), "an echo differed");
    }
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(DEADLINE)).unwrap();
    for i in 0..20u8 {
        udp.send_to(&[i; 100], server.addr(1)).unwrap();
        let mut buf = [0u8; 200];
        assert_eq!(udp.recv(&mut buf).unwrap(), 100);
    }
    // SIGUSR1: each worker logs its own counters; both took connections.
    server.signal(Signal::SIGUSR1);
    wait_until("both workers' counters", || {
        server.stderr().matches("stats worker=").count() == 2
    });
    for line in server
        .stderr()
        .lines()
        .filter(|l| l.contains("stats worker="))
    {
        let accepted = last_stats(line)["accepted"];
        assert!(accepted > 0, "a worker accepted nothing: {line}");
    }
    // A connection still open at SIGTERM gets its echo, then the server exits 0.
    let mut open = connect(server.addr(0));
    open.write_all(b"last words").unwrap();
    assert_eq!(read_n(&mut open, 10), b"last words");
    server.signal(Signal::SIGTERM);
    assert!(read_to_eof(&mut open).is_empty());
    assert!(server.wait().success());
    let log = server.stderr();
    assert!(log.contains("on 2 workers"), "{log}");
    assert!(
        log.contains("worker 0: SIGTERM") && log.contains("worker 1: SIGTERM"),
        "{log}"
    );
    // The final line sums both workers.
    let stats = last_stats(&log);
    assert_eq!(stats["accepted"], 41, "{log}");
    assert_eq!(stats["closed"], 41);
    assert_eq!(stats["datagrams_out"], 20);
}

/// `--proxy-protocol` applies to every stream listener but not to datagram sockets,
/// and `?proxy=off` exempts one listener: a header-less client is refused on the first
/// and served on the second, and UDP echoes as ever.
#[test]
fn proxy_protocol_default_and_its_exemptions() {
    use std::io::{Read, Write};
    let server = Proc::serve(&[
        "--proxy-protocol",
        "v2",
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "tcp://127.0.0.1:0?proxy=off",
        "--listen",
        "udp://127.0.0.1:0",
    ]);
    let mut refused = util::net::connect(server.addr(0));
    refused.write_all(b"no header\n").unwrap();
    let mut buf = Vec::new();
    refused.read_to_end(&mut buf).unwrap();
    assert!(
        buf.is_empty(),
        "a listener expecting a header echoed {buf:?}"
    );
    assert_eq!(util::net::exchange(server.addr(1), b"exempt"), b"exempt");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(util::net::DEADLINE)).unwrap();
    udp.send_to(b"dgram", server.addr(2)).unwrap();
    let mut d = [0u8; 16];
    let (n, _) = udp.recv_from(&mut d).unwrap();
    assert_eq!(&d[..n], b"dgram");
    let st = server.stats();
    assert_eq!((st["proxy_errors"], st["proxy_headers"]), (1, 0));
}
