//! Load benchmark: sockloop's echo loop against a tokio `current_thread` echo server,
//! both in this process, driven by the same client over loopback in the same run.
//!
//! ```text
//! cargo bench --bench load                 # every scenario, 2 s each
//! cargo bench --bench load -- pp100 bulk   # only scenarios whose name contains an argument
//! SOCKLOOP_BENCH_SECS=5 cargo bench --bench load
//! ```
//!
//! Scenarios: `pp1`, `pp100`, `pp1000` — N connections, each with one 64-byte message
//! in flight (send, wait for the whole echo, check it, send the next); `bulk` — one
//! connection streaming 64 KiB writes while reading the echo back; `udp` — one socket
//! keeping 16 datagrams of 64 bytes in flight (a lost one is re-sent after 200 ms and
//! counted). Every echoed byte is checked. The client is one non-blocking mio loop, like the server, so on a 2-core
//! machine client and server each get about one core: ratios between the two servers,
//! measured in one run, mean more than absolute rates.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use sockloop::{Builder, services::Echo};

const MSG: usize = 64;
const CHUNK: usize = 64 * 1024;
const WARMUP: Duration = Duration::from_millis(300);

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: f64 = std::env::var("SOCKLOOP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let measure = Duration::from_secs_f64(secs);
    sockloop::sys::raise_nofile_limit().expect("raise the descriptor limit");

    let (sock_addr, sock_udp, sock_handle, sock_thread) = start_sockloop();
    let (tokio_addr, tokio_udp) = start_tokio();

    let scenarios: [(&str, usize); 5] = [
        ("pp1", 1),
        ("pp100", 100),
        ("pp1000", 1000),
        ("bulk", 1),
        ("udp", 1),
    ];
    println!("| scenario | sockloop | tokio | ratio | sockloop p50/p99 µs | tokio p50/p99 µs |");
    println!("|---|---|---|---|---|---|");
    for (name, conns) in scenarios {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        // Interleaved: the same client against each server, one after the other.
        let run = |tcp, udp| match name {
            "bulk" => bulk(tcp, measure),
            "udp" => udp_flood(udp, measure),
            _ => pingpong(tcp, conns, measure),
        };
        let (a, b) = (run(sock_addr, sock_udp), run(tokio_addr, tokio_udp));
        let unit = match name {
            "bulk" => "MB/s",
            "udp" => "dgram/s",
            _ => "msg/s",
        };
        let lat = |r: &Outcome| match r.latency_us {
            Some((p50, p99)) => format!("{p50} / {p99}"),
            None => "-".into(),
        };
        println!(
            "| {name} | {:.0} {unit} | {:.0} {unit} | {:.2}× | {} | {} |",
            a.rate,
            b.rate,
            a.rate / b.rate,
            lat(&a),
            lat(&b)
        );
        assert_eq!(a.errors + b.errors, 0, "{name}: echoed bytes did not match");
    }
    sock_handle.shutdown().expect("stop sockloop");
    let stats = sock_thread
        .join()
        .expect("sockloop thread")
        .expect("sockloop loop");
    println!("\nsockloop counters: {stats}");
}

/// What one scenario measured.
struct Outcome {
    /// Messages per second (ping-pong) or MB/s of echoed payload (bulk).
    rate: f64,
    latency_us: Option<(u64, u64)>,
    errors: u64,
}

impl Outcome {
    /// A rate of `count` per `measure`, with the median and 99th percentile of the
    /// latency samples (µs).
    fn from_samples(count: u64, measure: Duration, mut samples: Vec<u32>, errors: u64) -> Outcome {
        samples.sort_unstable();
        let pct = |p: f64| {
            let i = ((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1));
            samples.get(i).copied().unwrap_or(0) as u64
        };
        Outcome {
            rate: count as f64 / measure.as_secs_f64(),
            latency_us: Some((pct(0.50), pct(0.99))),
            errors,
        }
    }
}

type LoopThread = thread::JoinHandle<io::Result<sockloop::Stats>>;

