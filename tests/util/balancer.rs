//! Real load balancers in front of sockloop: HAProxy and nginx (its stream module) as
//! child processes, each with a configuration written into its own [`TempDir`] and
//! listening on loopback ports.
//!
//! Neither can be told to listen on port 0 and report the port, so free ports are
//! picked beforehand (bound, read, closed) and the start is retried with new ones when
//! another program took a port in between. Readiness is polled — HAProxy's stats
//! socket answers, nginx holds a socket in `LISTEN` on each of its ports — never waited
//! for by sleeping. A missing balancer fails the test that needs it: a test that
//! passes without having run would say something that was never checked.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::child::{collect_lines, require};
use super::fs::TempDir;
use super::net::{DEADLINE, wait_for, wait_until};
use super::procfs;

/// Where Debian's `libnginx-mod-stream` puts the stream module.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// How many times a start is tried with fresh ports before a bind failure fails the
/// test.
const ATTEMPTS: usize = 5;

/// `n` distinct loopback ports that were free a moment ago. All are held at once so
/// that the kernel does not hand out one twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A balancer process with its stdout and stderr collected; killed and reaped when
/// dropped.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads reading the two pipes; they end when the process has exited and
    /// everything it wrote has been read.
    readers: [JoinHandle<()>; 2],
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (stdout, out_reader) = collect_lines(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect_lines(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
            readers: [out_reader, err_reader],
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Polls until `ready` holds. `Err` with the log when the process exited first (a
    /// port taken, a bad configuration); fails the test at the deadline.
    fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let exited = wait_for(what, Duration::from_millis(20), || {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Ok(Some(status));
            }
            if ready() {
                return Ok(None);
            }
            Err(format!("not ready within {DEADLINE:?}; {}", self.output()))
        });
        let Some(status) = exited else {
            return Ok(());
        };
        // Its last words (why it exited) are read once the pipes are at their end.
        wait_until(&format!("the rest of {what}'s output"), || {
            self.readers.iter().all(JoinHandle::is_finished)
        });
        Err(format!("{what} exited ({status}); {}", self.output()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1:port`: every balancer here listens on loopback.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A balancer that has started: the ports it listens on, its configuration, the
/// process, and the directory of its files (removed when dropped). HAProxy and nginx
/// both keep these, and answer for them alike.
struct Started {
    ports: Vec<u16>,
    config: String,
    running: Running,
    _dir: TempDir,
}

impl Started {
    fn addr(&self, i: usize) -> SocketAddr {
        loopback(self.ports[i])
    }

    /// The configuration and what the process wrote so far, for failure messages.
    fn output(&self) -> String {
        format!("config:\n{}\n{}", self.config, self.running.output())
    }
}

/// Starts a balancer on fresh ports until one start is not foiled by a port taken in
/// the meantime. `start` gets the ports and says `Err(log)` when the process exited.
fn start_on_free_ports<T>(
    what: &str,
    ports: usize,
    mut start: impl FnMut(&[u16]) -> Result<T, String>,
) -> T {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match start(&free_ports(ports)) {
            Ok(t) => return t,
            Err(log) if log.contains("Address already in use") || log.contains("cannot bind") => {
                last = log;
            }
            Err(log) => panic!("{what} did not start: {log}"),
        }
    }
    panic!("{what} could not bind free ports in {ATTEMPTS} attempts; last: {last}")
}

/// HAProxy in the foreground (`-db`), with an admin stats socket in its directory.
pub struct HaProxy {
    socket: PathBuf,
    started: Started,
}

/// One server of a backend as `show servers state` gives it.
#[derive(Clone, Debug)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    /// `srv_op_state`: 0 stopped (DOWN), 1 starting, 2 running (UP), 3 stopping.
    pub op_state: u8,
}

impl ServerState {
    pub fn up(&self) -> bool {
        self.op_state == 2
    }
}

impl HaProxy {
    /// Starts HAProxy with the `global` and `defaults` sections written here (TCP
    /// mode, logs on stdout, the stats socket) followed by the proxies that `proxies`
    /// writes for `ports` free loopback ports (the frontends' ports), and waits until
    /// its stats socket answers: listeners are all bound before that, and a failed bind
    /// ends the process.
    pub fn start(ports: usize, proxies: impl Fn(&[u16]) -> String) -> HaProxy {
        let haproxy = require("haproxy", "-v", "haproxy");
        start_on_free_ports("haproxy", ports, |ports| {
            let dir = TempDir::new();
            let socket = dir.join("haproxy.sock");
            let config = format!(
                "global\n\
                 \x20   stats socket {socket} level admin\n\
                 \x20   log stdout format raw local0\n\
                 \n\
                 defaults\n\
                 \x20   mode tcp\n\
                 \x20   log global\n\
                 \x20   timeout connect 5s\n\
                 \x20   timeout client 30s\n\
                 \x20   timeout server 30s\n\
                 \n\
                 {}",
                proxies(ports),
                socket = socket.display(),
            );
            let file = dir.join("haproxy.cfg");
            std::fs::write(&file, &config).expect("write haproxy.cfg");
            let mut cmd = Command::new(&haproxy);
            cmd.arg("-f").arg(&file).arg("-db");
            let mut running = Running::spawn(cmd);
            running.wait_ready("haproxy", || query(&socket, "show info").is_ok())?;
            Ok(HaProxy {
                socket,
                started: Started {
                    ports: ports.to_vec(),
                    config,
                    running,
                    _dir: dir,
                },
            })
        })
    }

    /// The address of frontend port `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.started.addr(i)
    }

    /// Its configuration and what it logged on stdout (`log stdout`) and stderr so
    /// far, for failure messages.
    pub fn output(&self) -> String {
        self.started.output()
    }

    /// Its stdout alone: the traffic log.
    pub fn stdout(&self) -> String {
        self.started.running.stdout.lock().unwrap().clone()
    }

    /// Runs one command on the stats socket and returns its answer.
    pub fn command(&self, cmd: &str) -> String {
        query(&self.socket, cmd)
            .unwrap_or_else(|e| panic!("stats socket, '{cmd}': {e}; {}", self.output()))
    }

    /// Every server's state (`show servers state`), found by the column names of its
    /// header line.
    pub fn servers_state(&self) -> Vec<ServerState> {
        let answer = self.command("show servers state");
        let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
        // The first line is the format version, the second names the columns.
        let _version = lines.next();
        let header: Vec<&str> = lines
            .next()
            .and_then(|h| h.strip_prefix('#'))
            .unwrap_or_else(|| panic!("no header in 'show servers state':\n{answer}"))
            .split_whitespace()
            .collect();
        let col = |name: &str| {
            header
                .iter()
                .position(|c| *c == name)
                .unwrap_or_else(|| panic!("no column {name} in 'show servers state':\n{answer}"))
        };
        let (be, srv, op) = (col("be_name"), col("srv_name"), col("srv_op_state"));
        lines
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                ServerState {
                    backend: f[be].to_string(),
                    name: f[srv].to_string(),
                    op_state: f[op]
                        .parse()
                        .unwrap_or_else(|_| panic!("srv_op_state in: {l}")),
                }
            })
            .collect()
    }

    /// `show stat` as one map per line (frontends, servers, backends), keyed by the
    /// CSV header's column names: `pxname`, `svname`, `status`, `check_status`, ...
    pub fn stat(&self) -> Vec<HashMap<String, String>> {
        let answer = self.command("show stat");
        let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .unwrap_or_else(|| panic!("no header in 'show stat':\n{answer}"))
            .split(',')
            .map(str::to_string)
            .collect();
        lines
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(l.split(',').map(str::to_string))
                    .collect()
            })
            .collect()
    }

    /// The `show stat` line of one server.
    pub fn server_stat(&self, backend: &str, server: &str) -> HashMap<String, String> {
        self.stat()
            .into_iter()
            .find(|r| r["pxname"] == backend && r["svname"] == server)
            .unwrap_or_else(|| panic!("no server {backend}/{server} in 'show stat'"))
    }

    /// Waits until all `count` servers of `backend` are UP by both views of the stats
    /// socket, and each has passed a health check. HAProxy counts a server as up from
    /// the start, before any check ran, so UP alone would prove nothing: the check
    /// status (`L4OK`, `L7OK`) says a check has succeeded.
    pub fn wait_backend_up(&self, backend: &str, count: usize) {
        let what = format!("all {count} servers of backend {backend} up and checked");
        wait_for(&what, Duration::from_millis(50), || {
            let states: Vec<ServerState> = self
                .servers_state()
                .into_iter()
                .filter(|s| s.backend == backend)
                .collect();
            let stats: Vec<HashMap<String, String>> = self
                .stat()
                .into_iter()
                .filter(|r| r["pxname"] == backend && r["svname"] != "BACKEND")
                .collect();
            let checked = stats
                .iter()
                .all(|r| r["status"] == "UP" && r["check_status"].ends_with("OK"));
            if states.len() == count
                && states.iter().all(ServerState::up)
                && stats.len() == count
                && checked
            {
                return Ok(());
            }
            Err(format!("{states:?}\n{stats:?}\n{}", self.output()))
        });
    }
}

