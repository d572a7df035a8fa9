//! Echo mode over TCP: every byte back, in order, whatever the peer does.

pub mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::child::{Proc, run_python};
use util::net::{connect, exchange, pattern, read_n, read_to_eof, wait_until, write_in_background};
use util::server::{LibServer, raise_nofile};

#[test]
fn echo_round_trip() {
    let server = LibServer::echo();
    let mut s = connect(server.addr());
    s.write_all(b"hello, sockloop").unwrap();
    assert_eq!(read_n(&mut s, 15), b"hello, sockloop");
    s.write_all(b"again").unwrap();
    assert_eq!(read_n(&mut s, 5), b"again");
    drop(s);
    let stats = server.stop();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.bytes_in, 20);
    assert_eq!(stats.bytes_out, 20);
}

#[test]
fn echo_32_mib_while_the_client_reads_concurrently() {
    let server = LibServer::echo();
    let data = Arc::new(pattern(32 << 20, 1));
    let mut s = connect(server.addr());
    let mut w = s.try_clone().unwrap();
    let d = data.clone();
    let writer = thread::spawn(move || {
        // Uneven chunk sizes so reads and writes never line up with the buffers.
        let mut off = 0;
        let mut step = 1;
        while off < d.len() {
            let n = (step * 7919 % 200_000 + 1).min(d.len() - off);
            w.write_all(&d[off..off + n]).unwrap();
            off += n;
            step += 1;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_eof(&mut s);
    writer.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == *data, "echoed bytes differ from those sent");
}

#[test]
fn half_close_gets_everything_then_eof() {
    let server = LibServer::echo();
    let data = pattern(1 << 20, 2);
    // The peer shuts down its write side before reading anything: the server must
    // still write every byte back, then shut down its own side.
    assert!(exchange(server.addr(), &data) == data);
    let stats = server.stop();
    assert_eq!(stats.closed, 1);
}

#[test]
fn two_thousand_concurrent_connections() {
    raise_nofile();
    let server = LibServer::echo();
    let mut conns: Vec<_> = (0..2000).map(|_| connect(server.addr())).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(format!("conn {i:04}").as_bytes()).unwrap();
    }
    for (i, s) in conns.iter_mut().enumerate() {
        assert_eq!(read_n(s, 9), format!("conn {i:04}").as_bytes());
    }
    drop(conns);
    let stats = server.stop();
    assert_eq!(stats.accepted, 2000);
    assert_eq!(stats.rejected, 0);
}

#[test]
fn random_garbage_is_echoed_exactly_on_many_connections() {
    let server = LibServer::echo();
    let addr = server.addr();
    let clients: Vec<_> = (0..8)
        .map(|i| {
            thread::spawn(move || {
                let data = pattern(512 * 1024 + i * 977, 100 + i as u64);
                let mut s = connect(addr);
                let writer = write_in_background(&s, data.clone(), true);
                let got = read_to_eof(&mut s);
                writer.join().unwrap().unwrap();
                got == data
            })
        })
        .collect();
    for c in clients {
        assert!(c.join().unwrap(), "a connection got different bytes back");
    }
}

#[test]
fn a_reset_closes_only_that_connection() {
    let server = LibServer::echo();
    let mut bystander = connect(server.addr());
    for _ in 0..20 {
        // Send a lot without reading, then reset: the server holds queued output for a
        // peer that is gone.
        let s = connect(server.addr());
        let sock = socket2::SockRef::from(&s);
        let mut w = &s;
        let _ = w.write_all(&pattern(256 * 1024, 3));
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    }
    bystander.write_all(b"still here").unwrap();
    assert_eq!(read_n(&mut bystander, 10), b"still here");
    drop(bystander);
    let stats = server.stop();
    assert_eq!(stats.accepted, 21);
    assert_eq!(stats.closed, 21);
}

/// A client written with Python's `socket` module, the way its documentation shows:
/// `sendall`, `shutdown(SHUT_WR)`, `recv` until empty.
#[test]
fn python_socket_client_round_trip() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let addr = server.addr(0);
    let script = r#"
import socket, sys, hashlib
host, port = sys.argv[1], int(sys.argv[2])
payload = bytes((i * 7 + 3) % 256 for i in range(300000))
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.connect((host, port))
    s.sendall(b"hello from python\n")
    got = b""
    while len(got) < 18:
        got += s.recv(1024)
    assert got == b"hello from python\n", got
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:
            break
        chunks.append(data)
    back = b"".join(chunks)
    assert back == payload, (len(back), len(payload))
print("ok", hashlib.sha256(back).hexdigest()[:16])
"#;
    let out = run_python(script, addr);
    assert!(out.starts_with("ok "), "{out}");
}

/// The client writes 64 MiB and reads nothing. The server must stop reading once its
/// queue for that peer passes the high-water mark (its memory stays small), and once
/// the client reads, every byte must arrive in order.
#[test]
fn a_writer_that_never_reads_is_paused_and_loses_nothing() {
    const TOTAL: usize = 64 << 20;
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let rss_before = server.rss_kb();
    let data = Arc::new(pattern(TOTAL, 4));
    let mut s = connect(server.addr(0));
    let mut w = s.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let (d, wr) = (data.clone(), written.clone());
    let writer = thread::spawn(move || {
        for chunk in d.chunks(64 * 1024) {
            w.write_all(chunk).unwrap();
            wr.fetch_add(chunk.len(), Ordering::Relaxed);
        }
        w.shutdown(Shutdown::Write).unwrap();
    });

    // Wait until the writer is stuck: every buffer on the way is full.
    let mut last = 0;
    let mut still_since = Instant::now();
    wait_until("the writer to stall", || {
        let now = written.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        still_since.elapsed() > Duration::from_millis(300)
    });
    assert!(
        last < TOTAL,
        "64 MiB fitted in buffers: the test proves nothing"
    );
    let stats = server.stats();
    assert!(stats["backpressure_pauses"] >= 1, "{stats:?}");
    assert!(stats["bytes_in"] < TOTAL as u64);
    let rss_growth = server.rss_kb().saturating_sub(rss_before);
    assert!(rss_growth < 8 * 1024, "server RSS grew by {rss_growth} KiB");

    // Now read: everything arrives, in order.
    let mut got = vec![0u8; TOTAL];
    s.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == *data, "echoed bytes differ");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} extra bytes after the echo", rest.len());
    let stats = server.stats();
    assert!(stats["backpressure_resumes"] >= 1, "{stats:?}");
    assert_eq!(stats["bytes_out"], TOTAL as u64);
}
