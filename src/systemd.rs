//! Running under systemd: sockets it passes ([socket activation](listen_fds)) and the
//! state messages it reads ([`Notifier`], `sd_notify`).
//!
//! Both are the documented wire protocols, done by hand in a few lines rather than
//! through `libsystemd`: socket activation is a few environment variables and
//! descriptors from 3 on, and a notification is one datagram to a Unix socket.
//!
//! # Socket activation
//! systemd (or `systemd-socket-activate`, or any activator that follows
//! `sd_listen_fds(3)`) binds the sockets, starts the program with them open from
//! descriptor 3 on and sets `LISTEN_PID` (the program's pid), `LISTEN_FDS` (how many)
//! and, optionally, `LISTEN_FDNAMES` (a name per descriptor, separated by `:`).
//! [`listen_fds`] takes them over as [`StdSocket`]s, for
//! [`Builder::listen_socket`](crate::Builder::listen_socket); the kind of each socket
//! (stream or datagram, internet or Unix) is read from the socket itself. A socket file
//! the activator made is never removed by the loop: it did not create it.
//!
//! # Notifications
//! A service of `Type=notify` tells systemd when it is ready; [`Notifier`] sends
//! `READY=1`, `STOPPING=1` and `STATUS=...` to the socket named by `NOTIFY_SOCKET`,
//! and is an [`Observer`] so a loop (or every worker) reports through it.

use std::env;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::lifecycle::{Observer, WorkerStats};
use crate::socket::StdSocket;
use crate::stats::Stats;

/// The first passed descriptor (`SD_LISTEN_FDS_START`): 0, 1 and 2 are stdio.
pub const LISTEN_FDS_START: RawFd = 3;

/// Whether this process has already taken the passed descriptors.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes over the sockets passed by socket activation, each with its name from
/// `LISTEN_FDNAMES` (`None` when the activator names none).
///
/// Returns an empty list when `LISTEN_PID` is unset or names another process (the
/// variables were inherited, not meant for us), and on every call after the first: the
/// descriptors have one owner, and the first call made it the caller. Call it once, at
/// start-up, before anything else could open descriptors that it would take for passed
/// ones.
///
/// Each descriptor is made close-on-exec, so the sockets do not leak into programs this
/// one starts. The environment is left as it is, since changing it is not thread-safe;
/// a program that starts others should remove `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES` itself while it is still single-threaded (the variables alone do no
/// harm: `LISTEN_PID` names this process, not its children).
///
/// # Errors
/// Malformed variables, a count of names that differs from `LISTEN_FDS`, a descriptor
/// that is not open or not a socket, a stream socket that is not listening
/// (`Accept=yes` passes connections; serving needs `Accept=no`), a family other than
/// IPv4, IPv6 and Unix, a type other than stream and datagram, or a Unix socket with no
/// path (abstract or unbound). The message names the descriptor and its name. The
/// descriptors taken so far are closed.
pub fn listen_fds() -> io::Result<Vec<(StdSocket, Option<String>)>> {
    let Some(pid) = env::var_os("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("LISTEN_PID={pid:?} is not a process id")))?;
    if pid != std::process::id() {
        return Ok(Vec::new());
    }
    let count = env::var("LISTEN_FDS").unwrap_or_default();
    let n: RawFd = count
        .parse()
        .ok()
        .filter(|n| (0..=RawFd::MAX - LISTEN_FDS_START).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "LISTEN_FDS={count:?} is not a number of descriptors"
            ))
        })?;
    let names: Vec<Option<String>> = match env::var("LISTEN_FDNAMES") {
        Ok(names) => {
            let names: Vec<Option<String>> =
                names.split(':').map(|s| Some(s.to_string())).collect();
            if names.len() != n as usize {
                return Err(invalid(format!(
                    "LISTEN_FDNAMES has {} names for LISTEN_FDS={n} descriptors",
                    names.len()
                )));
            }
            names
        }
        Err(_) => vec![None; n as usize],
    };
    if n == 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let mut sockets = Vec::with_capacity(n as usize);
    for (fd, name) in (LISTEN_FDS_START..LISTEN_FDS_START + n).zip(names) {
        let which = match &name {
            Some(name) => format!("passed descriptor {fd} ({name})"),
            None => format!("passed descriptor {fd}"),
        };
        let socket = adopt(fd).map_err(|e| io::Error::new(e.kind(), format!("{which}: {e}")))?;
        sockets.push((socket, name));
    }
    Ok(sockets)
}

