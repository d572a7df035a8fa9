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
//! On a 2-core machine the client and the server share the cores; read the CPU
//! columns with the rates. Traffic goes to 127.0.0.1 only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sockloop::Endpoint;
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
        print_row(s, &a, &b);
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
            print_row(s, &tls, &tcp);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

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
fn print_row(s: &Scenario, a: &(Report, f64, f64), b: &(Report, f64, f64)) {
    for (r, _, _) in [a, b] {
        assert_eq!(r.errors, 0, "{}: {r}", s.name);
    }
    let (unit, va) = s.figure(&a.0);
    let (_, vb) = s.figure(&b.0);
    println!(
        "| {} | {unit} | {va:.0} | {vb:.0} | {:.2}× | {} / {} | {} / {} | {:.0}% / {:.0}% | {:.0}% / {:.0}% |",
        s.name,
        va / vb,
        a.0.p50_us,
        a.0.p99_us,
        b.0.p50_us,
        b.0.p99_us,
        a.1,
        b.1,
        a.2,
        b.2
    );
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

/// A server process and its ready lines.
struct Server {
    name: &'static str,
    child: Child,
    tcp: String,
    udp: String,
    tls: Option<String>,
}

impl Server {
    /// `sockloop serve` on TCP and UDP, and on TLS too when given certificates.
    fn sockloop(pki: Option<&pki::Pki>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockloop"));
        cmd.args([
            "serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "udp://127.0.0.1:0",
        ]);
        if let Some(p) = pki {
            cmd.args(["--listen", "tls://127.0.0.1:0", "--tls-cert"])
                .arg(&p.server_cert)
                .arg("--tls-key")
                .arg(&p.server_key);
        }
        cmd.env("RUST_LOG", "warn");
        Server::start("sockloop", cmd, pki.is_some())
    }

    fn tokio() -> Server {
        let mut cmd = Command::new(std::env::current_exe().expect("this executable"));
        cmd.arg("--serve-tokio");
        Server::start("tokio", cmd, false)
    }

    fn start(name: &'static str, mut cmd: Command, tls: bool) -> Server {
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
        let tls = tls.then(next);
        Server {
            name,
            child,
            tcp,
            udp,
            tls,
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