fn start_sockloop() -> (SocketAddr, SocketAddr, sockloop::Handle, LoopThread) {
    let mut server = Builder::new()
        .listen("tcp://127.0.0.1:0".parse().expect("a URL"))
        .listen("udp://127.0.0.1:0".parse().expect("a URL"))
        .max_conns(20_000)
        .build(Echo)
        .expect("bind sockloop");
    let addrs: Vec<SocketAddr> = server
        .local_addrs()
        .iter()
        .map(|ep| {
            let hp = ep.host_port().expect("an internet address");
            SocketAddr::new(hp.host().parse().expect("an IP"), hp.port())
        })
        .collect();
    let handle = server.handle();
    (
        addrs[0],
        addrs[1],
        handle,
        thread::spawn(move || server.run()),
    )
}

/// The baseline: a task per connection, an 8 KiB buffer, `read` then `write_all`; for
/// UDP one task doing `recv_from` then `send_to`.
fn start_tokio() -> (SocketAddr, SocketAddr) {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tokio");
    std_listener.set_nonblocking(true).expect("non-blocking");
    let addr = std_listener.local_addr().expect("address");
    let std_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind tokio udp");
    std_udp.set_nonblocking(true).expect("non-blocking");
    let udp_addr = std_udp.local_addr().expect("address");
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let udp = tokio::net::UdpSocket::from_std(std_udp).expect("udp socket");
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                    let _ = udp.send_to(&buf[..n], peer).await;
                }
            });
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
    (addr, udp_addr)
}

/// The byte at `offset` of connection `conn`'s stream: every connection sends
/// different bytes, so a reply delivered to the wrong connection is caught too.
fn pattern_byte(conn: usize, offset: u64) -> u8 {
    (conn as u64)
        .wrapping_mul(31)
        .wrapping_add(offset.wrapping_mul(7)) as u8
}

fn fill(conn: usize, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(conn, offset + i as u64);
    }
}

fn check(conn: usize, offset: u64, buf: &[u8]) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(conn, offset + i as u64))
}

/// Opens `n` connections, ramping 100 at a time so the listen backlog never overflows.
fn connect_all(poll: &Poll, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(100) {
        for &i in batch {
            let std = std::net::TcpStream::connect(addr).expect("connect");
            std.set_nodelay(true).expect("nodelay");
            std.set_nonblocking(true).expect("non-blocking");
            let mut s = TcpStream::from_std(std);
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                .expect("register");
            conns.push(s);
        }
    }
    conns
}

struct PingConn {
    s: TcpStream,
    /// Bytes of the current message written and read back.
    sent: usize,
    got: usize,
    /// Stream offset of the current message, for the pattern.
    offset: u64,
    started: Instant,
}

