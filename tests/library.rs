//! The library as an embedding program uses it: a service written here (not a built-in
//! one) over TCP, UDP and Unix sockets, writes to another connection by id, a producer
//! driven by `writable`, sockets bound by the caller, `turn()` driven by hand, shutdown
//! from another thread, and several workers.

pub mod util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::thread;
use std::time::{Duration, Instant};

use sockloop::{Builder, ConnId, Context, DatagramContext, Service};
use util::fs::TempDir;
use util::net::{
    DEADLINE, connect, exchange, read_n, read_to_eof, sockaddr, unix_exchange, wait_until,
};
use util::server::{LibServer, tcp_builder};

/// A protocol of our own: greets with `hi <id>`, answers each line upper-cased, `who`
/// lists the connections it knows, `tell ID TEXT` sends TEXT to connection ID,
/// `bye` closes. Datagrams are answered upper-cased.
#[derive(Default)]
struct Shout {
    /// Connections open now, by sequence number.
    open: HashMap<u32, ConnId>,
    closed: Vec<u32>,
}

impl Service for Shout {
    type State = Vec<u8>;

    fn open(&mut self, ctx: &mut Context<'_>) -> Vec<u8> {
        let id = ctx.id();
        self.open.insert(id.seq(), id);
        ctx.write(format!("hi {id}\n").as_bytes());
        Vec::new()
    }

    fn data(&mut self, partial: &mut Vec<u8>, data: &[u8], ctx: &mut Context<'_>) {
        partial.extend_from_slice(data);
        while let Some(i) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..i]).into_owned();
            let mut words = text.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("bye"), _, _) => {
                    ctx.write(b"BYE\n");
                    ctx.close();
                    return;
                }
                (Some("who"), _, _) => {
                    let mut ids: Vec<u32> = self.open.keys().copied().collect();
                    ids.sort();
                    ctx.write(format!("{ids:?}\n").as_bytes());
                }
                (Some("tell"), Some(to), Some(msg)) => {
                    let target = to.parse().ok().and_then(|n: u32| self.open.get(&n));
                    let sent = match target {
                        Some(&id) => {
                            ctx.write_to(id, format!("from {}: {msg}\n", ctx.id()).as_bytes())
                        }
                        None => false,
                    };
                    ctx.write(if sent { b"SENT\n" } else { b"GONE\n" });
                }
                _ => ctx.write(&line.to_ascii_uppercase()),
            }
        }
    }

    fn close(&mut self, _partial: Vec<u8>, id: ConnId) {
        self.open.remove(&id.seq());
        self.closed.push(id.seq());
    }

    fn datagram(&mut self, data: &[u8], ctx: &mut DatagramContext<'_>) {
        ctx.reply(&data.to_ascii_uppercase());
    }
}

fn line<R: Read>(r: &mut BufReader<R>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read a line");
    s
}

#[test]
fn a_service_of_our_own_over_tcp_udp_and_unix() {
    let dir = TempDir::new();
    let sock = dir.join("shout.sock");
    let dgram = dir.join("shout.dgram");
    let server = LibServer::start(
        Builder::new()
            .listen("tcp://127.0.0.1:0".parse().unwrap())
            .listen("udp://127.0.0.1:0".parse().unwrap())
            .listen(format!("unix:{}", sock.display()).parse().unwrap())
            .listen(format!("unixgram:{}", dgram.display()).parse().unwrap()),
        Shout::default(),
    );

    // TCP: greeting, a line split over writes, then a close asked by the service.
    let mut tcp = BufReader::new(connect(server.addrs[0]));
    assert_eq!(line(&mut tcp), "hi 1\n");
    tcp.get_mut().write_all(b"hello ").unwrap();
    tcp.get_mut().write_all(b"there\nbye\n").unwrap();
    assert_eq!(line(&mut tcp), "HELLO THERE\n");
    assert_eq!(line(&mut tcp), "BYE\n");
    assert!(read_to_eof(tcp.get_mut()).is_empty());

    // Unix stream: the same service, unchanged.
    let u = UnixStream::connect(&sock).unwrap();
    u.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut unix = BufReader::new(u);
    assert_eq!(line(&mut unix), "hi 2\n");
    unix.get_mut().write_all(b"over unix\n").unwrap();
    assert_eq!(line(&mut unix), "OVER UNIX\n");
    unix.get_mut().shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(unix.get_mut()).is_empty());

    // UDP and Unix datagrams.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(DEADLINE)).unwrap();
    udp.send_to(b"datagram", server.addrs[1]).unwrap();
    let mut buf = [0u8; 64];
    let n = udp.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"DATAGRAM");
    let client_path = dir.join("client.dgram");
    let ud = UnixDatagram::bind(&client_path).unwrap();
    ud.set_read_timeout(Some(DEADLINE)).unwrap();
    ud.send_to(b"unixgram", &dgram).unwrap();
    let n = ud.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"UNIXGRAM");

    let stats = server.stop();
    assert_eq!((stats.accepted, stats.closed), (2, 2));
    assert_eq!(stats.datagrams_out, 2);
}

