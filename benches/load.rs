//! Load benchmark: `sockloop serve` against a tokio `current_thread` echo server, both
//! measured by the same client — the library's own load generator, `sockloop bench` —
//! in the same run.
//!
//! ```text
//! cargo bench --bench load                   # every scenario, 2 s each
//! cargo bench --bench load -- pp100 udp      # scenarios whose name contains an argument
//! cargo bench --bench load -- tls            # TLS beside plain TCP only
//! SOCKLOOP_BENCH_SECS=5 SOCKLOOP_BENCH_HOLD=19000 cargo bench --bench load
//! ```
//!
//! Each server is its own process (this executable, re-run with `--serve-tokio`, is the
//! tokio one), so the table can show each server's CPU and memory apart from the
//! client's. Scenarios: 64-byte ping-pong over 1, 100 and 1,000 connections, 100
//! connections with 16 in flight, one connection streaming 64 KiB messages 4 deep,
//! UDP with 16 datagrams in flight, a new connection per message, and `hold`: N idle
//! connections, reporting the server's resident memory per connection.
//!
//! A second table puts TLS beside plain TCP on the same sockloop server with the same
//! client (`tls-*` scenarios): 64-byte ping-pong, bulk MB/s, `tls-reconnect`, a full
//! handshake per message, whose conn/s is handshakes per second, and `tls-resume`, the
//! same with the session resumed (an abbreviated handshake). Certificates
//! are generated for the run (ECDSA P-256, as `rcgen` makes them).
//!
//! A third table (`header-*`) measures what a PROXY protocol header costs: the same
//! sockloop server, a listener with `?proxy=v2` driven by `bench --proxy v2` against a
//! plain listener driven by plain `bench`, in alternating rounds
//! (`SOCKLOOP_BENCH_ROUNDS`, default 3), with the median of the per-round ratios. A
//! fourth (`haproxy-*`, needs `haproxy` on the PATH or in /usr/sbin) measures what
//! HAProxy in TCP mode costs in front of that listener (`send-proxy-v2`) against
//! `bench --proxy v2` straight to it.
//!
//! On a 2-core machine the client and the server share the cores; read the CPU
//! columns with the rates. Traffic goes to 127.0.0.1 only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sockloop::Endpoint;
use sockloop::client::ProxyVersion;
use sockloop::client::bench::{self, BenchConfig, Report};
use sockloop::tls::TlsClient;