fn pingpong(addr: SocketAddr, n: usize, measure: Duration) -> Outcome {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let now = Instant::now();
    let mut conns: Vec<PingConn> = connect_all(&poll, addr, n)
        .into_iter()
        .map(|s| PingConn {
            s,
            sent: 0,
            got: 0,
            offset: 0,
            started: now,
        })
        .collect();
    let mut wbuf = [0u8; MSG];
    let mut rbuf = [0u8; MSG];
    let mut samples: Vec<u32> = Vec::new();
    let (mut msgs, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    let (measure_from, end) = (start + WARMUP, start + WARMUP + measure);
    for (i, c) in conns.iter_mut().enumerate() {
        c.started = Instant::now();
        send_message(i, c, &mut wbuf);
    }
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.sent < MSG {
                send_message(i, c, &mut wbuf);
            }
            loop {
                match c.s.read(&mut rbuf[..MSG - c.got]) {
                    Ok(0) => panic!("server closed connection {i}"),
                    Ok(k) => {
                        if !check(i, c.offset + c.got as u64, &rbuf[..k]) {
                            errors += 1;
                        }
                        c.got += k;
                        if c.got < MSG {
                            continue;
                        }
                        let t = Instant::now();
                        if t >= measure_from {
                            msgs += 1;
                            samples.push(
                                t.duration_since(c.started)
                                    .as_micros()
                                    .min(u32::MAX as u128) as u32,
                            );
                        }
                        c.offset += MSG as u64;
                        c.got = 0;
                        c.sent = 0;
                        c.started = t;
                        send_message(i, c, &mut wbuf);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
    Outcome::from_samples(msgs, measure, samples, errors)
}

/// Writes what is left of the current message, stopping at WouldBlock (a writable
/// event brings the rest).
fn send_message(i: usize, c: &mut PingConn, buf: &mut [u8; MSG]) {
    fill(i, c.offset, buf);
    while c.sent < MSG {
        match c.s.write(&buf[c.sent..]) {
            Ok(k) => c.sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("write: {e}"),
        }
    }
}

fn bulk(addr: SocketAddr, measure: Duration) -> Outcome {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(64);
    let mut s = connect_all(&poll, addr, 1).pop().expect("a connection");
    let mut wbuf = vec![0u8; CHUNK];
    let mut rbuf = vec![0u8; CHUNK];
    let (mut sent, mut got, mut errors) = (0u64, 0u64, 0u64);
    let mut counted_from: Option<(Instant, u64)> = None;
    let start = Instant::now();
    let end = start + WARMUP + measure;
    let mut writable = true;
    while Instant::now() < end {
        // Keep at most a few chunks in flight so the echo keeps flowing both ways.
        while writable && sent - got < 4 * CHUNK as u64 {
            fill(0, sent, &mut wbuf);
            match s.write(&wbuf) {
                Ok(k) => sent += k as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable = false,
                Err(e) => panic!("write: {e}"),
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            writable |= ev.is_writable();
        }
        loop {
            match s.read(&mut rbuf) {
                Ok(0) => panic!("server closed the bulk connection"),
                Ok(k) => {
                    if !check(0, got, &rbuf[..k]) {
                        errors += 1;
                    }
                    got += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        if counted_from.is_none() && start.elapsed() >= WARMUP {
            counted_from = Some((Instant::now(), got));
        }
    }
    let (t0, got0) = counted_from.expect("the warm-up ended");
    Outcome {
        rate: (got - got0) as f64 / t0.elapsed().as_secs_f64() / 1e6,
        latency_us: None,
        errors,
    }
}

/// One UDP socket keeping [`UDP_DEPTH`] datagrams in flight. Each carries its sequence
/// number; a reply is checked against it. Loopback rarely loses datagrams, but a burst
/// can overflow a socket buffer: a datagram unanswered for 200 ms is replaced by a new
/// one and counted as lost (not as an error).
fn udp_flood(addr: SocketAddr, measure: Duration) -> Outcome {
    const UDP_DEPTH: usize = 16;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the client");
    sock.connect(addr).expect("connect the client");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut in_flight: std::collections::VecDeque<(u64, Instant)> =
        std::collections::VecDeque::new();
    let (mut next, mut replies, mut lost, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut msg = [0u8; MSG];
    let mut buf = [0u8; 2 * MSG];
    let mut samples: Vec<u32> = Vec::new();
    let start = Instant::now();
    let (measure_from, end) = (start + WARMUP, start + WARMUP + measure);
    while Instant::now() < end {
        while in_flight.len() < UDP_DEPTH {
            fill(next as usize, next, &mut msg);
            msg[..8].copy_from_slice(&next.to_le_bytes());
            sock.send(&msg).expect("send");
            in_flight.push_back((next, Instant::now()));
            next += 1;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                let seq = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
                let Some(pos) = in_flight.iter().position(|&(s, _)| s == seq) else {
                    errors += 1;
                    continue;
                };
                let (_, sent_at) = in_flight.remove(pos).expect("present");
                fill(seq as usize, seq, &mut msg);
                msg[..8].copy_from_slice(&seq.to_le_bytes());
                if buf[..n] != msg[..] {
                    errors += 1;
                }
                let t = Instant::now();
                if t >= measure_from {
                    replies += 1;
                    samples
                        .push(t.duration_since(sent_at).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Err(_) => {
                // Nothing for 200 ms: whatever is in flight is lost.
                lost += in_flight.len() as u64;
                in_flight.clear();
            }
        }
    }
    if lost > 0 {
        eprintln!("udp {addr}: {lost} datagrams lost and re-sent");
    }
    Outcome::from_samples(replies, measure, samples, errors)
}
