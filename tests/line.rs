//! Line mode: complete lines back unchanged, limits enforced, tails kept.

pub mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use sockloop::services::Line;
use util::child::Proc;
use util::net::{DEADLINE, connect, exchange, pattern, read_n, read_to_eof};
use util::server::{LibServer, tcp_builder};

fn line_server(max_line: usize) -> LibServer {
    LibServer::start(tcp_builder(), Line::new(max_line))
}

#[test]
fn pipelined_lines_in_one_write_come_back_unchanged() {
    let server = line_server(8192);
    let input = b"one\ntwo\nthree\n\nfour\n";
    assert_eq!(exchange(server.addr(), input), input);
}

#[test]
fn crlf_stays_crlf() {
    let server = line_server(8192);
    let input = b"GET / HTTP/1.0\r\nHost: x\r\n\r\nmixed\nends\r\n";
    assert_eq!(exchange(server.addr(), input), input);
}

#[test]
fn a_line_fed_byte_by_byte_comes_back_once_complete() {
    let server = line_server(8192);
    let mut s = connect(server.addr());
    for &b in b"hello wor" {
        s.write_all(&[b]).unwrap();
    }
    // Nothing may come back before the terminator.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("an unterminated line was answered: {other:?}"),
    }
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    for &b in b"ld\nnext\n" {
        s.write_all(&[b]).unwrap();
    }
    assert_eq!(read_n(&mut s, 17), b"hello world\nnext\n");
}

#[test]
fn unterminated_tail_is_written_back_at_eof() {
    let server = line_server(8192);
    assert_eq!(exchange(server.addr(), b"abc\ndef"), b"abc\ndef");
    assert_eq!(
        exchange(server.addr(), b"no newline at all"),
        b"no newline at all"
    );
}

#[test]
fn a_line_at_the_limit_is_accepted() {
    let server = line_server(16);
    let line = b"fifteen chars!!\n"; // 16 bytes with the terminator
    assert_eq!(line.len(), 16);
    assert_eq!(exchange(server.addr(), line), line);
    // Exactly the limit, unterminated, is still a valid tail at EOF.
    assert_eq!(exchange(server.addr(), &line[..15]), &line[..15]);
}

#[test]
fn an_over_long_line_gets_an_error_and_the_connection_closes() {
    let server = line_server(16);
    // The lines before it are answered first, then the error, then EOF.
    let mut s = connect(server.addr());
    s.write_all(b"ok\nseventeen chars!\nnever seen\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"ok\nERR line too long\n");
}

#[test]
fn an_over_long_line_split_across_reads_is_caught() {
    let server = line_server(16);
    let mut s = connect(server.addr());
    s.write_all(b"aaaaaaaa").unwrap();
    thread::sleep(Duration::from_millis(50));
    s.write_all(b"aaaaaaaaa").unwrap();
    // 17 bytes and no terminator yet: it can never become a valid line.
    assert_eq!(read_to_eof(&mut s), b"ERR line too long\n");
}

#[test]
fn a_ten_megabyte_line_is_refused_without_buffering_it() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0", "--mode", "line"]);
    let rss_before = server.rss_kb();
    let mut s = connect(server.addr(0));
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        // The server closes early; the rest of the write may fail with a reset.
        let _ = w.write_all(&vec![b'x'; 10 << 20]);
    });
    let got = read_to_eof(&mut s);
    let _ = writer.join();
    assert_eq!(got, b"ERR line too long\n");
    let growth = server.rss_kb().saturating_sub(rss_before);
    assert!(growth < 4 * 1024, "server RSS grew by {growth} KiB");
    // And it still serves.
    assert_eq!(exchange(server.addr(0), b"fine\n"), b"fine\n");
}

#[test]
fn binary_garbage_in_line_mode_is_answered_or_refused_never_crashes() {
    let server = line_server(1024);
    for seed in 0..20 {
        // Random bytes contain a newline about every 256 bytes: short lines are echoed.
        let data = pattern(64 * 1024, seed);
        let mut s = connect(server.addr());
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let got = read_to_eof(&mut s);
        let err = b"ERR line too long\n";
        if got.ends_with(err) {
            let body = &got[..got.len() - err.len()];
            assert!(data.starts_with(body), "seed {seed}: echoed prefix differs");
        } else {
            assert!(got == data, "seed {seed}: echo differs");
        }
    }
    assert_eq!(exchange(server.addr(), b"alive\n"), b"alive\n");
}
