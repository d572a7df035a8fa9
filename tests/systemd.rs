//! Running under systemd: sockets passed by `systemd-socket-activate` (a real
//! activator, from the `systemd` package), the messages sent to a `NOTIFY_SOCKET`,
//! and the unit files in deploy/systemd.

pub mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::balancer::free_ports;
use util::child::{Proc, bin};
use util::fs::TempDir;
use util::net::{DEADLINE, connect, wait_for};

/// The activator; a missing one fails the test (install the `systemd` package).
fn activator() -> PathBuf {
    [
        "/usr/bin/systemd-socket-activate",
        "/lib/systemd/systemd-socket-activate",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect(
        "systemd-socket-activate not found in /usr/bin or /lib/systemd: install the \
             systemd package (.ci/run does)",
    )
}

/// `systemd-socket-activate ARGS -- sockloop serve SERVE`, with its stdout and stderr
/// lines arriving on channels. The activator binds, then waits for the first
/// connection (or datagram) before it execs the server in the same process.
struct Activated {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    log: Vec<String>,
}

impl Activated {
    /// Starts the activator and waits until it listens; `None` when it could not
    /// (the address was taken meanwhile), so the caller can try another.
    fn start(args: &[&str], serve: &[&str]) -> Option<Activated> {
        let mut child = Command::new(activator())
            .args(args)
            .arg("--")
            .arg(bin())
            .arg("serve")
            .args(serve)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn systemd-socket-activate");
        let lines = |pipe: Box<dyn Read + Send>| {
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().expect("stdout")));
        let stderr = lines(Box::new(child.stderr.take().expect("stderr")));
        let mut a = Activated {
            child,
            stdout,
            stderr,
            log: Vec::new(),
        };
        // One "Listening on ... as N." line per -l.
        let want = args.iter().filter(|a| **a == "-l").count();
        while a
            .log
            .iter()
            .filter(|l| l.starts_with("Listening on"))
            .count()
            < want
        {
            match a.stderr.recv_timeout(DEADLINE) {
                Ok(line) => a.log.push(line),
                Err(_) => {
                    let _ = a.child.kill();
                    let _ = a.child.wait();
                    eprintln!("activator did not listen: {:?}", a.log);
                    return None;
                }
            }
        }
        Some(a)
    }

    /// The next ready line, once the server has been started.
    fn ready_line(&mut self) -> String {
        self.stdout
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no ready line; stderr: {}", self.stderr_now()))
    }

    fn stderr_now(&mut self) -> String {
        self.log.extend(self.stderr.try_iter());
        self.log.join("\n")
    }

    /// SIGTERM, then the exit status (the activator exec'd the server: same pid).
    fn terminate(&mut self) -> ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        self.exited("an exit after SIGTERM")
    }

    /// The exit status, once the process has exited on its own (`what`).
    fn exited(&mut self, what: &str) -> ExitStatus {
        wait_for(what, Duration::from_millis(10), || {
            match self.child.try_wait().expect("wait") {
                Some(status) => Ok(status),
                None => Err(format!("stderr: {}", self.stderr_now())),
            }
        })
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Activation on a free loopback port: a port is picked by binding port 0, and picked
/// again if someone takes it before the activator binds it.
fn activate_on_free_port(flags: &[&str], serve: &[&str]) -> (Activated, u16) {
    for _ in 0..5 {
        let port = free_ports(1)[0];
        let addr = format!("127.0.0.1:{port}");
        let mut args = flags.to_vec();
        args.extend(["-l", &addr]);
        if let Some(a) = Activated::start(&args, serve) {
            return (a, port);
        }
    }
    panic!("systemd-socket-activate could not listen on any of 5 free ports");
}

fn read_line_from(s: &mut impl Read) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => break,
            Ok(_) => got.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// TCP: the name's `?mode=line` applies (the `--prefix` would be refused without a
/// line-mode listener, and is put before the line echoed), the ready line names the
/// passed socket, and SIGTERM ends the server with exit 0.
#[test]
fn a_tcp_socket_from_systemd_socket_activate_is_served_with_the_options_in_its_name() {
    let (mut a, port) = activate_on_free_port(&["--fdname=echo?mode=line"], &["--prefix", "> "]);
    let mut s = connect(([127, 0, 0, 1], port).into());
    s.write_all(b"hello\n").expect("write");
    assert_eq!(a.ready_line(), format!("listening tcp://127.0.0.1:{port}"));
    assert_eq!(read_line_from(&mut s), "> hello\n", "{}", a.stderr_now());
    let status = a.terminate();
    assert!(status.success(), "{status:?}: {}", a.stderr_now());
    assert!(a.stderr_now().contains("1 socket(s) passed"));
}

/// Unix: the socket file the activator made is served and, after the server exits,
/// still there: sockloop did not create it, so it does not remove it.
#[test]
fn a_unix_socket_from_systemd_socket_activate_is_served_and_its_file_left_alone() {
    let dir = TempDir::new();
    let path = dir.join("activated.sock");
    let mut a = Activated::start(&["-l", path.to_str().expect("utf-8")], &[])
        .expect("the activator listens on a fresh path");
    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(b"ping\n").expect("write");
    assert_eq!(a.ready_line(), format!("listening unix:{}", path.display()));
    assert_eq!(read_line_from(&mut s), "ping\n");
    drop(s);
    let status = a.terminate();
    assert!(status.success(), "{status:?}: {}", a.stderr_now());
    assert!(
        Path::new(&path).exists(),
        "the server removed a socket file it did not create"
    );
}

/// UDP: the activator starts the server on the first datagram, which is still queued
/// on the socket and is echoed.
#[test]
fn a_udp_socket_from_systemd_socket_activate_echoes_the_datagram_that_woke_it() {
    let (mut a, port) = activate_on_free_port(&["--datagram"], &[]);
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    client.send_to(b"first", ("127.0.0.1", port)).expect("send");
    assert_eq!(a.ready_line(), format!("listening udp://127.0.0.1:{port}"));
    let mut buf = [0u8; 64];
    let (n, _) = client.recv_from(&mut buf).expect("an echo");
    assert_eq!(&buf[..n], b"first");
    let status = a.terminate();
    assert!(status.success(), "{status:?}: {}", a.stderr_now());
}

/// Bad options in a socket's name are refused before serving, exit 2, naming them.
#[test]
fn bad_options_in_a_socket_name_are_a_configuration_error() {
    let (mut a, port) = activate_on_free_port(&["--fdname=echo?colour=red"], &[]);
    let _s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let status = a.exited("the server to refuse its options and exit");
    assert_eq!(status.code(), Some(2), "{}", a.stderr_now());
    assert!(
        a.stderr_now().contains("unknown parameter 'colour'"),
        "{}",
        a.stderr_now()
    );
}

/// The messages a `Type=notify` service sends, read from a socket the test binds:
/// READY=1 after the ready line, a STATUS= with the connection, STOPPING=1 at the
/// SIGTERM that starts the drain, and exit 0 after it.
#[test]
fn notify_socket_gets_ready_status_and_stopping() {
    let dir = TempDir::new();
    let path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut buf = vec![0u8; 4096];
    let mut next = || -> Vec<String> {
        let n = notify.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect()
    };

    let mut server = Proc::serve_env(
        &[("NOTIFY_SOCKET", path.to_str().expect("a UTF-8 path"))],
        &["--listen", "tcp://127.0.0.1:0", "--drain-delay", "1"],
        1,
    );
    let ready = next();
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");

    let mut s = connect(server.addr(0));
    s.write_all(b"x\n").expect("write");
    assert_eq!(read_line_from(&mut s), "x\n");
    let status = loop {
        let msg = next();
        if let Some(st) = msg.iter().find(|l| l.contains("1 accepted")) {
            break st.clone();
        }
    };
    assert_eq!(status, "STATUS=1 active connections, 1 accepted");

    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    let stopping = loop {
        let msg = next();
        if msg.iter().any(|l| l == "STOPPING=1") {
            break msg;
        }
    };
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "STOPPING=1 came only after the drain delay"
    );
    assert!(
        stopping.iter().any(|l| l.starts_with("STATUS=draining")),
        "{stopping:?}"
    );
    // Still serving during the drain delay.
    s.write_all(b"y\n").expect("write while draining");
    assert_eq!(read_line_from(&mut s), "y\n");
    drop(s);
    let exit = server.wait();
    assert!(exit.success(), "{exit:?}: {}", server.stderr());
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "exited before the drain delay"
    );
    let last = loop {
        let msg = next();
        if msg.iter().any(|l| l.starts_with("STATUS=stopped")) {
            break msg;
        }
    };
    assert_eq!(last, ["STATUS=stopped; 1 connections accepted"]);
}

