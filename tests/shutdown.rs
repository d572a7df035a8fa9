//! Graceful shutdown: SIGTERM / SIGINT and the library's handle.

pub mod util;

use std::io::Write;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sockloop::services::Echo;
use util::child::{Proc, last_stats};
use util::net::{
    closed_by_peer, connect, pattern, read_n, read_to_eof, wait_until, write_in_background,
};
use util::server::{LibServer, tcp_builder};

/// The client sends 8 MiB and reads nothing, so the server holds echoed bytes it could
/// not write yet. After SIGTERM the client must still receive every byte the server
/// had read, then EOF, and the server must exit 0.
#[test]
fn sigterm_while_echoed_data_is_unread_delivers_all_of_it() {
    let mut server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let data: Arc<[u8]> = pattern(8 << 20, 9).into();
    let mut s = connect(server.addr(0));
    // Once the server stops reading, this blocks; after shutdown it may be reset.
    let writer = write_in_background(&s, data.clone(), false);
    wait_until("the server to queue output", || {
        server.stats()["backpressure_pauses"] >= 1
    });

    server.signal(Signal::SIGTERM);
    let got = read_to_eof(&mut s);
    drop(s);
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
    let _ = writer.join();

    // Every byte the service was given went back out; input that was still unread
    // when the signal came is discarded, never half-answered.
    let stats = last_stats(&server.stderr());
    assert!(
        got.len() as u64 == stats["bytes_in"],
        "got {} bytes, server read {}",
        got.len(),
        stats["bytes_in"]
    );
    assert_eq!(stats["bytes_out"], stats["bytes_in"]);
    assert!(
        got.len() > 256 * 1024,
        "too little was queued to prove anything"
    );
    assert!(
        data.starts_with(&got),
        "the echoed bytes are not what was sent"
    );
}

#[test]
fn sigint_closes_idle_connections_and_exits_zero() {
    let mut server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let mut s = connect(server.addr(0));
    s.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut s, 1), b"x");
    server.signal(Signal::SIGINT);
    assert!(closed_by_peer(&mut s), "connection not closed on shutdown");
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
    // The listener is gone.
    assert!(std::net::TcpStream::connect(server.addr(0)).is_err());
}

#[test]
fn shutdown_timeout_bounds_the_drain_of_a_peer_that_never_reads() {
    let mut server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--shutdown-timeout", "1"]);
    let s = server.flood_unread(16 << 20);
    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait();
    let took = t.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exited after {took:?}"
    );
    assert!(server.stderr().contains("shutdown timeout"));
    drop(s);
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--shutdown-timeout", "30"]);
    let s = server.flood_unread(16 << 20);
    server.signal(Signal::SIGTERM);
    wait_until("the drain to start", || {
        server.stderr().contains("draining")
    });
    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(s);
}

#[test]
fn handle_stops_the_loop_from_another_thread() {
    let server = LibServer::start(tcp_builder(), Echo);
    let mut s = connect(server.addr());
    s.write_all(b"abc").unwrap();
    assert_eq!(read_n(&mut s, 3), b"abc");
    let handle = server.handle.clone();
    let stopper = thread::spawn(move || handle.shutdown().unwrap());
    assert!(closed_by_peer(&mut s));
    stopper.join().unwrap();
    let stats = server.stop();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.closed, 1);
    assert_eq!(stats.active, 0);
}
