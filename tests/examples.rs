//! The example programs, run as the child processes a user would run: each prints its
//! `listening URL` line, serves real connections on loopback, and exits 0.

pub mod util;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;
use util::child::{Proc, last_stats};
use util::net::{connect, read_n, read_to_eof, wait_until};

/// The built example `name`, ready to run. `cargo test` builds every example before it
/// runs the tests (`cargo test --test examples` alone does not: build them first with
/// `cargo build --examples`). This test runs from `TARGET/PROFILE/deps/`; the examples
/// are in `TARGET/PROFILE/examples/`.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from TARGET/PROFILE/deps")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test`, or `cargo build --examples` first",
        path.display()
    );
    Command::new(path)
}

/// Writes `bytes` (a request, or part of one) and reads exactly `reply` back.
fn ask(conn: &mut TcpStream, bytes: &str, reply: &str) {
    conn.write_all(bytes.as_bytes()).expect("write");
    let got = read_n(conn, reply.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        reply,
        "reply to {bytes:?} (the request may be partial)"
    );
}

#[test]
fn kv_serves_its_protocol_and_stops_on_sigterm() {
    let mut kv = Proc::spawn(example("kv"), 1);
    let addr = kv.addr(0);
    let mut c1 = connect(addr);

    // Lines split across writes, one of them in the middle of a command. Each write
    // waits for the replies to the lines it completes, so the server reads the pieces
    // separately instead of as one coalesced segment.
    ask(&mut c1, "SET a 1\nGE", "OK\n");
    ask(&mut c1, "T a\nGET b\n", "VALUE 1\nNOT_FOUND\n");
    ask(&mut c1, "DEL a\nGET a\nBOG", "DELETED\nNOT_FOUND\n");
    ask(&mut c1, "US\n", "ERR unknown command\n");
    for b in "SET spaced a value with spaces".bytes() {
        c1.write_all(&[b]).expect("write one byte");
    }
    ask(
        &mut c1,
        "\r\nGET spaced\n",
        "OK\nVALUE a value with spaces\n",
    );
    ask(
        &mut c1,
        "SET a\nGET\n\n",
        &"ERR unknown command\n".repeat(3),
    );

    // The store is the service's, shared by every connection.
    let mut c2 = connect(addr);
    ask(&mut c2, "GET spaced\n", "VALUE a value with spaces\n");
    ask(&mut c2, "DEL spaced\n", "DELETED\n");
    ask(&mut c1, "GET spaced\n", "NOT_FOUND\n");
    drop(c2);

    // A line of exactly 1024 bytes is accepted; one byte more is refused and the
    // connection is closed, whether the long line is terminated or not.
    let value = "v".repeat(1024 - "SET big ".len());
    ask(&mut c1, &format!("SET big {value}\n"), "OK\n");
    for terminator in ["\n", ""] {
        let mut long = connect(addr);
        let line = format!("SET big {value}w{terminator}");
        long.write_all(line.as_bytes()).expect("write a long line");
        assert_eq!(read_to_eof(&mut long), b"ERR line too long\n");
    }
    ask(&mut c1, "GET big\n", &format!("VALUE {value}\n"));

    // SIGTERM: a graceful shutdown closes the open connection, then the process exits 0.
    kv.signal(Signal::SIGTERM);
    assert_eq!(read_to_eof(&mut c1), b"", "nothing more after SIGTERM");
    drop(c1);
    let status = kv.wait();
    assert!(
        status.success(),
        "kv exited {status}; stderr:\n{}",
        kv.stderr()
    );
    wait_until("kv's final stats line", || kv.stderr().contains("stats "));
    let stats = last_stats(&kv.stderr());
    assert_eq!((stats["accepted"], stats["closed"]), (4, 4));
}

#[test]
fn embed_talks_to_its_own_server_and_stops_it() {
    let mut embed = Proc::spawn(example("embed"), 1);
    let status = embed.wait();
    assert!(
        status.success(),
        "embed exited {status}; stderr:\n{}",
        embed.stderr()
    );
    wait_until("embed's stats line", || {
        embed.stdout_rest().contains("stats ")
    });
    let stats = last_stats(&embed.stdout_rest());
    assert!(stats["accepted"] >= 1, "{stats:?}");
    assert_eq!(stats["closed"], stats["accepted"], "{stats:?}");
}

#[test]
fn turn_stops_after_the_requested_connections() {
    let mut cmd = example("turn");
    cmd.arg("2");
    let mut turn = Proc::spawn(cmd, 1);
    let addr = turn.addr(0);
    for i in 0..2 {
        let mut c = connect(addr);
        let msg = format!("ping {i}\n");
        ask(&mut c, &msg, &msg);
        c.shutdown(Shutdown::Write).expect("shutdown");
        assert_eq!(read_to_eof(&mut c), b"");
    }
    let status = turn.wait();
    assert!(
        status.success(),
        "turn exited {status}; stderr:\n{}",
        turn.stderr()
    );
    wait_until("turn's last line", || {
        turn.stdout_rest().contains("done: served 2 connections")
    });
    assert!(turn.stdout_rest().contains("status accepted="));
}

#[test]
fn turn_rejects_a_bad_count() {
    let mut cmd = example("turn");
    cmd.arg("many");
    let mut turn = Proc::spawn(cmd, 0);
    let status = turn.wait();
    assert!(!status.success(), "turn accepted the count \"many\"");
    wait_until("turn's error message", || {
        turn.stderr().contains("connection count")
    });
    assert_eq!(turn.stdout_rest(), "", "turn printed to stdout");
}
