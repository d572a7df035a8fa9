//! Regression tests, each named after the mistake it pins: the subtle rules of a
//! readiness loop, driven one turn at a time through the library.

pub mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use socket2::SockRef;
use sockloop::services::Echo;
use sockloop::{Config, ConnId, Context, EventLoop, Service};
use util::net::{DEADLINE, connect, pattern, read_n, sockaddr, wait_until};
use util::procfs;
use util::server::{LibServer, tcp_builder};

/// Records the id of every connection it sees; answers nothing.
#[derive(Default)]
struct Recorder {
    opened: Vec<ConnId>,
}

impl Service for Recorder {
    type State = ();
    fn open(&mut self, ctx: &mut Context<'_>) {
        self.opened.push(ctx.id());
    }
    fn data(&mut self, _: &mut (), _: &[u8], _: &mut Context<'_>) {}
}

fn turn_until<S: Service>(
    server: &mut EventLoop<S>,
    what: &str,
    mut cond: impl FnMut(&EventLoop<S>) -> bool,
) {
    let start = std::time::Instant::now();
    while !cond(server) {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        server.turn(Some(Duration::from_millis(50))).unwrap();
    }
}

/// A connection stopped by its read budget waits on the list of sockets to serve next
/// turn. If it is reset and a new connection takes its slot before that turn serves
/// the list, the old entry must not act on the newcomer.
#[test]
fn a_stale_token_left_for_next_turn_does_not_touch_the_connection_reusing_its_slot() {
    let mut config = Config::default();
    config.read_budget = 1;
    let mut server = tcp_builder()
        .config(config)
        .build(Recorder::default())
        .unwrap();
    let addr = sockaddr(&server.local_addrs()[0]);
    let mut exercised = 0;
    for _ in 0..20 {
        let base = server.stats();
        // A: 200 KiB queued, more than one 64 KiB read: the budget of one read runs out.
        let mut a = TcpStream::connect(addr).unwrap();
        a.write_all(&pattern(200 * 1024, 1)).unwrap();
        turn_until(&mut server, "A's read budget to run out", |s| {
            s.stats().budget_yields > base.budget_yields
        });
        // Reset A and connect B before the turn that would serve A's pending entry.
        SockRef::from(&a).set_linger(Some(Duration::ZERO)).unwrap();
        drop(a);
        let b = TcpStream::connect(addr).unwrap();
        turn_until(&mut server, "B to be accepted", |s| {
            s.stats().accepted == base.accepted + 2
        });
        turn_until(&mut server, "A to be closed", |s| {
            s.stats().closed == base.closed + 1
        });
        let ids = &server.service().opened;
        let (id_a, id_b) = (ids[ids.len() - 2], ids[ids.len() - 1]);
        if id_a.slot() == id_b.slot() {
            exercised += 1;
            assert_ne!(id_a, id_b, "a reused slot must get a new id");
        }
        // B sent nothing: any read on it would have come from A's stale entry.
        assert_eq!(
            server.stats().read_would_block,
            base.read_would_block,
            "a read was made on B although B sent nothing"
        );
        SockRef::from(&b).set_linger(Some(Duration::ZERO)).unwrap();
        drop(b);
        turn_until(&mut server, "B to be closed", |s| s.stats().active == 0);
    }
    assert!(
        exercised > 0,
        "B never reused A's slot: the test did not exercise the case"
    );
}

/// Edge-triggered readiness reports new data once. A connection that stops reading
/// because of its budget must be served again without waiting for another edge.
#[test]
fn a_connection_stopped_by_its_budget_is_served_without_a_new_edge() {
    let mut config = Config::default();
    config.read_budget = 1;
    let server = LibServer::start(tcp_builder().config(config), sockloop::services::Echo);
    let data = pattern(2 << 20, 7);
    let mut s = connect(server.addr());
    let mut w = s.try_clone().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&d).unwrap());
    // The client sends everything and then nothing more: no new edge will come.
    assert!(read_n(&mut s, data.len()) == data);
    writer.join().unwrap();
    drop(s);
    assert!(server.stop().budget_yields > 0);
}