/// Takes ownership of one passed descriptor and makes it the std socket its kind calls
/// for.
fn adopt(fd: RawFd) -> io::Result<StdSocket> {
    // SAFETY: fcntl(F_GETFD) reads a descriptor's flags and nothing else; any integer
    // is a valid argument (a closed one gives EBADF).
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked just above), and the activator passed it
    // to this process — LISTEN_PID is our pid — for it to own: nothing else in the
    // process owns it, and `listen_fds` hands each one out only once (TAKEN).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let sock = Socket::from(owned);
    sock.set_cloexec(true)?;
    let ty = sock.r#type().map_err(|e| match e.raw_os_error() {
        Some(nix::libc::ENOTSOCK) => invalid("not a socket".to_string()),
        _ => e,
    })?;
    let domain = sock.domain()?;
    let stream = match ty {
        Type::STREAM => true,
        Type::DGRAM => false,
        _ => return Err(invalid("neither a stream nor a datagram socket".into())),
    };
    if stream && !sock.is_listener()? {
        return Err(invalid(
            "a stream socket that is not listening (a connection: Accept=yes? sockloop \
             serves listening sockets, Accept=no)"
                .into(),
        ));
    }
    let owned = OwnedFd::from(sock);
    let socket = match (domain, stream) {
        (Domain::IPV4 | Domain::IPV6, true) => StdSocket::Tcp(owned.into()),
        (Domain::IPV4 | Domain::IPV6, false) => StdSocket::Udp(owned.into()),
        (Domain::UNIX, true) => StdSocket::Unix(owned.into()),
        (Domain::UNIX, false) => StdSocket::UnixDatagram(owned.into()),
        _ => return Err(invalid("not an IPv4, IPv6 or Unix socket".into())),
    };
    // Checked now rather than when the loop is built, so the error names the descriptor.
    socket.local_endpoint()?;
    Ok(socket)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// How often at most [`Notifier`] sends systemd a `STATUS=` line: it shows in
/// `systemctl status`, which nobody reads ten times a second.
pub const NOTIFY_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Tells systemd about the server's state through `NOTIFY_SOCKET` (`sd_notify(3)`):
/// `READY=1` once every listener is bound ([`ready`](Self::ready)), `STOPPING=1` when a
/// drain begins, and `STATUS=N active connections, M accepted`, summed over the
/// workers, at most every [`NOTIFY_STATUS_INTERVAL`] and only when it changed, and
/// once more at the end ([`finished`](Self::finished)).
///
/// The loops only hand over their counters; a small thread of the notifier sends the
/// status line, so that figures that change just before the server goes quiet still
/// reach systemd within the interval, and a loop never waits on systemd's socket for
/// them. The thread ends within the interval after the notifier is dropped.
///
/// A message that cannot be sent is logged and dropped: systemd's view of the service
/// is not worth stopping the server for. A send waits at most 100 ms.
#[derive(Debug)]
pub struct Notifier {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    socket: UnixDatagram,
    addr: UnixAddr,
    state: Mutex<NotifyState>,
}

#[derive(Debug, Default)]
struct NotifyState {
    /// The last counters of each worker (index 0 for a loop without workers).
    workers: WorkerStats,
    /// Some loop has handed over counters since the last status line.
    changed: bool,
    stopping_sent: bool,
    last_status: String,
}

impl Notifier {
    /// A notifier for the socket named by `NOTIFY_SOCKET` (a path, or `@name` for an
    /// abstract socket); `Ok(None)` when the variable is unset or empty: not run by a
    /// service manager that listens.
    ///
    /// # Errors
    /// An address that is neither a path nor `@name` (such as systemd's `vsock:`), no
    /// socket to send from, or no thread for the status lines.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) {
            Some(target) => Notifier::new(notify_addr(&target)?).map(Some),
            None => Ok(None),
        }
    }

    fn new(addr: UnixAddr) -> io::Result<Notifier> {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(Duration::from_millis(100)))?;
        let shared = Arc::new(Shared {
            socket,
            addr,
            state: Mutex::new(NotifyState::default()),
        });
        let weak = Arc::downgrade(&shared);
        thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                loop {
                    thread::sleep(NOTIFY_STATUS_INTERVAL);
                    match weak.upgrade() {
                        Some(shared) => shared.send_status(),
                        None => break,
                    }
                }
            })?;
        Ok(Notifier { shared })
    }

    /// Sends one message: newline-separated `KEY=VALUE` assignments.
    pub fn notify(&self, message: &str) -> io::Result<()> {
        self.shared.notify(message)
    }

    /// `READY=1`, with a status line naming how many listeners are up.
    pub fn ready(&self, listeners: usize) {
        self.shared.send(&format!(
            "READY=1\nSTATUS=serving on {listeners} listener(s)"
        ));
    }

    /// The last figures, whatever the interval: call it after the loop (or the workers)
    /// finished, with the final counters.
    pub fn finished(&self, stats: &Stats) {
        self.shared.send(&format!(
            "STATUS=stopped; {} connections accepted",
            stats.accepted
        ));
    }
}

