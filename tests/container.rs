//! The container image of the repository's `Dockerfile`, run by a real container
//! engine, podman, and reached from the host through published ports.
//!
//! The image is built from the real Dockerfile with its build stage replaced: the
//! test builds a statically linked `sockloop` here (`--profile container`, see
//! Cargo.toml) and hands its directory to `podman build` as the build context named
//! `build`, which takes the place of the stage of that name, so the stage is skipped
//! and no base image is pulled. Every test fails, rather than passing unseen, when
//! podman is missing or cannot run a container.
//!
//! podman runs with `--runtime runc --cgroup-manager cgroupfs` (crun refuses the
//! hybrid cgroup hierarchy of the machines this runs on) and a `containers.conf` of
//! its own that sets no default rlimits (podman's defaults are refused there too).
//!
//! This is a test binary of its own so that its containers, ports and image builds
//! live in one process; publishing a port turns on connection tracking for the whole
//! machine, which is why `.ci/run` raises `nf_conntrack_max` first.

pub mod util;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use util::fs::TempDir;
use util::net::{exchange, http_get, wait_for};

/// What the Dockerfile promises; checked against the built image.
const ECHO_PORT: u16 = 5001;
const METRICS_PORT: u16 = 9100;
const IMAGE_LISTEN: &str = "tcp://0.0.0.0:5001,udp://0.0.0.0:5001";
const IMAGE_METRICS: &str = "tcp://0.0.0.0:9100";
const IMAGE_USER: &str = "65532:65532";

/// The repository: the build context of the image.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A name no other test, and no other run, uses.
fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("sockloop-test-{what}-{}-{n}-{nanos}", std::process::id())
}

/// The statically linked binary, built once per process and checked to need no
/// dynamic loader. The build has a target directory of its own, beside the test's:
/// the `cargo test` that runs this test holds the lock on the test's directory
/// until it ends. The explicit `--target` keeps `+crt-static` off build scripts and
/// proc macros, which the compiler loads as shared objects.
fn static_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_sockloop"))
            .parent()
            .and_then(Path::parent)
            .expect("the target directory");
        let target_dir = bin_dir.join("container-image");
        let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let start = Instant::now();
        let out = Command::new(env!("CARGO"))
            .args(["build", "--profile", "container", "--bin", "sockloop"])
            .args(["--target", &triple, "--manifest-path"])
            .arg(repo().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            // Either would win over RUSTFLAGS.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "the static build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = target_dir.join(&triple).join("container").join("sockloop");
        eprintln!(
            "static sockloop built in {:.1?}: {} bytes",
            start.elapsed(),
            std::fs::metadata(&bin).expect("the built binary").len()
        );
        assert!(
            !needs_loader(&bin),
            "{} asks for a dynamic loader: it cannot run in a scratch image",
            bin.display()
        );
        bin
    })
}

/// True when an ELF executable names an interpreter (PT_INTERP), the dynamic loader
/// that a scratch image does not have. A static-pie binary has none.
fn needs_loader(path: &Path) -> bool {
    let elf = std::fs::read(path).expect("read the binary");
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// podman, with the runtime, cgroup manager and `containers.conf` this machine needs,
/// and the directory that holds that file.
struct Podman {
    conf_dir: TempDir,
}

impl Podman {
    /// Fails the test when podman is not installed.
    fn new() -> Podman {
        match Command::new("podman").arg("--version").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "podman --version failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("podman is needed for these tests (.ci/run installs it): {e}"),
        }
        let conf_dir = TempDir::new();
        // The `[containers]` default gives every container podman's rlimits, which
        // the runtime here refuses to set.
        std::fs::write(
            conf_dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n",
        )
        .unwrap();
        Podman { conf_dir }
    }

    /// `podman ARGS`, bounded in time so that a wedged engine fails the test.
    fn run(&self, args: &[&str]) -> Output {
        self.run_within(120, args)
    }

    /// `podman ARGS`, killed after `secs` seconds.
    fn run_within(&self, secs: u32, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg(secs.to_string())
            .arg("podman")
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.conf_dir.join("containers.conf"))
            .output()
            .expect("run podman")
    }

    /// `podman ARGS`, which must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The image of the repository's Dockerfile with the static binary in it,
    /// under a name of its own, removed when dropped.
    fn image(&self) -> Image<'_> {
        let bin = static_binary();
        // Only the binary goes in the build context: the build directory around it
        // holds gigabytes.
        let context = TempDir::new();
        std::fs::copy(bin, context.join("sockloop")).expect("copy the binary");
        let name = format!("localhost/{}:latest", unique("image"));
        let start = Instant::now();
        let build_context = format!("build={}", context.path().display());
        let dockerfile = repo().join("Dockerfile");
        let _one = storage_lock();
        // `--format docker`: the OCI format has no HEALTHCHECK.
        self.ok(&[
            "build",
            "--format",
            "docker",
            "--build-context",
            &build_context,
            "-f",
            dockerfile.to_str().unwrap(),
            "-t",
            &name,
            repo().to_str().unwrap(),
        ]);
        eprintln!("image {name} built in {:.1?}", start.elapsed());
        Image { podman: self, name }
    }
}

