//! Chat, discard and chargen, through the real binary: fan-out to every other client,
//! a chat client that never reads (closed, memory bounded, the others unharmed), RFC
//! 863 and RFC 864 on streams and datagrams, and a chargen client that stops reading.

pub mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use util::child::{Proc, expect_failure};
use util::net::{DEADLINE, connect, exchange, pattern, read_n, read_to_eof, wait_until};
use util::procfs::rss_kb;

/// Reads one `\n`-terminated line.
fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line");
    line
}

/// Connects `n` chat clients and waits until the server has every one of them in the
/// chat: the last one says `ready`, and each of the others must hear it.
fn chat_clients(server: &Proc, n: usize) -> Vec<BufReader<TcpStream>> {
    let mut clients: Vec<BufReader<TcpStream>> = (0..n)
        .map(|_| BufReader::new(connect(server.addr(0))))
        .collect();
    clients[n - 1].get_mut().write_all(b"ready\n").unwrap();
    for c in &mut clients[..n - 1] {
        assert_eq!(read_line(c), format!("<{n}> ready\n"));
    }
    clients
}

#[test]
fn chat_delivers_a_line_to_every_other_client_and_not_back() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--mode", "chat"]);
    let mut c = chat_clients(&server, 3);
    // A line in two writes, and two lines in one.
    c[0].get_mut().write_all(b"hello ").unwrap();
    c[0].get_mut().write_all(b"from one\nsecond\n").unwrap();
    for r in &mut c[1..] {
        assert_eq!(read_line(r), "<1> hello from one\n");
        assert_eq!(read_line(r), "<1> second\n");
    }
    c[1].get_mut().write_all(b"two here\r\n").unwrap();
    for i in [0, 2] {
        assert_eq!(read_line(&mut c[i]), "<2> two here\r\n");
    }
    // Nothing came back to a sender: its next line is the other client's.
    c[2].get_mut().write_all(b"last\n").unwrap();
    assert_eq!(read_line(&mut c[0]), "<3> last\n");
    assert_eq!(read_line(&mut c[1]), "<3> last\n");

    // A client that leaves is no longer relayed to; an unterminated tail is not a line.
    c[2].get_mut().write_all(b"no newline").unwrap();
    c[2].get_mut().shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(c[2].get_mut()).is_empty());
    wait_until("the third client to be gone", || {
        server.stats()["active"] == 2
    });
    c[0].get_mut().write_all(b"still\n").unwrap();
    assert_eq!(read_line(&mut c[1]), "<1> still\n");
}

#[test]
fn chat_refuses_an_over_long_line() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--mode",
        "chat",
        "--max-line",
        "16",
    ]);
    let mut c = chat_clients(&server, 2);
    c[0].get_mut().write_all(&[b'x'; 40]).unwrap();
    let mut got = Vec::new();
    c[0].read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ERR line too long\n");
    // The other client heard nothing and is still served.
    c[1].get_mut().write_all(b"alone\n").unwrap();
    c[1].get_mut().shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(c[1].get_mut()).is_empty());
}

