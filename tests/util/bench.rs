//! For the tests of `sockloop bench`: reading its JSON, decoding its histograms, and
//! servers written in the test that misbehave on purpose.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use serde_json::Value;

/// A count from a report (or interval) object; fails the test when it is missing.
pub fn count(r: &Value, key: &str) -> u64 {
    r[key].as_u64().unwrap_or_else(|| panic!("no {key} in {r}"))
}

/// The latency histogram a report (or interval) object carries.
pub fn histogram(v: &Value) -> Histogram<u64> {
    let b64 = v["histogram"].as_str().expect("histogram is a string");
    let bytes = BASE64.decode(b64).expect("histogram is base64");
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("histogram decodes")
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
