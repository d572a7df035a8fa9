//! Memory under fan-out, through the real binary: what a burst of queued output costs,
//! that it comes back once the burst is over, and the ceiling on all queued output
//! together (`--max-outbuf-total`).

pub mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use util::child::{Proc, bin};
use util::net::{connect, wait_until};
use util::procfs::rss_kb;

const KIB: u64 = 1024;

/// A chat server logging at `debug` (every close says why), with extra arguments.
fn chat_server(extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", "tcp://127.0.0.1:0", "--mode", "chat"])
        .args(extra)
        .env("RUST_LOG", "debug");
    Proc::spawn(cmd, 1)
}

/// `n` clients in the chat, known to the server (each has been accepted).
fn join_chat(server: &Proc, n: usize) -> Vec<TcpStream> {
    let before = server.stats()["accepted"];
    let clients: Vec<TcpStream> = (0..n).map(|_| connect(server.addr(0))).collect();
    wait_until("every client to be accepted", || {
        server.stats()["accepted"] >= before + n as u64
    });
    clients
}

/// Samples the server's resident memory every 20 ms until stopped; returns the peak.
fn sample_peak(pid: u32) -> (Arc<AtomicBool>, JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = stop.clone();
    let sampler = thread::spawn(move || {
        let mut peak = rss_kb(pid);
        while !done.load(Ordering::Relaxed) {
            peak = peak.max(rss_kb(pid));
            thread::sleep(Duration::from_millis(20));
        }
        peak.max(rss_kb(pid))
    });
    (stop, sampler)
}

/// `count` lines of `len` bytes, `\n` included.
fn lines(count: usize, len: usize) -> Vec<u8> {
    let mut line = vec![b'x'; len - 1];
    line.push(b'\n');
    line.repeat(count)
}

/// Sixty chat clients that do not read while one sends 12,000 lines of 1 KB: each of
/// them is owed 12 MB — more than the kernel's socket buffers hold for it (up to
/// `tcp_wmem`'s 4 MB here) and the server's 4 MiB `--max-outbuf` together — so the
/// server queues 4 MiB for each and closes them as slow consumers. Then everyone
/// leaves. Three such waves: after each, with nobody connected, the server's memory
/// must be back within 16 MiB of what it was before the first — the queued output went
/// back to the system, not only to the allocator.
#[test]
fn memory_comes_back_after_waves_of_slow_readers() {
    const RECEIVERS: usize = 60;
    let server = chat_server(&[]);
    let pid = server.child.id();
    let baseline = rss_kb(pid);
    let burst = lines(12_000, 1024);
    let mut peaks = Vec::new();
    for wave in 1..=3u64 {
        let receivers = join_chat(&server, RECEIVERS);
        let mut sender = join_chat(&server, 1).remove(0);
        let (stop, sampler) = sample_peak(pid);
        sender.write_all(&burst).unwrap();
        wait_until(
            "every silent receiver to be closed as a slow consumer",
            || server.stats()["slow_consumers"] >= wave * RECEIVERS as u64,
        );
        stop.store(true, Ordering::Relaxed);
        peaks.push(sampler.join().unwrap());
        drop(sender);
        drop(receivers);
        wait_until("everyone to be gone", || server.stats()["active"] == 0);
        let mut now = rss_kb(pid);
        wait_until("memory to come back", || {
            now = rss_kb(pid);
            now <= baseline + 16 * KIB
        });
        eprintln!(
            "wave {wave}: baseline {baseline} KiB, peak {} KiB, after {now} KiB",
            peaks[peaks.len() - 1]
        );
    }
    // The test is only worth something if the waves did make the server hold output.
    let peak = peaks.iter().copied().max().unwrap_or(0);
    assert!(
        peak > baseline + 100 * 1024,
        "the bursts never made the server queue much (peak {peak} KiB, baseline {baseline} KiB)"
    );
    let log = server.stderr();
    assert!(
        log.contains("closed (slow consumer: ") && log.contains("--max-outbuf)"),
        "no close was logged as a slow consumer:\n{log}"
    );
}