/// The TCP frontend `fe` of a configuration: bound to `127.0.0.1:port` with
/// `bind_options`, then the lines of `extra`, handing every connection to the backend
/// `be` that the caller writes after it.
pub fn frontend(port: u16, bind_options: &str, extra: &str) -> String {
    format!(
        "frontend fe\n\
         \x20   bind 127.0.0.1:{port} {bind_options}\n\
         {extra}\
         \x20   default_backend be\n\
         \n"
    )
}

/// One command on HAProxy's stats socket: the command and a newline, then everything
/// until HAProxy closes (it does after one command outside interactive mode).
pub fn query(socket: &Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.set_write_timeout(Some(DEADLINE))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

/// nginx with the stream module, one process (`master_process off`, so that killing
/// it leaves no worker behind), everything it writes kept in its directory.
pub struct Nginx {
    started: Started,
}

impl Nginx {
    /// Starts nginx with the `stream { ... }` block that `servers` writes for `ports`
    /// free loopback ports (the ports it listens on), and waits until it holds a socket in
    /// `LISTEN` on each. Connecting to see would be a client, forwarded to the server
    /// behind.
    pub fn stream(ports: usize, servers: impl Fn(&[u16]) -> String) -> Nginx {
        let nginx = require("nginx", "-v", "nginx");
        assert!(
            Path::new(NGINX_STREAM_MODULE).exists(),
            "nginx's stream module is not installed ({NGINX_STREAM_MODULE}), and this test \
             needs it: apt-get install libnginx-mod-stream (.ci/run installs it)"
        );
        start_on_free_ports("nginx", ports, |ports| {
            let dir = TempDir::new();
            let d = dir.path().display();
            // Debian's nginx is built with paths under /var: the pid file and the error
            // log are set here (`-e stderr` is the log before the configuration is
            // read), and with no `http` block there are no temporary directories. So
            // it runs as any user; with no master process there is no `user` to become.
            let config = format!(
                "load_module {NGINX_STREAM_MODULE};\n\
                 master_process off;\n\
                 pid {d}/nginx.pid;\n\
                 error_log stderr info;\n\
                 events {{ worker_connections 64; }}\n\
                 stream {{\n{}}}\n",
                servers(ports),
            );
            let file = dir.join("nginx.conf");
            std::fs::write(&file, &config).expect("write nginx.conf");
            let mut cmd = Command::new(&nginx);
            cmd.arg("-e")
                .arg("stderr")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&file)
                .args(["-g", "daemon off;"]);
            let mut running = Running::spawn(cmd);
            let addrs: Vec<SocketAddr> = ports.iter().map(|p| loopback(*p)).collect();
            let pid = running.child.id();
            running.wait_ready("nginx", || {
                addrs.iter().all(|a| procfs::listens_on(pid, *a))
            })?;
            Ok(Nginx {
                started: Started {
                    ports: ports.to_vec(),
                    config,
                    running,
                    _dir: dir,
                },
            })
        })
    }

    /// The address of listening port `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.started.addr(i)
    }

    /// Its configuration and what it wrote so far (its error log goes to stderr), for
    /// failure messages.
    pub fn output(&self) -> String {
        self.started.output()
    }
}
