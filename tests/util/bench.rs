//! For the tests of `sockloop bench`: reading its JSON, decoding its histograms, and
//! servers written in the test that misbehave on purpose.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde_json::Value;

use super::child::run_bin;

/// A count from a report (or interval) object; fails the test when it is missing.
pub fn count(r: &Value, key: &str) -> u64 {
    r[key].as_u64().unwrap_or_else(|| panic!("no {key} in {r}"))
}

/// The report of a finished `sockloop bench --json` without `--interval`: its stdout
/// is one JSON object. Fails the test, with both outputs, when it is not; the exit
/// code is the caller's to check.
pub fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs `sockloop ARGS` (a `bench ... --json` against a server that misbehaves in no
/// way), which must succeed and count no error; returns its report.
pub fn clean_report(args: &[&str]) -> Value {
    let out = run_bin(args);
    let r = report(&out);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    r
}

/// Every line of `text` parsed as JSON: what `--json --interval` runs and merges print
/// (their intervals, then the summary).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The latency histogram a report (or interval) object carries.
pub fn histogram(v: &Value) -> Histogram<u64> {
    histogram_at(v, "histogram")
}

/// The histogram in field `key` of a report (`histogram`, `connect_histogram`,
/// `first_reply_histogram`), decoded.
pub fn histogram_at(v: &Value, key: &str) -> Histogram<u64> {
    let b64 = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"));
    let bytes = BASE64
        .decode(b64)
        .unwrap_or_else(|e| panic!("{key} is not base64: {e}"));
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .unwrap_or_else(|e| panic!("{key} does not decode: {e}"))
}

/// Now, in seconds since the Unix epoch: the clock `--start-at` and the reports'
/// windows are on.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Resets the connection (SO_LINGER 0, then close), as a server that fails on purpose
/// does; `false` when the socket option could not be set, so no reset was sent.
pub fn reset(s: TcpStream) -> bool {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .is_ok()
}

/// A TCP server handing each connection, numbered from 1, to `serve` on a thread of
/// its own; returns its `tcp://` URL.
pub fn tcp_server(serve: impl Fn(TcpStream, u64) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for (n, s) in listener.incoming().enumerate() {
            let Ok(s) = s else { continue };
            let serve = serve.clone();
            thread::spawn(move || serve(s, n as u64 + 1));
        }
    });
    format!("tcp://{addr}")
}

/// Echoes `n` whole messages of `SIZE` bytes; `false` if the client went away first.
pub fn echo_messages<const SIZE: usize>(s: &mut TcpStream, n: usize) -> bool {
    let mut buf = [0u8; SIZE];
    for _ in 0..n {
        if s.read_exact(&mut buf).is_err() || s.write_all(&buf).is_err() {
            return false;
        }
    }
    true
}