/// A read shorter than the buffer usually means the kernel queue is empty, and the loop
/// skips the read that would only return WouldBlock. But when the same event reported
/// read-closed, the peer's FIN is already queued behind the data, and no further edge
/// will announce it: the loop must read on to the EOF.
///
/// The data and the FIN arrive together every time, by construction. The loop is built
/// but not turned, so the server side accepts and reads nothing yet. The client writes
/// a short message, shuts down its write side, and waits until its socket is in
/// FIN_WAIT2: the server's kernel has acknowledged the FIN, which it does only once
/// everything before the FIN has arrived, so the message and the FIN both sit queued
/// on a connection the loop has not even accepted. Only then is the loop turned: it
/// accepts and registers the connection, and its first event on it reports readable
/// and read-closed at once. The first read is short (the message, into a buffer many
/// times its size), the second returns the EOF, the echo goes out, and the connection
/// closes: exactly two stream reads.
///
/// A loop that took the short read for an empty queue would stop after it and wait
/// for an edge that never comes. The connection would never close, and the test would
/// fail when `turn_until` reaches its deadline.
#[test]
fn fin_arriving_with_the_data_is_not_missed() {
    const MSG: &[u8] = b"short message";
    let mut server = tcp_builder().build(Echo).unwrap();
    let addr = sockaddr(&server.local_addrs()[0]);
    let mut s = connect(addr);
    s.write_all(MSG).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let local = s.local_addr().unwrap();
    wait_until("the server's kernel to acknowledge the FIN", || {
        procfs::tcp_state(local, addr) == procfs::TCP_FIN_WAIT2
    });

    turn_until(&mut server, "the connection to be closed", |s| {
        s.stats().closed == 1
    });
    assert_eq!(read_n(&mut s, MSG.len()), MSG);
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0, "no EOF after the echo");
    let stats = server.stats();
    assert_eq!(stats.accepted, 1, "{stats:?}");
    assert_eq!(
        stats.reads, 2,
        "one short read of the data and one of the EOF: {stats:?}"
    );
}

/// Writes a greeting as soon as a connection opens.
struct Greeter;

impl Service for Greeter {
    type State = ();
    fn open(&mut self, ctx: &mut Context<'_>) {
        ctx.write(b"hello\n");
    }
    fn data(&mut self, _: &mut (), _: &[u8], _: &mut Context<'_>) {}
}

/// A greeting written while a TLS handshake is under way cannot go out yet; it waits in
/// the connection's queue without a system call, so the counters of system calls must
/// not count one (they once counted a `write` and a `WouldBlock`). And since the socket
/// was writable all along, no event will say so once the handshake completes: the
/// read that completes it must let the greeting go.
#[test]
fn a_write_during_the_tls_handshake_is_no_system_call_and_goes_out_after_it() {
    let dir = util::fs::TempDir::new();
    let pki = util::pki::Pki::new(dir.path());
    let tls = sockloop::tls::server_config(&pki.server_cert, &pki.server_key, None).unwrap();
    let mut server = sockloop::Builder::new()
        .listen("tls://127.0.0.1:0".parse().unwrap())
        .tls(tls)
        .build(Greeter)
        .unwrap();
    let addr = sockaddr(&server.local_addrs()[0]);
    // TCP only: the handshake has not begun when the server accepts.
    let tcp = connect(addr);
    turn_until(&mut server, "the connection to be accepted", |s| {
        s.stats().accepted == 1
    });
    let s = server.stats();
    assert_eq!(
        (s.writes, s.write_would_block, s.bytes_out),
        (0, 0, 0),
        "nothing can be written before the handshake, and nothing was"
    );

    let ca = sockloop::tls::client_config(Some(&pki.ca), None).unwrap();
    let client = std::thread::spawn(move || {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(ca, name).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let mut greeting = [0u8; 6];
        stream.read_exact(&mut greeting).map(|()| greeting)
    });
    turn_until(&mut server, "the greeting to be written", |s| {
        s.stats().bytes_out == 6
    });
    let greeting = client
        .join()
        .unwrap()
        .expect("the greeting after the handshake");
    assert_eq!(&greeting, b"hello\n");
    let s = server.stats();
    assert!(s.writes >= 1 && s.tls_handshakes == 1, "{s:?}");
}
