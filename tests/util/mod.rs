//! Helpers shared by the integration tests: the real binary as a child process, the
//! library loop on a thread, and clients that never hang a test forever.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sockloop::{Builder, Endpoint, Handle, Service, Stats};

/// A fresh directory for socket files, removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("sockloop-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Raises this test process's descriptor limit (tests open thousands of sockets).
pub fn raise_nofile() {
    sockloop::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
}

/// The socket address of a `tcp://` endpoint.
pub fn sockaddr(ep: &Endpoint) -> SocketAddr {
    let hp = ep.host_port().expect("an internet endpoint");
    SocketAddr::new(hp.host().parse().expect("an IP literal"), hp.port())
}

/// Polls `cond` every 10 ms until it holds or [`DEADLINE`] passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for each seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A blocking client with read and write timeouts, so a broken server fails the test
/// instead of hanging it.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Reads until the peer closes; a reset after data counts as the end too.
pub fn read_to_eof<R: Read>(s: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read after {} bytes: {e}", out.len()),
        }
    }
}

/// Writes `data` on a clone of `s` from another thread, so that the test can read the
/// echo meanwhile, then shuts down the write side if asked. Returns the outcome of the
/// writes: a server that closes early makes them fail, which some tests expect.
pub fn write_in_background<D: AsRef<[u8]> + Send + 'static>(
    s: &TcpStream,
    data: D,
    shutdown: bool,
) -> JoinHandle<io::Result<()>> {
    let mut w = s.try_clone().expect("clone the socket");
    thread::spawn(move || {
        w.write_all(data.as_ref())?;
        if shutdown {
            w.shutdown(Shutdown::Write)?;
        }
        Ok(())
    })
}

/// Writes everything, shuts down the write side, returns what came back until EOF.
pub fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_to_eof(&mut s)
}

/// [`exchange`] over a Unix stream socket.
pub fn unix_exchange(path: &std::path::Path, data: &[u8]) -> Vec<u8> {
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    read_to_eof(&mut s)
}

/// True when the peer has closed: a read returns EOF or a reset within the deadline.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

// ------------------------------------------------------------------ the library

/// The library's loop running on its own thread.
pub struct LibServer {
    /// The bound internet addresses, in listener order (Unix listeners are skipped).
    pub addrs: Vec<SocketAddr>,
    /// Every bound endpoint, in listener order.
    pub endpoints: Vec<Endpoint>,
    pub handle: Handle,
    thread: Option<JoinHandle<io::Result<Stats>>>,
}

impl LibServer {
    /// Builds the loop on a new thread (the service is moved there) and waits until it
    /// is bound.
    pub fn start<S: Service + Send + 'static>(builder: Builder, service: S) -> LibServer {
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut server = match builder.build(service) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            tx.send(Ok((server.local_addrs(), server.handle())))
                .unwrap();
            server.run()
        });
        let (endpoints, handle) = rx
            .recv_timeout(DEADLINE)
            .expect("server thread did not start")
            .expect("server failed to build");
        let addrs = endpoints
            .iter()
            .filter(|e| e.host_port().is_some())
            .map(sockaddr)
            .collect();
        LibServer {
            addrs,
            endpoints,
            handle,
            thread: Some(thread),
        }
    }

    /// Echo on one `tcp://127.0.0.1:0` listener with default limits.
    pub fn echo() -> LibServer {
        Self::start(tcp_builder(), sockloop::services::Echo)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Shuts the loop down gracefully and returns its final counters.
    pub fn stop(mut self) -> Stats {
        self.handle.shutdown().expect("wake the loop");
        let t = self.thread.take().expect("running");
        t.join()
            .expect("server thread panicked")
            .expect("loop failed")
    }
}

impl Drop for LibServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.handle.shutdown();
            let _ = t.join();
        }
    }
}

/// A builder with one `tcp://127.0.0.1:0` listener.
pub fn tcp_builder() -> Builder {
    Builder::new().listen("tcp://127.0.0.1:0".parse().unwrap())
}

// ------------------------------------------------------------------ the binary

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
pub fn run_bin(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run sockloop")
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
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let sink = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
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

    /// The address from ready line `i` (`listening tcp://...`).
    pub fn addr(&self, i: usize) -> SocketAddr {
        let url = self.ready[i]
            .strip_prefix("listening ")
            .expect("a ready line");
        sockaddr(&url.parse().expect("a URL in the ready line"))
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// CPU time used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // Linux reports these in USER_HZ, which is 100 on every architecture.
        Duration::from_millis(ticks * 10)
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