#[test]
fn a_service_writes_to_another_connection_by_id() {
    let server = LibServer::start(tcp_builder(), Shout::default());
    let mut a = BufReader::new(connect(server.addr()));
    let mut b = BufReader::new(connect(server.addr()));
    assert_eq!(line(&mut a), "hi 1\n");
    assert_eq!(line(&mut b), "hi 2\n");
    a.get_mut().write_all(b"who\ntell 2 psst\n").unwrap();
    assert_eq!(line(&mut a), "[1, 2]\n");
    assert_eq!(line(&mut a), "SENT\n");
    assert_eq!(line(&mut b), "from 1: psst\n");
    // An id whose connection is gone: nothing is sent, and nothing else is hit.
    b.get_mut().write_all(b"bye\n").unwrap();
    assert_eq!(line(&mut b), "BYE\n");
    assert!(read_to_eof(b.get_mut()).is_empty());
    let mut c = BufReader::new(connect(server.addr()));
    assert_eq!(line(&mut c), "hi 3\n");
    a.get_mut().write_all(b"tell 2 anyone?\n").unwrap();
    assert_eq!(line(&mut a), "GONE\n");
    // Closed for the service once the peer has closed too (until then it lingers).
    drop(b);
    wait_until("connection 2 to be closed", || {
        a.get_mut().write_all(b"who\n").unwrap();
        line(&mut a) == "[1, 3]\n"
    });
}

/// Sends `total` bytes of a counter pattern through `writable`, one chunk per call,
/// then closes: the producer pattern of chargen, in a service of our own.
struct Produce {
    total: usize,
    chunk: usize,
}

impl Service for Produce {
    type State = usize;

    fn open(&mut self, ctx: &mut Context<'_>) -> usize {
        ctx.want_writable();
        0
    }

    fn data(&mut self, _sent: &mut usize, _data: &[u8], _ctx: &mut Context<'_>) {}

    fn writable(&mut self, sent: &mut usize, ctx: &mut Context<'_>) {
        assert_eq!(ctx.queued(), 0, "writable while output is queued");
        let n = self.chunk.min(self.total - *sent);
        let bytes: Vec<u8> = (*sent..*sent + n).map(|i| (i % 251) as u8).collect();
        ctx.write(&bytes);
        *sent += n;
        if *sent < self.total {
            ctx.want_writable();
        } else {
            ctx.close();
        }
    }
}

#[test]
fn writable_drives_a_producer_at_the_readers_pace() {
    let total = 8 << 20;
    let server = LibServer::start(
        tcp_builder(),
        Produce {
            total,
            chunk: 100_000,
        },
    );
    let mut s = connect(server.addr());
    // Read slowly at first: the producer must wait, not queue.
    let mut got = vec![0u8; 1000];
    s.read_exact(&mut got).unwrap();
    thread::sleep(Duration::from_millis(200));
    got.extend(read_to_eof(&mut s));
    assert_eq!(got.len(), total);
    assert!(
        got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
        "bytes out of order"
    );
    let stats = server.stop();
    assert_eq!(stats.bytes_out, total as u64);
}

#[test]
fn sockets_bound_by_the_caller_are_served() {
    let dir = TempDir::new();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let path = dir.join("given.sock");
    let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = LibServer::start(
        Builder::new()
            .listen_socket(tcp)
            .listen_socket(udp)
            .listen_socket(unix),
        sockloop::services::Echo,
    );
    assert_eq!(server.endpoints[0].to_string(), format!("tcp://{tcp_addr}"));
    assert_eq!(server.endpoints[1].to_string(), format!("udp://{udp_addr}"));
    assert_eq!(
        server.endpoints[2].to_string(),
        format!("unix:{}", path.display())
    );
    assert_eq!(exchange(tcp_addr, b"given"), b"given");
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    c.send_to(b"dgram", udp_addr).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&mut buf).unwrap(), 5);
    assert_eq!(unix_exchange(&path, b"unix"), b"unix");
    drop(server);
    // The loop did not make the socket file, so it leaves it to its owner.
    assert!(path.exists());
}