#[test]
fn a_chat_client_that_never_reads_is_closed_and_memory_stays_bounded() {
    const TOTAL: usize = 50 << 20;
    const LINE: usize = 64;
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--mode",
        "chat",
        "--max-outbuf",
        "2097152",
    ]);
    let mut c = chat_clients(&server, 3);
    let (sender, reader, silent) = (c.remove(0), c.remove(0), c.remove(0));
    let rss_before = server.rss_kb();

    // The reader counts what it hears and checks every line, in order.
    let lines = TOTAL / LINE;
    let received = Arc::new(AtomicU64::new(0));
    let reading = {
        let received = received.clone();
        thread::spawn(move || {
            let mut r = reader;
            for i in 0..lines {
                let line = read_line(&mut r);
                assert_eq!(line, format!("<1> {i:0>63}\n"), "line {i}");
                received.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    };
    // The server's peak memory while it relays.
    let done = Arc::new(AtomicBool::new(false));
    let peak = {
        let (done, pid) = (done.clone(), server.child.id());
        thread::spawn(move || {
            // Sample until the relay is over, and once after: never zero samples.
            let mut peak = 0;
            loop {
                let finished = done.load(Ordering::Relaxed);
                peak = peak.max(rss_kb(pid));
                if finished {
                    return peak;
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // The sender stays at most 2 MiB ahead of the reader: the reader is a client that
    // keeps up (with its own kernel buffers, nothing waits for it in the server), and
    // the silent client is the only one that does not.
    let mut w = sender.into_inner();
    let mut batch = Vec::with_capacity(1 << 20);
    let mut sent_lines = 0u64;
    for i in 0..lines {
        batch.extend_from_slice(format!("{i:0>63}\n").as_bytes());
        if batch.len() >= 1 << 20 || i + 1 == lines {
            let lead = (2 << 20) / LINE as u64;
            wait_until("the reader to catch up", || {
                received.load(Ordering::Relaxed) + lead >= sent_lines
            });
            w.write_all(&batch).unwrap();
            sent_lines += (batch.len() / LINE) as u64;
            batch.clear();
        }
    }
    let _reader = reading.join().expect("the reader got every line");
    done.store(true, Ordering::Relaxed);
    let peak_kb = peak.join().expect("measuring the server's memory");
    assert_eq!(received.load(Ordering::Relaxed), lines as u64);

    // The silent client was cut off, not buffered for.
    let stats = server.stats();
    assert_eq!(stats["slow_consumers"], 1, "{stats:?}");
    let mut silent = silent.into_inner();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let held = read_to_eof(&mut silent).len();
    assert!(held < TOTAL / 2, "the silent client got {held} bytes");
    let grown_kb = peak_kb.saturating_sub(rss_before);
    eprintln!(
        "chat, 50 MiB relayed past a silent client: server RSS grew by {grown_kb} KiB at most"
    );
    assert!(
        grown_kb < 24 * 1024,
        "server memory grew by {grown_kb} KiB while relaying"
    );
}

#[test]
fn chat_with_several_workers_is_refused() {
    expect_failure(
        &[
            "serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--mode",
            "chat",
            "--workers",
            "2",
        ],
        2,
        "--workers",
    );
    expect_failure(
        &[
            "serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "tcp://127.0.0.1:0?mode=chat",
            "--workers",
            "2",
        ],
        2,
        "chat",
    );
}

#[test]
fn discard_reads_everything_and_sends_nothing() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--mode",
        "discard",
    ]);
    let data = pattern(3 << 20, 9);
    assert!(exchange(server.addr(0), &data).is_empty());

    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    u.send_to(b"into the void", server.addr(1)).unwrap();
    wait_until("the datagram to arrive", || {
        server.stats()["datagrams_in"] == 1
    });
    assert!(
        u.recv(&mut [0u8; 64]).is_err(),
        "discard answered a datagram"
    );
    let stats = server.stats();
    assert_eq!(stats["bytes_in"], data.len() as u64 + 13);
    assert_eq!(stats["bytes_out"], 0);
    assert_eq!(stats["datagrams_out"], 0);
}

/// The RFC 864 pattern, computed here independently of the server: line `i` is 72
/// characters of the printable ring starting at character `i`, then CR LF.
fn rfc864(lines: usize) -> Vec<u8> {
    let ring: Vec<u8> = (b' '..=b'~').collect();
    assert_eq!(ring.len(), 95);
    let mut out = Vec::new();
    for i in 0..lines {
        out.extend((0..72).map(|j| ring[(i + j) % 95]));
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn chargen_lines_match_rfc_864_on_streams_and_datagrams() {
    let server = Proc::serve(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--mode",
        "chargen",
    ]);
    let mut s = connect(server.addr(0));
    // 300 lines: past the end of the ring and back to its start.
    let got = read_n(&mut s, 300 * 74);
    assert_eq!(
        &got[..74],
        b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n"
    );
    assert!(got == rfc864(300), "chargen stream differs from RFC 864");
    // What the client sends is ignored; its EOF ends the stream.
    s.write_all(b"stop, please\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let rest = read_to_eof(&mut s);
    assert!(rest.len() < 64 << 20);

    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 2048];
    for (ask, want) in [(1000, 512), (100, 100), (0, 0)] {
        u.send_to(&vec![b'?'; ask], server.addr(1)).unwrap();
        let n = u.recv(&mut buf).unwrap();
        assert_eq!(n, want, "reply to a {ask}-byte datagram");
        assert_eq!(&buf[..n], &rfc864(7)[..n]);
    }
}

#[test]
fn chargen_writes_only_as_fast_as_the_client_reads() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--mode", "chargen"]);
    let rss_before = server.rss_kb();
    let mut s = connect(server.addr(0));
    // Not reading: the socket buffers fill, then the server stops writing.
    let mut last = u64::MAX;
    wait_until(
        "chargen to stop writing to a client that does not read",
        || {
            thread::sleep(Duration::from_millis(200));
            let now = server.stats()["bytes_out"];
            std::mem::replace(&mut last, now) == now && now > 0
        },
    );
    let stalled = last;
    assert!(
        stalled < 64 << 20,
        "{stalled} bytes written to a client that reads nothing"
    );
    thread::sleep(Duration::from_millis(300));
    let stats = server.stats();
    assert_eq!(stats["bytes_out"], stalled, "writes went on: {stats:?}");
    let grown = server.rss_kb().saturating_sub(rss_before);
    assert!(
        grown < 2048,
        "server grew by {grown} KiB for a stalled chargen client"
    );

    // Reading again resumes the stream where it stopped, still in pattern.
    let got = read_n(&mut s, stalled as usize + 10 * 74);
    let cycle = rfc864(95);
    assert!(
        got.chunks(cycle.len()).all(|c| c == &cycle[..c.len()]),
        "the stream lost its place in the pattern"
    );
    wait_until("chargen to write past the stall", || {
        server.stats()["bytes_out"] > stalled
    });
}