/// An image made by a test.
struct Image<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _one = storage_lock();
        let _ = self.podman.run(&["rmi", "-f", &self.name]);
    }
}

/// Held while an image is built or removed: one at a time. The tests' images are
/// built from one Dockerfile, so they share cached layers; two builds at once have
/// been seen to trip over each other's intermediate containers, and removing one
/// test's image (`rmi -f`) while another's build commits removed that build's
/// container from under it ("container not known").
fn storage_lock() -> std::sync::MutexGuard<'static, ()> {
    static STORAGE: Mutex<()> = Mutex::new(());
    STORAGE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Host ports for a container: the echo port (TCP and UDP) and the metrics port.
#[derive(Clone, Copy, Debug)]
struct Ports {
    echo: u16,
    metrics: u16,
}

impl Ports {
    /// Ports free on the host's loopback now, the echo one for TCP and UDP both,
    /// and never handed out twice in this process: the tests run in parallel, and
    /// bind to port 0 may give a port again once its socket is closed.
    fn free() -> Ports {
        static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        let mut pick = |udp_too: bool| loop {
            let t = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let port = t.local_addr().unwrap().port();
            if !taken.contains(&port)
                && (!udp_too || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
            {
                taken.push(port);
                break port;
            }
        };
        let echo = pick(true);
        let metrics = pick(false);
        Ports { echo, metrics }
    }

    fn echo_addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.echo).into()
    }

    fn metrics_addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.metrics).into()
    }
}

/// A running container, removed (forcibly) when dropped, even when the test fails.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
    ports: Ports,
}

