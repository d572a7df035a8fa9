//! What a benchmark run found, for people (`Display`) and for programs (JSON).

use std::fmt;
use std::io;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{
    Deserializer as HistogramReader, Serializer, V2DeflateSerializer,
};
use serde::{Deserialize, Deserializer, Serialize};

use super::{BenchConfig, Tally};
use crate::client::ProxyVersion;

/// The result of a [`run`](super::run), or of several merged ([`merge`](super::merge)).
/// Serialises to the object `--json` prints, and reads back from it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The server measured.
    pub url: String,
    /// `closed`, `open` or `reconnect`.
    #[serde(deserialize_with = "known_mode")]
    pub mode: &'static str,
    /// Connections (or datagram flows) asked for.
    pub conns: usize,
    /// Connections that were established during the ramp-up.
    pub connected: usize,
    /// Client threads.
    pub threads: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (closed loop).
    pub depth: usize,
    /// The measured window, in seconds.
    pub secs: f64,
    /// The warm-up before it, in seconds.
    pub warmup_secs: f64,
    /// The open-loop target rate, messages per second.
    pub rate: Option<f64>,
    /// The PROXY protocol header every connection started with (`"v1"`, `"v2"`), if any.
    pub proxy: Option<ProxyVersion>,
    /// Messages echoed completely inside the window.
    pub msgs: u64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Echoed payload, in MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// New connections per second (reconnect mode).
    pub conns_per_sec: Option<f64>,
    /// Latency percentiles and maximum, µs (from the intended send time in open loop).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// The slowest message.
    pub max_us: u64,
    /// The mean.
    pub mean_us: f64,
    /// Wrong, missing or extra bytes, failed connections, unexpected closes.
    pub errors: u64,
    /// Datagrams never answered within the timeout (not errors: datagrams may be lost).
    pub lost: u64,
    /// How long connecting took, in seconds.
    pub ramp_secs: f64,
    /// What the first error was.
    pub first_error: Option<String>,

    // What it takes to merge runs from many hosts exactly (`sockloop bench merge`):
    // the whole histogram rather than its percentiles, and when, where and how the
    // run was made.
    /// The latency of every message counted, µs: HdrHistogram's V2 compressed
    /// encoding (`V2DeflateSerializer`), in base64 (standard alphabet, padded).
    pub histogram: String,
    /// The histogram's lowest discernible value, µs.
    pub histogram_lowest_us: u64,
    /// The histogram's highest trackable value, µs (slower messages are recorded as this).
    pub histogram_highest_us: u64,
    /// The histogram's significant decimal digits.
    pub histogram_sigfig: u8,
    /// The measured window's start, seconds since the Unix epoch (merged: the latest start).
    pub start_unix: f64,
    /// The measured window's end, seconds since the Unix epoch (merged: the earliest end).
    pub end_unix: f64,
    /// The host the generator ran on (merged: every distinct host, comma-separated).
    pub host: String,
    /// The server measured, as given (the same as `url`).
    pub target: String,
    /// The options the generator ran with (merged: those of the first run).
    pub options: RunOptions,
    /// How many runs this report stands for: 1, or how many were merged.
    pub runs: u64,
}

/// The options of one generator: what decides whether two runs measured the same thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunOptions {
    /// `closed`, `open` or `reconnect`.
    #[serde(deserialize_with = "known_mode")]
    pub mode: &'static str,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Connections (or datagram flows).
    pub conns: usize,
    /// Client threads.
    pub threads: usize,
    /// The open-loop rate, messages per second.
    pub rate: Option<f64>,
    /// The PROXY protocol header sent, if any.
    pub proxy: Option<ProxyVersion>,
    /// The measured window asked for, seconds.
    pub secs: f64,
    /// The warm-up asked for, seconds.
    pub warmup_secs: f64,
    /// Datagrams: how long before one is counted lost, seconds.
    pub timeout_secs: f64,
    /// The start asked for (`--start-at`, `--start-in`), seconds since the Unix epoch.
    pub start_at: Option<f64>,
}

/// `mode` is a `&'static str`, one of a known few: reading one back maps it to them.
fn known_mode<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    let s = String::deserialize(d)?;
    mode_named(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown mode '{s}' (expected closed, open or reconnect)"
        ))
    })
}

pub(super) fn mode_named(s: &str) -> Option<&'static str> {
    ["closed", "open", "reconnect"]
        .into_iter()
        .find(|m| *m == s)
}

/// When the measured window was, by the wall clock, seconds since the Unix epoch.
pub(super) struct WallWindow {
    pub(super) start_unix: f64,
    pub(super) end_unix: f64,
}

