//! A rolling update measured from the client's side: `sockloop bench --keep-going`
//! through HAProxy (TCP mode) to two `sockloop serve` backends while backend 1 is
//! stopped with SIGTERM and started again on the same ports.
//!
//! - With `--drain-delay` and HAProxy health-checking `/readyz`, the update costs the
//!   clients nothing: no failure at all. HAProxy sees `/readyz` say 503 at its next
//!   check (every 100 ms) and sends new connections to backend 2, while backend 1
//!   finishes what it has before it shuts down.
//! - With neither, connections still sent to the stopped backend fail, and the
//!   failures are counted by kind (none is `other_errors`).
//!
//! The load is `--reconnect`: a connection per message, as short requests are. A
//! long-lived connection to a backend that shuts down is closed under whatever is in
//! flight on it whatever the balancer does, so it would measure the protocol rather
//! than the deployment (see the README).

pub mod util;

use std::net::{SocketAddr, TcpListener};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use util::balancer::{HaProxy, frontend};
use util::bench::{count, report};
use util::child::{Proc, spawn_bin};
use util::net::wait_until;

/// `sockloop serve` on `listen` with metrics on `metrics` (both `tcp://HOST:PORT`),
/// and the address of each.
fn serve(listen: &str, metrics: &str, extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let args = [&["--listen", listen, "--metrics", metrics], extra].concat();
    let p = Proc::serve_env(&[], &args, 2);
    let (a, m) = (p.addr(0), p.metrics_addr());
    (p, a, m)
}

/// Whether `addr` can be bound now: a restart must get the ports its balancer knows.
fn check_port_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// The bench, in the background: `--keep-going --reconnect`, 20 connections, 4 s.
fn start_bench(haproxy: &HaProxy) -> Child {
    spawn_bin(&[
        "bench",
        &format!("tcp://{}", haproxy.addr(0)),
        "--conns",
        "20",
        "--secs",
        "4",
        "--keep-going",
        "--reconnect",
        "--json",
        "--allow-errors",
    ])
}

/// The report of the bench started by [`start_bench`], once it has finished.
fn finished(bench: Child) -> serde_json::Value {
    report(&bench.wait_with_output().expect("bench output"))
}

fn server_up(h: &HaProxy, name: &str) -> bool {
    h.servers_state()
        .iter()
        .any(|s| s.backend == "be" && s.name == name && s.up())
}

/// Sessions HAProxy has sent to a server so far.
fn sessions(h: &HaProxy, name: &str) -> u64 {
    h.server_stat("be", name)["stot"]
        .parse()
        .expect("stot is a number")
}

#[test]
fn with_drain_delay_and_health_checks_a_rolling_update_fails_nothing() {
    let drain = ["--drain-delay", "1"];
    let (mut s1, a1, m1) = serve("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", &drain);
    let (_s2, a2, m2) = serve("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", &drain);
    let haproxy = HaProxy::start(1, |ports| {
        frontend(ports[0], "", "")
            + &format!(
                "backend be\n\
                 \x20   balance roundrobin\n\
                 \x20   option httpchk\n\
                 \x20   http-check send meth GET uri /readyz\n\
                 \x20   http-check expect status 200\n\
                 \x20   default-server inter 100ms fall 1 rise 2\n\
                 \x20   server s1 {a1} check port {}\n\
                 \x20   server s2 {a2} check port {}\n",
                m1.port(),
                m2.port()
            )
    });
    haproxy.wait_backend_up("be", 2);
    let bench = start_bench(&haproxy);

    // Deliberately a second into the run: the update happens under load.
    thread::sleep(Duration::from_secs(1));
    let stopped = Instant::now();
    s1.signal(Signal::SIGTERM);
    wait_until("HAProxy to mark s1 down", || !server_up(&haproxy, "s1"));
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "s1 marked down only after the drain delay: {:?}",
        stopped.elapsed()
    );
    assert!(s1.wait().success(), "s1: {}", s1.stderr());

    // The same ports again, as a new version of the server would take them.
    wait_until("s1's ports to be free", || {
        check_port_free(a1) && check_port_free(m1)
    });
    let (_s1, _, _) = serve(&format!("tcp://{a1}"), &format!("tcp://{m1}"), &drain);
    haproxy.wait_backend_up("be", 2);
    let before = sessions(&haproxy, "s1");
    wait_until("traffic to reach the new s1", || {
        sessions(&haproxy, "s1") > before
    });

    let r = finished(bench);
    assert_eq!(count(&r, "errors"), 0, "{r}");
    assert_eq!(count(&r, "replaced"), 0, "{r}");
    assert!(count(&r, "msgs") > 100, "{r}");
    // Backend 2 answered throughout.
    let gap = r["longest_gap_ms"].as_f64().expect("longest_gap_ms");
    assert!(gap < 500.0, "{r}");
}

#[test]
fn without_drain_delay_or_health_checks_failures_are_counted_by_kind() {
    let (mut s1, a1, _) = serve("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", &[]);
    let (_s2, a2, _) = serve("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", &[]);
    let haproxy = HaProxy::start(1, |ports| {
        frontend(ports[0], "", "")
            + &format!(
                "backend be\n\
                 \x20   balance roundrobin\n\
                 \x20   server s1 {a1}\n\
                 \x20   server s2 {a2}\n"
            )
    });
    let bench = start_bench(&haproxy);
    thread::sleep(Duration::from_secs(1));
    s1.signal(Signal::SIGTERM);
    assert!(s1.wait().success(), "s1: {}", s1.stderr());
    // s1 stays down: HAProxy, with no check, keeps sending it connections, retries
    // each (3 times, a second apart), then closes the client's connection.
    let r = finished(bench);
    let errors = count(&r, "errors");
    assert!(errors > 0, "{r}");
    assert_eq!(
        count(&r, "other_errors"),
        0,
        "every failure has a kind: {r}"
    );
    let kinds: u64 = ["connect_refused", "resets", "eof_early", "timeouts"]
        .iter()
        .map(|k| count(&r, k))
        .sum();
    assert_eq!(kinds, errors, "{r}");
    // Those that failed after the window (HAProxy retries for 3 s) were not replaced.
    assert!(count(&r, "replaced") <= errors, "{r}");
    // Round robin sends every slot to s1 in turn, where it hangs in HAProxy's retries
    // until they are spent: the load stalls, which the longest gap shows.
    let gap = r["longest_gap_ms"].as_f64().expect("longest_gap_ms");
    assert!(gap > 500.0, "{r}");
}
