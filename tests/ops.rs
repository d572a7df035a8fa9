//! Running the server as a service: options from `SOCKLOOP_*` variables, and logs as
//! JSON lines.

pub mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use util::child::{Proc, bin, run_bin};
use util::fs::TempDir;
use util::net::{closed_by_peer, connect, exchange, wait_until};

#[test]
fn every_option_can_come_from_the_environment() {
    let mut server = Proc::serve_env(
        &[
            // Two URLs in one variable: two listeners, the second in echo mode.
            (
                "SOCKLOOP_LISTEN",
                "tcp://127.0.0.1:0,tcp://127.0.0.1:0?mode=echo",
            ),
            ("SOCKLOOP_MODE", "line"),
            ("SOCKLOOP_MAX_LINE", "8"),
            ("SOCKLOOP_IDLE_TIMEOUT", "0.5"),
            ("SOCKLOOP_BANNER", "hi {conn}"),
            ("SOCKLOOP_ALLOW_SERVICE_PORTS", "yes"),
            ("SOCKLOOP_LOG_FORMAT", "json"),
        ],
        &[],
        2,
    );
    assert_eq!(server.ready.len(), 2, "{:?}", server.ready);

    // Line mode with an 8-byte limit, after the banner.
    assert_eq!(exchange(server.addr(0), b"abc\n"), b"hi 1\nabc\n");
    assert_eq!(
        exchange(server.addr(0), b"0123456789\n"),
        b"hi 2\nERR line too long\n"
    );
    // The listener's own ?mode= still wins over SOCKLOOP_MODE.
    assert_eq!(
        exchange(server.addr(1), b"0123456789\n"),
        b"hi 3\n0123456789\n"
    );

    // An idle connection is closed after half a second, not never.
    let mut idle = connect(server.addr(0));
    let start = Instant::now();
    assert!(closed_by_peer(&mut idle), "the idle connection stayed open");
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );

    // SOCKLOOP_LOG_FORMAT: the logs are JSON.
    let first = server.stderr().lines().next().map(str::to_owned);
    let first = first.expect("a log line");
    serde_json::from_str::<Value>(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
}

#[test]
fn a_flag_beats_its_variable() {
    let dir = TempDir::new();
    let unused = dir.join("from-env.sock");
    let mut server = Proc::serve_env(
        &[
            ("SOCKLOOP_MODE", "line"),
            ("SOCKLOOP_MAX_LINE", "4"),
            (
                "SOCKLOOP_LISTEN",
                &format!("unix:{},udp://127.0.0.1:0", unused.display()),
            ),
        ],
        &["--mode", "echo", "--listen", "tcp://127.0.0.1:0"],
        1,
    );
    // --listen replaces the whole list of SOCKLOOP_LISTEN: one listener, none of its.
    assert_eq!(server.ready.len(), 1);
    assert!(
        server.ready[0].starts_with("listening tcp://"),
        "{:?}",
        server.ready
    );
    assert!(!unused.exists(), "SOCKLOOP_LISTEN was bound too");
    // --mode echo: a line past SOCKLOOP_MAX_LINE comes back whole (echo has no lines).
    assert_eq!(exchange(server.addr(0), b"0123456789\n"), b"0123456789\n");
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
}

#[test]
fn a_bad_variable_is_one_line_naming_it_and_nothing_is_bound() {
    let dir = TempDir::new();
    let sock = dir.join("first.sock");
    let listen = format!("unix:{}", sock.display());
    for (var, value, needle) in [
        ("SOCKLOOP_MODE", "nope", "unknown mode"),
        ("SOCKLOOP_MAX_CONNS", "0", "not in 1.."),
        ("SOCKLOOP_MAX_LINE", "many", "invalid digit"),
        ("SOCKLOOP_IDLE_TIMEOUT", "soon", "not a number of seconds"),
        ("SOCKLOOP_PROXY_PROTOCOL", "v3", "expected v1, v2 or any"),
        ("SOCKLOOP_LOG_FORMAT", "xml", "expected one of text, json"),
        (
            "SOCKLOOP_ALLOW_SERVICE_PORTS",
            "maybe",
            "expected true or false",
        ),
        ("SOCKLOOP_WORKERS", "0", "not in 1..=1024"),
        ("SOCKLOOP_MODE", "", "unknown mode"),
    ] {
        let out = Command::new(bin())
            .args(["serve", "--listen", &listen])
            .env(var, value)
            .output()
            .expect("run sockloop");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {err}");
        assert!(out.stdout.is_empty(), "{var}={value}: a ready line");
        assert_eq!(err.lines().count(), 1, "{var}={value}: {err}");
        let expected = format!("sockloop: invalid value '{value}' for {var}: ");
        assert!(err.starts_with(&expected), "{var}={value}: {err}");
        assert!(
            err.contains(needle),
            "{var}={value}: lacks '{needle}': {err}"
        );
        assert!(
            !sock.exists(),
            "{var}={value}: bound before the usage error"
        );
    }

    // One bad URL among several in SOCKLOOP_LISTEN is named alone, and nothing of the
    // list is bound.
    let out = Command::new(bin())
        .arg("serve")
        .env(
            "SOCKLOOP_LISTEN",
            format!("{listen},tcp://127.0.0.1:0?color=red"),
        )
        .output()
        .expect("run sockloop");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "sockloop: invalid value 'tcp://127.0.0.1:0?color=red' for SOCKLOOP_LISTEN: "
        ),
        "{err}"
    );
    assert!(!sock.exists(), "bound before the usage error");

    // A bad flag is still the flag's error, even with its variable set.
    let out = Command::new(bin())
        .args(["serve", "--mode", "nope"])
        .env("SOCKLOOP_MODE", "line")
        .output()
        .expect("run sockloop");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'--mode <MODE>'") && !err.contains("SOCKLOOP_MODE"),
        "{err}"
    );
}

