//! Blocking network clients with timeouts, so that a broken server fails the test
//! instead of hanging it, and the byte helpers that go with them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sockloop::Endpoint;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The socket address of a `tcp://` (or other internet) endpoint.
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

/// Polls `probe` every `every` until it returns `Ok`, and returns what it held. At
/// [`DEADLINE`] the test fails naming `what` with the last `Err`: the state or the log
/// that shows why the wait failed, which a bare "timed out" would not.
pub fn wait_for<T>(what: &str, every: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(t) => return t,
            Err(why) => assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}: {why}"
            ),
        }
        thread::sleep(every);
    }
}

/// `GET path` over HTTP/1.0 (the write side shut after the request, the answer read
/// until the server closes): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    http_response(&response)
}

/// The status code and the body of an HTTP response; fails the test unless it has a
/// status line.
pub fn http_response(response: &str) -> (u16, String) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
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
pub fn unix_exchange(path: &Path, data: &[u8]) -> Vec<u8> {
    let mut s =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
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
