//! The `sockloop` binary as a child process: started, read, signalled and measured.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::net::{DEADLINE, connect, sockaddr, wait_until, write_in_background};
use super::procfs;

/// `sockloop serve ...` as a child process, with its stderr collected.
pub struct Proc {
    pub child: Child,
    pub ready: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stdout_rest: Arc<Mutex<String>>,
}

/// The path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sockloop")
}

/// Runs `sockloop ARGS` to completion.
pub fn run_bin(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run sockloop")
}

/// Runs `sockloop send ARGS`, which must succeed; returns what came back (stdout).
pub fn send_ok(args: &[&str]) -> Vec<u8> {
    let out = run_bin(&[&["send"], args].concat());
    assert!(
        out.status.success(),
        "send {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Starts `sockloop ARGS` with stdout and stderr piped, for a run that goes on in the
/// background while the test does something else (another run, a signal).
pub fn spawn_bin(args: &[&str]) -> Child {
    Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start sockloop {args:?}: {e}"))
}

/// Runs `cmd` to completion with `input` on its standard input, written from another
/// thread: a program that echoes its input back could otherwise fill its stdout pipe
/// while the test still writes, and both would wait for ever.
pub fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("wait for the command");
    writer
        .join()
        .expect("the stdin writer")
        .expect("stdin written");
    out
}

/// [`run_with_stdin`] of `sockloop ARGS`.
pub fn run_bin_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    run_with_stdin(cmd, input)
}

/// The path of `program`, found on `PATH` or in the `sbin` directories where Debian
/// puts daemons (not on every user's `PATH`); fails the test, naming the package to
/// install, unless it is there and runs: a test that passed without the program it
/// needs would say something that was never checked.
pub fn require(program: &str, version_flag: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    let found = dirs
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .filter(|p| {
            Command::new(p)
                .arg(version_flag)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    found.unwrap_or_else(|| {
        panic!(
            "{program} is not installed, and this test needs it: apt-get install {package} \
             (.ci/run installs it)"
        )
    })
}

/// Appends every line read from `pipe` to a shared string, on a thread of its own, so
/// that a child's output can be read while it runs. The thread ends at EOF.
pub fn collect_lines(pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let sink = Arc::new(Mutex::new(String::new()));
    let s = sink.clone();
    let reader = thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = s.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (sink, reader)
}

/// Runs `sockloop ARGS`, which must fail with exit `code`, say `needle` on stderr and
/// print nothing on stdout. Returns stderr.
pub fn expect_failure(args: &[&str], code: i32, needle: &str) -> String {
    let out = run_bin(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks '{needle}': {err}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    err
}

/// Runs a Python 3 script with `HOST PORT` of `addr` as arguments; it must succeed.
/// Returns its stdout.
pub fn run_python(script: &str, addr: SocketAddr) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Proc {
    /// Starts `sockloop serve ARGS` and waits for one ready line per `--listen`.
    pub fn serve(args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").args(args);
        Self::spawn(
            cmd,
            args.iter().filter(|a| **a == "--listen").count().max(1),
        )
    }

    /// Starts `sockloop serve ARGS` with the variables `env` set (a `RUST_LOG` among
    /// them replaces the default, `info`) and waits for `listeners` ready lines: the
    /// count is the caller's, as the listeners may come from a variable.
    pub fn serve_env(env: &[(&str, &str)], args: &[&str], listeners: usize) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").args(args).envs(env.iter().copied());
        Self::spawn(cmd, listeners)
    }

    /// [`Proc::serve`] with the debug log, whose lines name each connection's client
    /// (and the balancer that passed it on), which the PROXY protocol tests look for.
    pub fn serve_debug(args: &[&str]) -> Proc {
        let listeners = args.iter().filter(|a| **a == "--listen").count().max(1);
        Self::serve_env(&[("RUST_LOG", "debug")], args, listeners)
    }

    /// Starts a prepared command and waits for `listeners` ready lines on stdout.
    pub fn spawn(mut cmd: Command, listeners: usize) -> Proc {
        let set_here = cmd.get_envs().any(|(k, _)| k == "RUST_LOG");
        if !set_here && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockloop");
        let (stderr, _) = collect_lines(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout_rest = Arc::new(Mutex::new(String::new()));
        {
            let rest = stdout_rest.clone();
            let pipe = child.stdout.take().unwrap();
            thread::spawn(move || {
                for (i, line) in BufReader::new(pipe)
                    .lines()
                    .map_while(Result::ok)
                    .enumerate()
                {
                    if i < listeners {
                        let _ = tx.send(line);
                    } else {
                        let mut r = rest.lock().unwrap();
                        r.push_str(&line);
                        r.push('\n');
                    }
                }
            });
        }
        let mut ready = Vec::new();
        for _ in 0..listeners {
            match rx.recv_timeout(DEADLINE) {
                Ok(line) => ready.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "no ready line from sockloop; stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        Proc {
            child,
            ready,
            stderr,
            stdout_rest,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The URL from ready line `i` (`listening URL`), as bound: any scheme.
    pub fn url(&self, i: usize) -> String {
        self.ready[i]
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("not a ready line: {}", self.ready[i]))
            .to_string()
    }

    /// The address from ready line `i` (`listening tcp://...`).
    pub fn addr(&self, i: usize) -> SocketAddr {
        sockaddr(&self.url(i).parse().expect("a URL in the ready line"))
    }

    /// The address of the metrics listener, from the ready line that follows the
    /// listeners' (`metrics tcp://...`): started with `--metrics` and one more ready
    /// line than listeners.
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self.ready.last().expect("ready lines");
        line.strip_prefix("metrics tcp://")
            .unwrap_or_else(|| panic!("not a metrics line: {line}"))
            .parse()
            .expect("an address in the metrics line")
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("send signal");
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whatever came on stdout after the ready lines.
    pub fn stdout_rest(&self) -> String {
        self.stdout_rest.lock().unwrap().clone()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("sockloop did not exit; stderr:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks for the counters with SIGUSR1 and returns the new `stats` line, parsed.
    pub fn stats(&self) -> HashMap<String, u64> {
        let before = self.stderr().matches("stats ").count();
        self.signal(Signal::SIGUSR1);
        wait_until("a stats line", || {
            self.stderr().matches("stats ").count() > before
        });
        last_stats(&self.stderr())
    }

    /// Connects and writes `bytes` without ever reading, until the server has stopped
    /// reading that connection (its queued echo passed the high-water mark).
    pub fn flood_unread(&self, bytes: usize) -> TcpStream {
        let s = connect(self.addr(0));
        write_in_background(&s, vec![7u8; bytes], false);
        wait_until("the server to pause the connection", || {
            self.stats()["backpressure_pauses"] >= 1
        });
        s
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kb(&self) -> u64 {
        procfs::rss_kb(self.child.id())
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        procfs::cpu_time(self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The counters of the last `stats key=value ...` line in a log.
pub fn last_stats(log: &str) -> HashMap<String, u64> {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.split_once("stats ").map(|(_, rest)| rest))
        .expect("a stats line");
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect()
}
