//! Limits: idle timeout, connection limit, and running out of descriptors.

pub mod util;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use util::child::{Proc, bin};
use util::net::{closed_by_peer, connect, exchange, read_n, read_to_eof, wait_until};

#[test]
fn idle_timeout_closes_the_idle_connection_and_spares_the_active_one() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--idle-timeout", "1"]);
    let addr = server.addr(0);
    let mut idle = connect(addr);
    let idle_since = Instant::now();
    let mut active = connect(addr);
    // Prove both are accepted before timing anything.
    for s in [&mut idle, &mut active] {
        s.write_all(b"hi").unwrap();
        assert_eq!(read_n(s, 2), b"hi");
    }
    let idle_since = idle_since.max(Instant::now());

    let waiter = thread::spawn(move || {
        let closed = closed_by_peer(&mut idle);
        (closed, idle_since.elapsed())
    });
    // Keep the other connection busy for 2.5 s, a message every 200 ms.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        active.write_all(b"ping").unwrap();
        assert_eq!(read_n(&mut active, 4), b"ping");
        thread::sleep(Duration::from_millis(200));
    }
    let (closed, after) = waiter.join().unwrap();
    assert!(closed, "the idle connection was not closed");
    assert!(
        after >= Duration::from_millis(950) && after < Duration::from_millis(2200),
        "closed after {after:?}, expected between 1 and 2 s"
    );
    active.write_all(b"still").unwrap();
    assert_eq!(read_n(&mut active, 5), b"still");
    assert_eq!(server.stats()["idle_timeouts"], 1);
}

#[test]
fn max_conns_rejects_with_a_message_and_recovers() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--mode",
        "line",
        "--max-conns",
        "2",
    ]);
    let addr = server.addr(0);
    let mut a = connect(addr);
    let mut b = connect(addr);
    for s in [&mut a, &mut b] {
        s.write_all(b"in\n").unwrap();
        assert_eq!(read_n(s, 3), b"in\n");
    }
    let mut c = connect(addr);
    assert_eq!(read_to_eof(&mut c), b"ERR server full\n");

    drop(a);
    // The server notices the close on its next turn; until then it may still refuse.
    let mut served = None;
    wait_until("a slot to free up", || {
        let mut d = connect(addr);
        d.write_all(b"back\n").unwrap();
        let mut got = [0u8; 16];
        let n = std::io::Read::read(&mut d, &mut got).unwrap_or(0);
        if &got[..n] == b"back\n" {
            served = Some(d);
            true
        } else {
            false
        }
    });
    let mut d = served.unwrap();
    d.write_all(b"more\n").unwrap();
    assert_eq!(read_n(&mut d, 5), b"more\n");
    let stats = server.stats();
    assert!(stats["rejected"] >= 1, "{stats:?}");
    assert_eq!(stats["active"], 2);
}

/// Under a 64-descriptor limit, with `--max-conns` set far above it, a flood of
/// connections runs the process out of descriptors. The server must shed what it
/// cannot hold, not spin, keep serving those it holds, and serve again once
/// descriptors come free.
#[test]
fn descriptor_exhaustion_does_not_spin_and_recovers() {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ulimit -n 64 && exec \"$0\" serve --listen tcp://127.0.0.1:0 --max-conns 1000",
        bin(),
    ]);
    let server = Proc::spawn(cmd, 1);
    let addr = server.addr(0);

    // 200 connections: about 55 fit; the rest find no descriptor.
    let mut flood: Vec<TcpStream> = (0..200).map(|_| connect(addr)).collect();
    wait_until("the server to run out of descriptors", || {
        server.stderr().contains("shedding")
    });
    let mut served = 0;
    for s in flood.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if s.write_all(b"x").is_ok() {
            let mut b = [0u8; 1];
            if std::io::Read::read(s, &mut b).ok() == Some(1) {
                served += 1;
            }
        }
    }
    assert!(served >= 20, "only {served} connections were served");
    assert!(served < 64, "{served} served under a 64-descriptor limit?");

    // Still flooded: new arrivals keep failing to get a descriptor. CPU must stay low.
    let cpu0 = server.cpu_time();
    let t0 = Instant::now();
    let mut more: Vec<TcpStream> = Vec::new();
    while t0.elapsed() < Duration::from_secs(1) {
        if let Ok(s) = TcpStream::connect(addr) {
            more.push(s);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let used = server.cpu_time() - cpu0;
    assert!(
        used < Duration::from_millis(300),
        "server used {used:?} of CPU in 1 s while starved"
    );
    eprintln!("served={served} cpu={used:?} late_connects={}", more.len());
    let warnings = server.stderr().matches("shedding").count();
    assert!(
        warnings <= 4,
        "exhaustion logged {warnings} times: not rate-limited"
    );

    // Free the descriptors: the server serves again.
    drop(flood);
    drop(more);
    wait_until("the server to serve again", || {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.write_all(b"back").is_ok() && {
            let mut b = [0u8; 4];
            std::io::Read::read_exact(&mut s, &mut b).is_ok() && &b == b"back"
        }
    });
    assert_eq!(exchange(addr, b"fully back"), b"fully back");
    let stats = server.stats();
    assert!(stats["accept_fd_exhausted"] >= 1, "{stats:?}");
}