#[test]
fn help_names_the_variable_of_every_option() {
    let out = run_bin(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "SOCKLOOP_LISTEN",
        "SOCKLOOP_MODE",
        "SOCKLOOP_MAX_CONNS",
        "SOCKLOOP_MAX_LINE",
        "SOCKLOOP_IDLE_TIMEOUT",
        "SOCKLOOP_MAX_OUTBUF",
        "SOCKLOOP_MAX_OUTBUF_TOTAL",
        "SOCKLOOP_SHUTDOWN_TIMEOUT",
        "SOCKLOOP_TLS_CERT",
        "SOCKLOOP_TLS_KEY",
        "SOCKLOOP_TLS_CLIENT_CA",
        "SOCKLOOP_PROXY_PROTOCOL",
        "SOCKLOOP_HANDSHAKE_TIMEOUT",
        "SOCKLOOP_ALLOW_SERVICE_PORTS",
        "SOCKLOOP_BANNER",
        "SOCKLOOP_PREFIX",
        "SOCKLOOP_LOG_FORMAT",
        "SOCKLOOP_WORKERS",
    ] {
        assert!(
            help.contains(&format!("[env: {var}=")),
            "--help lacks {var}"
        );
    }
    assert!(help.contains("--log-format <FORMAT>"), "{help}");
}

/// Every stderr line, parsed; each must be one JSON object.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v.is_object(), "{l}");
            for key in ["ts", "level", "target", "msg"] {
                assert!(v[key].is_string(), "no {key}: {l}");
            }
            v
        })
        .collect()
}

#[test]
fn json_logs_carry_the_fields_and_the_counters_as_numbers() {
    let mut server = Proc::serve_env(
        &[("RUST_LOG", "debug")],
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--log-format",
            "json",
            "--idle-timeout",
            "0.3",
        ],
        1,
    );
    // Connection 1 talks and half-closes; connection 2 is closed by the server while
    // its client is still there (the idle timeout), so its peer is still known.
    assert_eq!(exchange(server.addr(0), b"hello"), b"hello");
    let mut idle = connect(server.addr(0));
    assert!(closed_by_peer(&mut idle), "the idle connection stayed open");
    wait_until("both closes to be logged", || {
        server.stderr().matches("closed (").count() == 2
    });
    server.signal(Signal::SIGUSR1);
    wait_until("the counters", || server.stderr().contains(r#""stats":{"#));
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());

    let stderr = server.stderr();
    let lines = json_lines(&stderr);
    let ts = lines[0]["ts"].as_str().unwrap_or_default();
    // RFC 3339, UTC, milliseconds: 2026-01-02T03:04:05.678Z
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "{ts}"
    );

    let find = |conn: u64, what: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["conn"] == conn && l["msg"].as_str().is_some_and(|m| m.contains(what)))
            .unwrap_or_else(|| panic!("no '{what}' line for conn {conn}:\n{stderr}"))
    };
    let listener = server.url(0);
    for conn in [1, 2] {
        let accepted = find(conn, "accepted from");
        assert_eq!(accepted["level"], "DEBUG");
        assert_eq!(accepted["target"], "sockloop::event_loop::accept");
        let peer = accepted["peer"].as_str().unwrap_or_default();
        assert!(peer.starts_with("127.0.0.1:"), "{accepted}");
        assert_eq!(accepted["listener"], listener, "{accepted}");

        let closed = find(conn, "closed (");
        assert_eq!(closed["listener"], accepted["listener"], "{closed}");
        let reason = closed["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{closed}");
        // A peer that has gone already is no longer known to the socket: null then.
        assert!(
            closed["peer"] == accepted["peer"] || closed["peer"].is_null(),
            "{closed}"
        );
        if conn == 2 {
            assert_eq!(reason, "idle timeout", "{closed}");
            assert_eq!(closed["peer"], accepted["peer"], "{closed}");
            assert_eq!(
                closed["msg"],
                format!("conn 2 from {peer}: closed (idle timeout)")
            );
        }
    }

    // The SIGUSR1 object and the one at exit: every counter, each a number.
    let stats: Vec<&Value> = lines.iter().filter(|l| l["msg"] == "stats").collect();
    assert_eq!(stats.len(), 2, "{stderr}");
    let names: Vec<&str> = sockloop::Stats::default()
        .fields()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for s in &stats {
        assert_eq!(s["level"], "INFO");
        let counters = s["stats"].as_object().expect("an object");
        assert_eq!(counters.len(), names.len(), "{s}");
        for name in &names {
            assert!(counters[*name].is_u64(), "{name} in {s}");
        }
    }
    let at_exit = &stats[1]["stats"];
    for (name, n) in [
        ("accepted", 2),
        ("closed", 2),
        ("active", 0),
        ("idle_timeouts", 1),
        ("bytes_in", 5),
        ("bytes_out", 5),
    ] {
        assert_eq!(at_exit[name], n, "{name}: {at_exit}");
    }
    // Numbers both (checked above): Option's order would let a missing one pass.
    let polls = |s: &Value| s["polls"].as_u64().expect("polls");
    assert!(polls(at_exit) >= polls(&stats[0]["stats"]));
}