#[test]
fn turn_driven_by_hand_serves_between_other_work() {
    let mut server = tcp_builder().build(Shout::default()).unwrap();
    let addr = sockaddr(&server.local_addrs()[0]);
    let client = thread::spawn(move || {
        let mut s = BufReader::new(connect(addr));
        let greeting = line(&mut s);
        s.get_mut().write_all(b"turn by turn\n").unwrap();
        let answer = line(&mut s);
        s.get_mut().shutdown(Shutdown::Write).unwrap();
        read_to_eof(s.get_mut());
        (greeting, answer)
    });
    let mut turns = 0;
    let deadline = Instant::now() + DEADLINE;
    while server.stats().closed < 1 {
        server.turn(Some(Duration::from_millis(20))).unwrap();
        turns += 1; // the outer loop's own work would go here
        assert!(Instant::now() < deadline, "the client was not served");
    }
    let (greeting, answer) = client.join().unwrap();
    assert_eq!(greeting, "hi 1\n");
    assert_eq!(answer, "TURN BY TURN\n");
    assert!(turns >= 2);
    assert_eq!(server.service().closed, vec![1]);
    // A turn with nothing to do returns after its timeout, not before, and not never.
    let t = Instant::now();
    server.turn(Some(Duration::from_millis(50))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(40));
    // Shutdown through the handle, finished by more turns.
    server.handle().shutdown().unwrap();
    while !server.is_finished() {
        server.turn(Some(Duration::from_millis(20))).unwrap();
    }
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn a_handle_stops_the_loop_from_another_thread() {
    let mut server = tcp_builder().build(sockloop::services::Echo).unwrap();
    let addr = sockaddr(&server.local_addrs()[0]);
    let handle = server.handle();
    let mut open = connect(addr);
    let stopper = thread::spawn(move || {
        // Echoed data is delivered before the loop stops: the shutdown is graceful.
        open.write_all(b"before").unwrap();
        let got = read_n(&mut open, 6);
        handle.shutdown().unwrap();
        let rest = read_to_eof(&mut open);
        (got, rest)
    });
    let stats = server.run().unwrap();
    let (got, rest) = stopper.join().unwrap();
    assert_eq!(got, b"before");
    assert!(rest.is_empty());
    assert_eq!((stats.accepted, stats.closed, stats.active), (1, 1, 0));
}

#[test]
fn workers_share_the_listeners_and_stop_together() {
    let dir = TempDir::new();
    let sock = dir.join("w.sock");
    let workers = Builder::new()
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .listen("udp://127.0.0.1:0".parse().unwrap())
        .listen(format!("unix:{}", sock.display()).parse().unwrap())
        .build_workers(3, |_| sockloop::services::Echo)
        .unwrap();
    assert_eq!(workers.len(), 3);
    let addrs = workers.local_addrs();
    let (tcp, udp) = (sockaddr(&addrs[0]), sockaddr(&addrs[1]));
    let handle = workers.handle();
    let running = thread::spawn(move || workers.run());
    for i in 0..30u32 {
        let msg = format!("message {i}");
        assert_eq!(exchange(tcp, msg.as_bytes()), msg.as_bytes());
    }
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    for _ in 0..5 {
        c.send_to(b"ping", udp).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(c.recv(&mut buf).unwrap(), 4);
    }
    for _ in 0..5 {
        assert_eq!(unix_exchange(&sock, b"unix"), b"unix");
    }
    handle.shutdown().unwrap();
    let stats = running.join().unwrap().unwrap();
    assert_eq!(stats.accepted, 35, "{stats}");
    assert_eq!(stats.closed, 35);
    assert_eq!(stats.datagrams_out, 5);
    assert!(!sock.exists(), "the socket file outlived the workers");
}

#[test]
fn the_handle_is_send_sync_and_clone_and_loops_move_to_threads() {
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync_clone::<sockloop::Handle>();
    send::<sockloop::EventLoop<Shout>>();
    send::<sockloop::Workers<sockloop::services::Modes>>();
    send_sync_clone::<sockloop::Stats>();
}