/// The unit files: `systemd-analyze verify` (no running systemd needed) finds nothing
/// to say about them, and the settings the deployment relies on are there.
#[test]
fn the_unit_files_verify_and_keep_their_essentials() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let dir = TempDir::new();
    let names = [
        "sockloop.socket",
        "sockloop-unix.socket",
        "sockloop.service",
    ];
    for name in names {
        let text = std::fs::read_to_string(src.join(name)).expect("a unit file");
        // verify checks that ExecStart= names an executable: point it at this build.
        let text = text.replace("/usr/local/bin/sockloop", bin());
        std::fs::write(dir.join(name), text).expect("copy");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(names.iter().map(|n| dir.join(n)))
        .output()
        .expect("systemd-analyze (the systemd package) runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n)))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze verify complains: {ours:?}"
    );

    let keys = |name: &str| -> Vec<(String, String)> {
        std::fs::read_to_string(src.join(name))
            .expect("a unit file")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    };
    let has = |units: &[(String, String)], k: &str, v: &str| {
        units.iter().any(|(uk, uv)| uk == k && uv == v)
    };
    let service = keys("sockloop.service");
    for (k, v) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "65536"),
        ("KillSignal", "SIGTERM"),
        (
            "ExecStart",
            "/usr/local/bin/sockloop serve --drain-delay 5 --shutdown-timeout 5",
        ),
    ] {
        assert!(has(&service, k, v), "sockloop.service lacks {k}={v}");
    }
    // systemd must not kill a drain: the stop timeout is above delay + shutdown.
    let stop: u64 = service
        .iter()
        .find(|(k, _)| k == "TimeoutStopSec")
        .and_then(|(_, v)| v.parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(stop > 5 + 5, "TimeoutStopSec={stop}");
    let inet = keys("sockloop.socket");
    assert!(has(&inet, "ListenStream", "5001") && has(&inet, "ListenDatagram", "5001"));
    let unix = keys("sockloop-unix.socket");
    assert!(has(&unix, "ListenStream", "/run/sockloop/sockloop.sock"));
    assert!(has(&unix, "FileDescriptorName", "local?mode=line"));
}