/// `h` as the `histogram` field holds it.
pub(super) fn encode_histogram(h: &Histogram<u64>) -> io::Result<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| io::Error::other(format!("cannot encode the latency histogram: {e:?}")))?;
    Ok(BASE64.encode(bytes))
}

/// The histogram a `histogram` field holds.
pub(super) fn decode_histogram(s: &str) -> io::Result<Histogram<u64>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let bytes = BASE64
        .decode(s.trim())
        .map_err(|e| bad(format!("the histogram is not base64: {e}")))?;
    HistogramReader::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| bad(format!("the histogram cannot be decoded: {e:?}")))
}

impl Report {
    pub(super) fn new(
        cfg: &BenchConfig,
        threads: usize,
        t: &Tally,
        wall: &WallWindow,
    ) -> io::Result<Report> {
        let secs = cfg.duration.as_secs_f64();
        let q = |p: f64| {
            if t.hist.is_empty() {
                0
            } else {
                t.hist.value_at_quantile(p)
            }
        };
        let mode = if cfg.reconnect {
            "reconnect"
        } else if cfg.rate.is_some() {
            "open"
        } else {
            "closed"
        };
        Ok(Report {
            url: cfg.endpoint.to_string(),
            mode,
            conns: cfg.conns,
            connected: t.connected,
            threads,
            size: cfg.size,
            depth: cfg.depth,
            secs,
            warmup_secs: cfg.warmup.as_secs_f64(),
            rate: cfg.rate,
            proxy: cfg.proxy,
            msgs: t.msgs,
            msgs_per_sec: t.msgs as f64 / secs,
            mb_per_sec: (t.msgs as f64 * cfg.size as f64) / secs / 1e6,
            conns_per_sec: cfg.reconnect.then(|| t.conns_done as f64 / secs),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if t.hist.is_empty() { 0 } else { t.hist.max() },
            mean_us: if t.hist.is_empty() {
                0.0
            } else {
                t.hist.mean()
            },
            errors: t.errors,
            lost: t.lost,
            ramp_secs: t.ramp.as_secs_f64(),
            first_error: t.first_error.clone(),

            histogram: encode_histogram(&t.hist)?,
            histogram_lowest_us: t.hist.low(),
            histogram_highest_us: t.hist.high(),
            histogram_sigfig: t.hist.sigfig(),
            start_unix: wall.start_unix,
            end_unix: wall.end_unix,
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            target: cfg.endpoint.to_string(),
            options: RunOptions {
                mode,
                size: cfg.size,
                depth: cfg.depth,
                conns: cfg.conns,
                threads,
                rate: cfg.rate,
                proxy: cfg.proxy,
                secs,
                warmup_secs: cfg.warmup.as_secs_f64(),
                timeout_secs: cfg.timeout.as_secs_f64(),
                start_at: cfg.start_at.map(unix_secs),
            },
            runs: 1,
        })
    }

    /// The latency histogram the report carries, decoded.
    pub(super) fn latencies(&self) -> io::Result<Histogram<u64>> {
        decode_histogram(&self.histogram)
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }
}

/// `t` in seconds since the Unix epoch (negative before it).
pub(super) fn unix_secs(t: std::time::SystemTime) -> f64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.mode {
            "reconnect" => "a new connection per message".to_string(),
            "open" => format!("open loop at {:.0} msg/s", self.rate.unwrap_or(0.0)),
            _ => format!("depth {}", self.depth),
        };
        let what = match self.proxy {
            Some(v) => format!("{what}, PROXY {v} headers"),
            None => what,
        };
        writeln!(
            f,
            "bench {}: {} connections, {what}, {} B messages, {} thread(s), {:.2} s measured after {:.2} s warm-up",
            self.url, self.conns, self.size, self.threads, self.secs, self.warmup_secs
        )?;
        writeln!(
            f,
            "  connected   {} of {} in {:.2} s",
            self.connected, self.conns, self.ramp_secs
        )?;
        writeln!(
            f,
            "  messages    {} = {:.0} msg/s, {:.2} MB/s",
            self.msgs, self.msgs_per_sec, self.mb_per_sec
        )?;
        if let Some(c) = self.conns_per_sec {
            writeln!(f, "  connections {c:.0} conn/s")?;
        }
        writeln!(
            f,
            "  latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        )?;
        if self.runs > 1 {
            writeln!(
                f,
                "  merged      {} runs on {}, windows overlapping {:.2} s",
                self.runs, self.host, self.secs
            )?;
        }
        write!(f, "  errors      {}", self.errors)?;
        if self.lost > 0 {
            write!(f, "  (lost datagrams: {})", self.lost)?;
        }
        if let Some(e) = &self.first_error {
            write!(f, "\n  first error {e}")?;
        }
        Ok(())
    }
}