impl Shared {
    fn notify(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.addr)
            .map(drop)
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            log::warn!("cannot notify the service manager: {e}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NotifyState> {
        // A panic elsewhere while holding the lock leaves counters only: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status line, if the counters changed since the last one.
    fn send_status(&self) {
        let mut state = self.lock();
        if !std::mem::replace(&mut state.changed, false) {
            return;
        }
        let mut total = Stats::default();
        state.workers.add_to(&mut total, None);
        let text = format!(
            "STATUS={} active connections, {} accepted",
            total.active, total.accepted
        );
        if state.last_status == text {
            return;
        }
        state.last_status.clone_from(&text);
        drop(state);
        self.send(&text);
    }
}

impl Observer for Notifier {
    fn draining(&self, _worker: Option<usize>, delay: Duration) {
        // With workers every loop drains; systemd is told once.
        if std::mem::replace(&mut self.shared.lock().stopping_sent, true) {
            return;
        }
        self.shared.send(&format!(
            "STOPPING=1\nSTATUS=draining: not ready, serving {:.1} s more, then shutting down",
            delay.as_secs_f64()
        ));
    }

    fn status(&self, worker: Option<usize>, stats: &Stats) {
        let mut state = self.shared.lock();
        state.workers.set(worker, stats);
        state.changed = true;
    }
}

/// The address in `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
fn notify_addr(target: &std::ffi::OsStr) -> io::Result<UnixAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_bytes();
    match bytes.first() {
        Some(b'/') => UnixAddr::from_pathname(target),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(b'@') => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            UnixAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(invalid(format!(
            "NOTIFY_SOCKET={target:?}: expected an absolute path or @name"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_address_is_a_path_or_an_abstract_name() {
        assert!(notify_addr("/run/systemd/notify".as_ref()).is_ok());
        assert!(notify_addr("@/org/freedesktop/systemd1/notify".as_ref()).is_ok());
        let e = notify_addr("vsock:2:1234".as_ref()).expect_err("refused");
        assert!(e.to_string().contains("absolute path or @name"), "{e}");
    }

    #[test]
    fn status_is_summed_over_workers_sent_by_interval_and_stopping_once() {
        let dir = std::env::temp_dir().join(format!("sockloop-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).expect("bind");
        rx.set_read_timeout(Some(NOTIFY_STATUS_INTERVAL * 3))
            .expect("timeout");
        let n = Notifier::new(UnixAddr::from_pathname(&path).expect("addr")).expect("notifier");
        let s = |active, accepted| Stats {
            active,
            accepted,
            ..Stats::default()
        };
        let mut buf = [0u8; 512];
        let mut recv = || {
            let len = rx.recv(&mut buf).expect("a message");
            String::from_utf8_lossy(&buf[..len]).into_owned()
        };
        n.status(Some(0), &s(2, 5));
        n.status(Some(1), &s(3, 4));
        n.draining(Some(0), Duration::from_secs(1));
        n.draining(Some(1), Duration::from_secs(1));
        assert!(recv().starts_with("STOPPING=1\n"));
        // Both workers' figures in one line, from the notifier's thread.
        assert_eq!(recv(), "STATUS=5 active connections, 9 accepted");
        n.status(Some(1), &s(0, 4));
        assert_eq!(recv(), "STATUS=2 active connections, 9 accepted");
        // STOPPING=1 was sent once: nothing else is waiting.
        rx.set_nonblocking(true).expect("nonblocking");
        assert!(rx.recv(&mut buf).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