impl<'a> Container<'a> {
    /// `podman run -d` of `image`, its echo port published on the host's loopback
    /// for TCP and UDP and its metrics port too, with `env` (`NAME=VALUE`) and `args`
    /// after the image (the image's entrypoint is `sockloop`, so `args` is a
    /// subcommand and its options; none runs the image's default, `serve`).
    fn run(image: &Image<'a>, env: &[&str], args: &[&str]) -> Container<'a> {
        let podman = image.podman;
        let ports = Ports::free();
        let name = unique("ctr");
        let tcp = format!("127.0.0.1:{}:{ECHO_PORT}", ports.echo);
        let udp = format!("127.0.0.1:{}:{ECHO_PORT}/udp", ports.echo);
        let metrics = format!("127.0.0.1:{}:{METRICS_PORT}", ports.metrics);
        let mut cmd = vec![
            "run", "-d", "--name", &name, "-p", &tcp, "-p", &udp, "-p", &metrics,
        ];
        cmd.extend(env.iter().flat_map(|e| ["-e", *e]));
        cmd.push(&image.name);
        cmd.extend(args);
        // Created first, so that a failed start is still cleaned up.
        let container = Container {
            podman,
            name: name.clone(),
            ports,
        };
        podman.ok(&cmd);
        raise_conntrack_max();
        container
    }

    /// [`Container::run`] of `serve` with TCP and UDP listeners on `host`, port
    /// 5001, given as flags (which win over the image's SOCKLOOP_LISTEN); returns once
    /// both are bound.
    fn serve_on(image: &Image<'a>, host: &str) -> Container<'a> {
        let tcp = format!("tcp://{host}:{ECHO_PORT}");
        let udp = format!("udp://{host}:{ECHO_PORT}");
        let c = Container::run(image, &[], &["serve", "--listen", &tcp, "--listen", &udp]);
        c.wait_for_log(&format!("listening {udp}"));
        c
    }

    /// What the container wrote, stdout and stderr together.
    fn logs(&self) -> String {
        let out = self.podman.run(&["logs", &self.name]);
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        s
    }

    /// Waits until the logs hold `needle`; fails with the logs after
    /// [`util::net::DEADLINE`].
    fn wait_for_log(&self, needle: &str) {
        let what = format!("'{needle}' from the container");
        wait_for(&what, Duration::from_millis(50), || {
            let logs = self.logs();
            if logs.contains(needle) {
                return Ok(());
            }
            let state = self.inspect("{{.State.Status}}");
            assert!(
                state.trim() == "running",
                "no '{needle}' from the container ({}); logs:\n{logs}",
                state.trim()
            );
            Err(format!("logs:\n{logs}"))
        });
    }

    /// `podman inspect --format FORMAT` of the container.
    fn inspect(&self, format: &str) -> String {
        self.podman.ok(&["inspect", "--format", format, &self.name])
    }

    /// `podman stop` (the image's STOPSIGNAL, SIGTERM; SIGKILL after `grace` seconds)
    /// and the exit code.
    fn stop(&self, grace: u32) -> i32 {
        self.podman
            .ok(&["stop", "-t", &grace.to_string(), &self.name]);
        let code = self.inspect("{{.State.ExitCode}}");
        code.trim().parse().expect("an exit code")
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// Publishing a port makes podman install NAT rules, and with them connection
/// tracking of every connection on the machine, loopback included; tests that open
/// tens of thousands of connections then fill the default table and see connects
/// dropped. `.ci/run` raises the limit before the tests; this repeats it for a run
/// of `cargo test` alone. Best effort: without the privilege, nothing changes.
fn raise_conntrack_max() {
    const PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
    const WANTED: u64 = 1 << 20;
    if let Ok(s) = std::fs::read_to_string(PATH) {
        if s.trim().parse::<u64>().is_ok_and(|n| n < WANTED) {
            let _ = std::fs::write(PATH, WANTED.to_string());
        }
    }
}

/// One datagram to `addr` and its reply, if one comes within `wait`.
fn datagram(addr: SocketAddr, msg: &[u8], wait: Duration) -> std::io::Result<Vec<u8>> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(wait))?;
    sock.send(msg)?;
    let mut buf = vec![0u8; 2048];
    let n = sock.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Fails unless a TCP connect to `addr` is refused: nothing listens behind it.
fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{addr}: {e}"),
        Ok(_) => panic!("{addr} accepted a connection to a server on the container's loopback"),
    }
}

/// The server inside is up: the echo port answers TCP and UDP from the host.
fn assert_echo_from_host(c: &Container) {
    let addr = c.ports.echo_addr();
    assert_eq!(exchange(addr, b"hello over tcp"), b"hello over tcp");
    let reply = datagram(addr, b"hello over udp", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no UDP echo from {addr}: {e}; logs:\n{}", c.logs()));
    assert_eq!(reply, b"hello over udp");
}

/// Listening on the container's loopback only: the server is up inside, yet the
/// published ports reach nothing. A published port forwards to the container's
/// interface address, where nothing listens, so the TCP connect is refused (the
/// container's kernel answers with a reset), and a datagram gets no reply (an ICMP
/// port unreachable, seen as refused, or nothing at all when that is rate-limited).
fn assert_unreachable_from_host(c: &Container) {
    let inside = c.podman.ok(&[
        "exec",
        &c.name,
        "/sockloop",
        "send",
        "tcp://127.0.0.1:5001",
        "inside",
    ]);
    assert_eq!(inside, "inside", "the server does not answer inside");

    let addr = c.ports.echo_addr();
    assert_refused(addr);
    match datagram(addr, b"anyone?", Duration::from_secs(1)) {
        Ok(reply) => panic!("a UDP reply through {addr}: {reply:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::WouldBlock | ErrorKind::TimedOut
            ),
            "{addr}: {e}"
        ),
    }
}

#[test]
fn the_image_is_scratch_with_the_static_binary_a_user_ports_and_a_health_check() {
    let podman = Podman::new();
    let image = podman.image();
    let json = podman.ok(&["image", "inspect", &image.name]);
    let inspect: serde_json::Value = serde_json::from_str(&json).expect("inspect is JSON");
    let img = &inspect[0];
    let config = &img["Config"];
    eprintln!(
        "image size {} bytes (this test's binary, built as --profile container)",
        img["Size"]
    );

    // Scratch and one COPY: a single layer, the binary.
    assert_eq!(
        img["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "{img}"
    );
    assert_eq!(config["User"], IMAGE_USER);
    assert_eq!(config["Entrypoint"], serde_json::json!(["/sockloop"]));
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(config["StopSignal"], "SIGTERM");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.contains(&format!("SOCKLOOP_LISTEN={IMAGE_LISTEN}").as_str()),
        "{env:?}"
    );
    assert!(
        env.contains(&format!("SOCKLOOP_METRICS={IMAGE_METRICS}").as_str()),
        "{env:?}"
    );
    let exposed = config["ExposedPorts"].as_object().expect("ExposedPorts");
    for port in ["5001/tcp", "5001/udp", "9100/tcp"] {
        assert!(
            exposed.contains_key(port),
            "{port} not exposed: {exposed:?}"
        );
    }
    // Exec form: no shell in scratch. IP literals: no name service either. (podman
    // shows the health check beside Config, not in it.)
    assert_eq!(
        img["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "/sockloop", "send", "tcp://127.0.0.1:5001", "ping"]),
        "{img}"
    );
}

#[test]
fn echo_over_tcp_and_udp_through_published_ports_then_sigterm_exits_0() {
    let podman = Podman::new();
    let image = podman.image();
    // Flags, which win over the image's SOCKLOOP_LISTEN (the default command has a test
    // of its own): the same addresses, said explicitly.
    let c = Container::serve_on(&image, "0.0.0.0");
    assert_echo_from_host(&c);

    // The HEALTHCHECK runs `sockloop send` inside the image: no shell, no NSS.
    let health = podman.run(&["healthcheck", "run", &c.name]);
    assert!(
        health.status.success(),
        "healthcheck: {}{}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );
    // Not root: the image's user, without any /etc/passwd. Read from the host's
    // /proc, as the image has no ps for `podman top` to run.
    let pid = c.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .expect("the server's /proc/PID/status");
    let ids = |key: &str| -> Vec<String> {
        let line = status.lines().find(|l| l.starts_with(key)).expect(key);
        line.split_whitespace().skip(1).map(String::from).collect()
    };
    assert_eq!(ids("Uid:"), ["65532"; 4], "{status}");
    assert_eq!(ids("Gid:"), ["65532"; 4], "{status}");

    let start = Instant::now();
    assert_eq!(
        c.stop(10),
        0,
        "exit code after SIGTERM; logs:\n{}",
        c.logs()
    );
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "podman stop took {:.1?}: SIGKILL, not SIGTERM, ended it",
        start.elapsed()
    );
    let logs = c.logs();
    assert!(logs.contains("SIGTERM: closing listeners"), "{logs}");
    assert!(logs.contains("stats accepted="), "{logs}");
}

#[test]
fn a_server_on_the_containers_loopback_is_not_reachable_through_a_published_port() {
    let podman = Podman::new();
    let image = podman.image();
    let c = Container::serve_on(&image, "127.0.0.1");
    assert_unreachable_from_host(&c);
}

#[test]
fn the_default_command_serves_on_all_interfaces_and_the_env_can_bring_back_the_trap() {
    let podman = Podman::new();
    let image = podman.image();
    let c = Container::run(&image, &[], &[]);
    c.wait_for_log("listening udp://0.0.0.0:5001");
    assert_echo_from_host(&c);

    let trap = Container::run(&image, &["SOCKLOOP_LISTEN=tcp://127.0.0.1:5001"], &[]);
    trap.wait_for_log("listening tcp://127.0.0.1:5001");
    let logs = trap.logs();
    assert!(
        !logs.contains("udp://"),
        "the env replaces both listeners: {logs}"
    );
    assert_refused(trap.ports.echo_addr());
}

#[test]
fn metrics_healthz_and_readyz_answer_through_the_published_metrics_port() {
    let podman = Podman::new();
    let image = podman.image();
    let c = Container::run(&image, &[], &[]);
    c.wait_for_log("listening tcp://0.0.0.0:5001");
    assert_echo_from_host(&c);
    let addr = c.ports.metrics_addr();
    crate::util::net::wait_until("the metrics port", || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
    });
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(!body.is_empty(), "/metrics is empty");
    assert_eq!(http_get(addr, "/healthz").0, 200);
    assert_eq!(http_get(addr, "/readyz").0, 200);
}

#[test]
fn podman_stop_drains_reports_not_ready_and_exits_0() {
    let podman = Podman::new();
    let image = podman.image();
    let c = Container::run(&image, &[], &["serve", "--drain-delay", "3"]);
    c.wait_for_log("listening tcp://0.0.0.0:5001");
    let metrics = c.ports.metrics_addr();
    crate::util::net::wait_until("ready", || {
        TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).is_ok()
            && http_get(metrics, "/readyz").0 == 200
    });

    // podman stop blocks until the container exits; the drain is watched meanwhile.
    let out = thread::scope(|scope| {
        let stop = scope.spawn(|| podman.run_within(60, &["stop", "-t", "20", &c.name]));
        crate::util::net::wait_until("not ready while draining", || {
            http_get(metrics, "/readyz").0 == 503
        });
        // Still serving while not ready: the load balancer needs time to notice.
        assert_eq!(exchange(c.ports.echo_addr(), b"draining"), b"draining");
        stop.join().unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.inspect("{{.State.ExitCode}}").trim(), "0");
    let logs = c.logs();
    assert!(logs.to_lowercase().contains("drain"), "{logs}");
    assert!(logs.contains("closing listeners"), "{logs}");
}