#[path = "../tests/util/pki.rs"]
#[allow(dead_code)]
mod pki;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--serve-tokio") {
        return serve_tokio();
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let env = |k: &str, d: f64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = Duration::from_secs_f64(env("SOCKLOOP_BENCH_SECS", 2.0));
    let hold = env("SOCKLOOP_BENCH_HOLD", 5000.0) as usize;
    sockloop::sys::raise_nofile_limit().expect("raise the descriptor limit");

    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let scenarios = [
        Scenario::new("pp1", 1, 64, 1),
        Scenario::new("pp100", 100, 64, 1),
        Scenario::new("pp1000", 1000, 64, 1),
        Scenario::new("pp100x16", 100, 64, 16),
        Scenario::new("bulk64k", 1, 65536, 4),
        Scenario {
            udp: true,
            ..Scenario::new("udp", 1, 64, 16)
        },
        Scenario {
            reconnect: true,
            ..Scenario::new("reconnect", 8, 64, 1)
        },
    ];
    let chosen: Vec<&Scenario> = scenarios.iter().filter(|s| wanted(s.name)).collect();
    if !chosen.is_empty() {
        println!(
            "| scenario | unit | sockloop | tokio | sockloop / tokio | sockloop p50/p99 µs | tokio p50/p99 µs | server CPU sockloop / tokio | client CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    for s in chosen {
        // A fresh server process for every run.
        let a = {
            let server = Server::sockloop(None);
            let url = if s.udp { &server.udp } else { &server.tcp };
            measured(&server, s.config(url, secs, None))
        };
        let b = {
            let server = Server::tokio();
            let url = if s.udp { &server.udp } else { &server.tcp };
            measured(&server, s.config(url, secs, None))
        };
        print_row(s.name, s, &a, &b);
    }

    // The same sockloop server, plain TCP against TLS, by the same client.
    let tls_scenarios = [
        Scenario::new("tls-pp1", 1, 64, 1),
        Scenario::new("tls-pp100", 100, 64, 1),
        Scenario::new("tls-bulk64k", 1, 65536, 4),
        Scenario {
            reconnect: true,
            ..Scenario::new("tls-reconnect", 8, 64, 1)
        },
        Scenario {
            reconnect: true,
            resume: true,
            ..Scenario::new("tls-resume", 8, 64, 1)
        },
    ];
    let chosen: Vec<&Scenario> = tls_scenarios.iter().filter(|s| wanted(s.name)).collect();
    if !chosen.is_empty() {
        let dir = std::env::temp_dir().join(format!("sockloop-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let pki = pki::Pki::new(&dir);
        let client = sockloop::tls::client_config(Some(&pki.ca), None)
            .and_then(|c| TlsClient::new(c, "127.0.0.1"))
            .expect("a TLS client configuration");
        println!();
        println!(
            "| scenario | unit | tls | tcp | tls / tcp | tls p50/p99 µs | tcp p50/p99 µs | server CPU tls / tcp | client CPU |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for s in chosen {
            let client = if s.resume {
                client.clone()
            } else {
                client.clone().without_resumption()
            };
            let tls = {
                let server = Server::sockloop(Some(&pki));
                let url = server.tls.as_deref().expect("a tls listener");
                measured(&server, s.config(url, secs, Some(client)))
            };
            let tcp = {
                let server = Server::sockloop(Some(&pki));
                measured(&server, s.config(&server.tcp, secs, None))
            };
            print_row(s.name, s, &tls, &tcp);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    let rounds = env("SOCKLOOP_BENCH_ROUNDS", 3.0).max(1.0) as usize;
    let header_scenarios = [
        Scenario::new("header-pp100", 100, 64, 1),
        Scenario {
            reconnect: true,
            ..Scenario::new("header-reconnect", 8, 64, 1)
        },
    ];
    let chosen: Vec<&Scenario> = header_scenarios.iter().filter(|s| wanted(s.name)).collect();
    paired_table(
        &chosen,
        rounds,
        [
            "?proxy=v2, bench --proxy v2",
            "plain",
            "with / without header",
        ],
        |s, header| {
            let server = Server::sockloop_proxied();
            let (url, proxy) = match (header, &server.proxied) {
                (true, Some(u)) => (u.as_str(), Some(ProxyVersion::V2)),
                _ => (server.tcp.as_str(), None),
            };
            let mut cfg = s.config(url, secs, None);
            cfg.proxy = proxy;
            measured(&server, cfg)
        },
    );

    let haproxy_scenarios = [
        Scenario::new("haproxy-pp100", 100, 64, 1),
        Scenario::new("haproxy-bulk64k", 1, 65536, 4),
    ];
    let chosen: Vec<&Scenario> = haproxy_scenarios
        .iter()
        .filter(|s| wanted(s.name))
        .collect();
    paired_table(
        &chosen,
        rounds,
        ["through HAProxy", "direct", "through / direct"],
        |s, through| {
            let server = Server::sockloop_proxied();
            let target = server.proxied.clone().expect("a ?proxy=v2 listener");
            let haproxy = through.then(|| HaProxy::start(&target));
            let mut cfg = match &haproxy {
                Some(h) => s.config(&h.url, secs, None),
                None => {
                    let mut cfg = s.config(&target, secs, None);
                    cfg.proxy = Some(ProxyVersion::V2);
                    cfg
                }
            };
            cfg.warmup = Duration::from_millis(500);
            measured(&server, cfg)
        },
    );

    if filters.is_empty() || filters.iter().any(|f| "hold".contains(f.as_str())) {
        hold_memory(&Server::sockloop(None), hold);
        hold_memory(&Server::tokio(), hold);
    }
}

/// One load shape.
struct Scenario {
    name: &'static str,
    conns: usize,
    size: usize,
    depth: usize,
    udp: bool,
    reconnect: bool,
    /// TLS: resume the session of an earlier connection, as a client that has been
    /// here before does; otherwise every connection makes a full handshake.
    resume: bool,
}

impl Scenario {
    fn new(name: &'static str, conns: usize, size: usize, depth: usize) -> Scenario {
        Scenario {
            name,
            conns,
            size,
            depth,
            udp: false,
            reconnect: false,
            resume: false,
        }
    }

    fn config(&self, url: &str, secs: Duration, tls: Option<TlsClient>) -> BenchConfig {
        let mut cfg = BenchConfig::new(url.parse::<Endpoint>().expect("a ready line holds a URL"));
        cfg.conns = self.conns;
        cfg.size = self.size;
        cfg.depth = self.depth;
        cfg.duration = secs;
        cfg.warmup = Duration::from_millis(300);
        cfg.reconnect = self.reconnect;
        cfg.progress = false;
        cfg.tls = tls;
        cfg
    }

    /// The figure this scenario is about.
    fn figure(&self, r: &Report) -> (&'static str, f64) {
        if self.reconnect {
            ("conn/s", r.conns_per_sec.unwrap_or(0.0))
        } else if self.name.contains("bulk") {
            ("MB/s", r.mb_per_sec)
        } else if self.udp {
            ("dgram/s", r.msgs_per_sec)
        } else {
            ("msg/s", r.msgs_per_sec)
        }
    }
}

/// A table row: two runs of one scenario, and the first's figure over the second's.
fn print_row(label: &str, s: &Scenario, a: &(Report, f64, f64), b: &(Report, f64, f64)) {
    for (r, _, _) in [a, b] {
        assert_eq!(r.errors, 0, "{label}: {r}");
    }
    let (unit, va) = s.figure(&a.0);
    let (_, vb) = s.figure(&b.0);
    println!(
        "| {label} | {unit} | {va:.0} | {vb:.0} | {:.2}× | {} / {} | {} / {} | {:.0}% / {:.0}% | {:.0}% / {:.0}% |",
        va / vb,
        a.0.latency.p50_us,
        a.0.latency.p99_us,
        b.0.latency.p50_us,
        b.0.latency.p99_us,
        a.1,
        b.1,
        a.2,
        b.2
    );
}

/// A table of `scenarios`, each run as [`compare_rounds`] does; `columns` names the
/// first run, the second, and their ratio.
fn paired_table(
    scenarios: &[&Scenario],
    rounds: usize,
    columns: [&str; 3],
    run: impl Fn(&Scenario, bool) -> (Report, f64, f64),
) {
    if scenarios.is_empty() {
        return;
    }
    let [a, b, ratio] = columns;
    println!();
    println!(
        "| scenario, round | unit | {a} | {b} | {ratio} | p50/p99 µs | p50/p99 µs | server CPU | client CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in scenarios {
        compare_rounds(s, rounds, |first| run(s, first));
    }
}

/// `rounds` rounds of `run(true)` against `run(false)`, in alternating order so that
/// drift in the machine's load hits both alike: a row per round, then the median of
/// the per-round ratios.
fn compare_rounds(s: &Scenario, rounds: usize, run: impl Fn(bool) -> (Report, f64, f64)) {
    let mut ratios = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let (a, b) = if r % 2 == 0 {
            let a = run(true);
            (a, run(false))
        } else {
            let b = run(false);
            (run(true), b)
        };
        print_row(&format!("{} {}", s.name, r + 1), s, &a, &b);
        ratios.push(s.figure(&a.0).1 / s.figure(&b.0).1);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "| {} median | | | | {:.3}× | | | | |",
        s.name,
        ratios[ratios.len() / 2]
    );
}

/// HAProxy in TCP mode on a free loopback port, passing connections on to `target`
/// (a `tcp://` URL) with a version 2 PROXY header.
struct HaProxy {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl HaProxy {
    fn start(target: &str) -> HaProxy {
        let backend = target.strip_prefix("tcp://").expect("a tcp:// URL");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("sockloop-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n    maxconn 4096\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                 frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
                 backend be\n    server s1 {backend} send-proxy-v2\n"
            ),
        )
        .expect("write the HAProxy configuration");
        let bin = ["/usr/sbin/haproxy", "haproxy"]
            .into_iter()
            .find(|b| Command::new(b).arg("-v").output().is_ok())
            .expect("haproxy installed (apt-get install haproxy)");
        let child = Command::new(bin)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let url = format!("tcp://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start on {port}");
            thread::sleep(Duration::from_millis(20));
        }
        HaProxy { child, url, dir }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs one benchmark and measures the server's and this process's CPU meanwhile, as
/// a percentage of one core.
fn measured(server: &Server, cfg: BenchConfig) -> (Report, f64, f64) {
    let (s0, c0, t0) = (
        cpu_of(server.pid()),
        cpu_of(std::process::id()),
        Instant::now(),
    );
    let report = bench::run(cfg).expect("the benchmark runs");
    let wall = t0.elapsed().as_secs_f64();
    let pct = |a: f64, b: f64| 100.0 * (b - a) / wall;
    (
        report,
        pct(s0, cpu_of(server.pid())),
        pct(c0, cpu_of(std::process::id())),
    )
}

/// `hold`: N connections kept open at a trickle of traffic (one message per
/// connection every ten seconds), and the server's resident memory per connection.
fn hold_memory(server: &Server, n: usize) {
    let before = rss_kb(server.pid());
    let pid = server.pid();
    let peak = thread::spawn(move || {
        let mut peak = 0;
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            peak = peak.max(rss_kb(pid));
            if count_fds(pid) >= n {
                // All accepted: let it settle, then take the figure.
                thread::sleep(Duration::from_millis(500));
                return rss_kb(pid).max(peak);
            }
            thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    let mut cfg = BenchConfig::new(server.tcp.parse().expect("a URL"));
    cfg.conns = n;
    cfg.rate = Some(n as f64 / 10.0);
    cfg.duration = Duration::from_secs(3);
    cfg.progress = false;
    let report = bench::run(cfg).expect("the benchmark runs");
    let held = peak.join().expect("the sampler");
    println!(
        "hold {} ({} of {n} connected in {:.2} s, {} errors): server RSS {before} kB -> {held} kB = {:.0} B per connection",
        server.name,
        report.connected,
        report.ramp_secs,
        report.errors,
        (held.saturating_sub(before)) as f64 * 1024.0 / n as f64
    );
}

/// `sockloop serve` on TCP and UDP loopback listeners, then `extra` arguments, logging
/// warnings only.
fn sockloop_serve(extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockloop"));
    cmd.args([
        "serve",
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
    ])
    .args(extra)
    .env("RUST_LOG", "warn");
    cmd
}

/// A server process and its ready lines.
struct Server {
    name: &'static str,
    child: Child,
    tcp: String,
    udp: String,
    tls: Option<String>,
    /// A `tcp://` listener expecting a PROXY v2 header.
    proxied: Option<String>,
}

impl Server {
    /// `sockloop serve` on TCP and UDP, and on TLS too when given certificates.
    fn sockloop(pki: Option<&pki::Pki>) -> Server {
        let mut cmd = sockloop_serve(&[]);
        if let Some(p) = pki {
            cmd.args(["--listen", "tls://127.0.0.1:0", "--tls-cert"])
                .arg(&p.server_cert)
                .arg("--tls-key")
                .arg(&p.server_key);
        }
        Server::start("sockloop", cmd, pki.is_some(), false)
    }

    /// `sockloop serve` on TCP and UDP, and on a TCP listener expecting a PROXY v2
    /// header.
    fn sockloop_proxied() -> Server {
        let cmd = sockloop_serve(&["--listen", "tcp://127.0.0.1:0?proxy=v2"]);
        Server::start("sockloop", cmd, false, true)
    }

    fn tokio() -> Server {
        let mut cmd = Command::new(std::env::current_exe().expect("this executable"));
        cmd.arg("--serve-tokio");
        Server::start("tokio", cmd, false, false)
    }

    fn start(name: &'static str, mut cmd: Command, tls: bool, proxied: bool) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = || {
            let line = lines.next().expect("a ready line").expect("utf-8");
            line.strip_prefix("listening ")
                .expect("a ready line")
                .to_string()
        };
        let (tcp, udp) = (next(), next());
        let tls = tls.then(&mut next);
        let proxied = proxied.then(&mut next);
        Server {
            name,
            child,
            tcp,
            udp,
            tls,
            proxied,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, in seconds.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
        })
        .unwrap_or(0)
}

fn count_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The baseline, as its own process: a task per connection with an 8 KiB buffer,
/// `read` then `write_all`; one task doing `recv_from` then `send_to` for UDP.
fn serve_tokio() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tcp");
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind udp");
        println!(
            "listening tcp://{}",
            listener.local_addr().expect("address")
        );
        println!("listening udp://{}", udp.local_addr().expect("address"));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&buf[..n], peer).await;
            }
        });
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
}