/// Sixty chat clients that never read, each owed 8 MB (480 MB in all) — about half of
/// it beyond what the kernel buffers for it, so the server would queue some 240 MB,
/// each connection under its own limit (raised to 16 MiB here) — against a 32 MiB
/// ceiling on all queued output: the server closes the connections that owe the most,
/// says so, counts them, and its memory stays near the ceiling. A client that reads
/// keeps up and gets every line.
#[test]
fn the_ceiling_on_all_output_closes_the_biggest_first() {
    const SILENT: usize = 60;
    const LINES: usize = 8000;
    let server = chat_server(&["--max-outbuf", "16777216", "--max-outbuf-total", "33554432"]);
    let pid = server.child.id();
    let mut reader = BufReader::new(join_chat(&server, 1).remove(0));
    let silent = join_chat(&server, SILENT);
    let mut sender = join_chat(&server, 1).remove(0);
    let baseline = rss_kb(pid);
    let reading = thread::spawn(move || {
        let mut line = String::new();
        for i in 0..LINES {
            line.clear();
            reader.read_line(&mut line).expect("a line");
            assert!(
                line.ends_with("x\n") && line.len() > 1000,
                "line {i}: {line:?}"
            );
        }
        reader
    });
    let (stop, sampler) = sample_peak(pid);
    sender.write_all(&lines(LINES, 1024)).unwrap();
    let _reader = reading.join().expect("the reading client got every line");
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();

    let stats = server.stats();
    assert!(stats["outbuf_evictions"] > 0, "{stats:?}");
    assert_eq!(
        stats["slow_consumers"], stats["outbuf_evictions"],
        "no connection reached its own limit: every slow consumer was an eviction"
    );
    assert_eq!(
        stats["active"],
        2 + SILENT as u64 - stats["outbuf_evictions"]
    );
    let grown = peak.saturating_sub(baseline);
    eprintln!("480 MB owed against a 32 MiB ceiling: server RSS grew by {grown} KiB at most");
    assert!(
        grown < 64 * 1024,
        "memory grew by {grown} KiB under a 32 MiB ceiling"
    );
    let log = server.stderr();
    let evictions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("--max-outbuf-total") && l.contains("closing, slow consumer"))
        .collect();
    assert_eq!(evictions.len() as u64, stats["outbuf_evictions"], "{log}");
    assert!(
        evictions.iter().all(|l| l.contains("from 127.0.0.1:")),
        "each eviction names the peer: {evictions:?}"
    );
    drop(silent);
}

/// Opens `n` connections to `addr`, each writing `first` (nothing: idle), and waits
/// until the server has read all those bytes and accepted all of them.
fn hold_connections(server: &Proc, n: usize, first: &[u8]) -> Vec<TcpStream> {
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = connect(server.addr(0));
            if !first.is_empty() {
                s.write_all(first).expect("write the first bytes");
            }
            s
        })
        .collect();
    wait_until("every connection accepted and read", || {
        let st = server.stats();
        st["accepted"] >= n as u64 && st["bytes_in"] >= (n * first.len()) as u64
    });
    conns
}

/// Ten thousand connections that never finish their PROXY header cost what ten
/// thousand idle connections cost, plus the header bytes each sent (kept until the
/// header is whole) and their place in the table of unfinished headers — and they
/// are closed at the deadline, every one counted as a timeout.
#[test]
fn unfinished_proxy_headers_cost_what_idle_connections_cost() {
    const N: usize = 10_000;
    const SENT: usize = 10;
    util::server::raise_nofile();
    let idle_cost = {
        let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
        let before = server.rss_kb();
        let conns = hold_connections(&server, N, b"");
        let cost = server.rss_kb().saturating_sub(before);
        drop(conns);
        cost
    };
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0?proxy=v2",
        "--handshake-timeout",
        "4",
    ]);
    let before = server.rss_kb();
    let header = sockloop::proxy::encode(
        sockloop::proxy::ProxyVersion::V2,
        "203.0.113.9:41000".parse().unwrap(),
        "192.0.2.1:5001".parse().unwrap(),
    );
    let mut conns = hold_connections(&server, N, &header[..SENT]);
    let cost = server.rss_kb().saturating_sub(before);
    // Per connection: the bytes, a heap block for them (32 bytes with malloc's
    // overhead) and a hash table slot, which doubles as the table grows.
    let allowance_kb = (N * 200 / 1024) as u64;
    eprintln!(
        "{N} idle connections: {idle_cost} KiB; {N} with {SENT} bytes of an unfinished \
         header: {cost} KiB"
    );
    assert!(
        cost <= idle_cost + allowance_kb,
        "{N} unfinished headers cost {cost} KiB, idle connections {idle_cost} KiB \
         (allowance {allowance_kb} KiB)"
    );
    wait_until("every unfinished header to time out", || {
        server.stats()["proxy_timeouts"] == N as u64
    });
    let st = server.stats();
    assert_eq!((st["active"], st["proxy_errors"]), (0, 0));
    let mut buf = [0u8; 1];
    for s in conns.iter_mut().step_by(997) {
        assert_eq!(s.read(&mut buf).expect("closed, not reset"), 0);
    }
}
