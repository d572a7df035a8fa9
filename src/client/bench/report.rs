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

use super::{BenchConfig, IntervalReport, Tally};
use crate::client::ProxyVersion;

/// The result of a [`run`](super::run), or of several merged ([`merge`](super::merge)).
/// Serialises to the object `--json` prints, and reads back from it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Always `"summary"`: the run's report, after its `"interval"` ones
    /// ([`IntervalReport`](super::IntervalReport)) when it had them. Reports without it,
    /// from before intervals, read as summaries.
    #[serde(rename = "type", default)]
    pub kind: ReportType,
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
    /// Latencies of the messages, µs (from the intended send time in open loop), and
    /// their whole histogram.
    #[serde(flatten)]
    pub latency: Latencies,
    /// Every failure: the sum of the [error kinds](Failures::error_kinds) of
    /// `failures`. Not `lost`, `duplicated` or `reordered`: datagrams may be lost,
    /// duplicated and reordered.
    pub errors: u64,
    /// Datagrams never answered within the timeout (not errors: datagrams may be lost).
    pub lost: u64,
    /// How long connecting took, in seconds.
    pub ramp_secs: f64,
    /// What the first error was.
    pub first_error: Option<String>,

    /// Failures by kind, whose sum (without the datagram kinds) is `errors`.
    #[serde(flatten)]
    pub failures: Failures,

    // Keeping the load going, and what connecting costs. `replaced` adds up across
    // runs, `longest_gap_ms` and the maxima combine as maxima; the percentiles are
    // per run.
    /// Failed connections that were replaced by a new one (`--keep-going`); the
    /// failures themselves are counted by kind above. In `reconnect` mode, failed
    /// attempts that were followed by another.
    pub replaced: u64,
    /// The longest time inside the window in which no reply at all arrived, over the
    /// whole run (all connections, all threads): between two consecutive completed
    /// messages, or between the window's start or end and the nearest completion. Gaps
    /// under 1 ms are reported as 0.
    pub longest_gap_ms: f64,
    /// Connect time percentiles and maximum, µs, one sample per connection: from the
    /// connect call to established, and for TLS to the handshake done.
    pub connect_p50_us: u64,
    /// 99th percentile.
    pub connect_p99_us: u64,
    /// The slowest connect.
    pub connect_max_us: u64,
    /// First-reply time percentiles and maximum, µs, one sample per connection: from
    /// established (or the first message sent, if later) to the first complete reply.
    pub first_reply_p50_us: u64,
    /// 99th percentile.
    pub first_reply_p99_us: u64,
    /// The slowest first reply.
    pub first_reply_max_us: u64,
    /// Every connect time, µs, encoded as the latency `histogram` is (2 significant
    /// digits), so that merged runs read exact connect percentiles from the sum.
    /// Empty in reports written before it was added.
    #[serde(default)]
    pub connect_histogram: String,
    /// Every first-reply time, likewise.
    #[serde(default)]
    pub first_reply_histogram: String,

    // What it takes to merge runs from many hosts exactly (`sockloop bench merge`),
    // besides the histogram in `latency`: when, where and how the run was made.
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
    /// The run's interval reports, in order, when it had them ([`BenchConfig::interval`](super::BenchConfig::interval)):
    /// not part of the report's JSON object (`--json` prints them as objects of their
    /// own, before it), read back by [`read_runs`](super::read_runs) from the lines
    /// before it, merged interval by interval by [`merge`](super::merge).
    #[serde(skip)]
    pub intervals: Vec<IntervalReport>,
}

/// The latencies of a run's or an interval's messages, µs: percentiles, maximum and
/// mean, and the whole histogram they were read from, so that runs can be merged
/// exactly (`sockloop bench merge`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Latencies {
    /// The median.
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
    /// The latency of every message counted, µs: HdrHistogram's V2 compressed
    /// encoding (`V2DeflateSerializer`), in base64 (standard alphabet, padded).
    pub histogram: String,
    /// The histogram's lowest discernible value, µs.
    pub histogram_lowest_us: u64,
    /// The histogram's highest trackable value, µs (slower messages are recorded as this).
    pub histogram_highest_us: u64,
    /// The histogram's significant decimal digits.
    pub histogram_sigfig: u8,
}

impl Latencies {
    /// The figures of `h`, and `h` encoded.
    pub(super) fn of(h: &Histogram<u64>) -> io::Result<Latencies> {
        Ok(Latencies {
            p50_us: percentile(h, 0.50),
            p90_us: percentile(h, 0.90),
            p99_us: percentile(h, 0.99),
            p999_us: percentile(h, 0.999),
            max_us: percentile(h, 1.0),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            histogram: encode_histogram(h)?,
            histogram_lowest_us: h.low(),
            histogram_highest_us: h.high(),
            histogram_sigfig: h.sigfig(),
        })
    }

    /// The histogram, decoded.
    pub fn histogram(&self) -> io::Result<Histogram<u64>> {
        decode_histogram(&self.histogram)
    }
}

/// Failures by kind. Every one is a count that adds up across runs and intervals; the
/// stream kinds count connections (a connection stops at its first failure), the
/// datagram ones datagrams. Only touched when something fails: the hot path never
/// sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Failures {
    /// Connections given up because the server refused them (`ECONNREFUSED`): while
    /// ramping up, once per connection whose last attempt was refused after the
    /// retries with back-off (a refusal that a retry got past is not counted); in
    /// `reconnect` mode, every refused attempt, since each stands for a message.
    pub connect_refused: u64,
    /// Connections given up because connecting took too long: an attempt that does not
    /// complete within the stream timeout (when set) is abandoned, and retried while
    /// ramping up; counted, like `connect_refused`, once per connection given up (or
    /// per attempt in `reconnect` mode); also the connections still not established when
    /// the ramp-up gives up after 60 s.
    pub connect_timeouts: u64,
    /// Established connections that failed with `ECONNRESET`, `EPIPE` or
    /// `ECONNABORTED` on a read or a write (the server, or something between, reset
    /// them).
    pub resets: u64,
    /// Connections the server closed (a FIN) while messages were in flight on them,
    /// or, in open loop, before the run ended.
    pub eof_early: u64,
    /// Stream connections closed because their oldest message had no complete reply
    /// within the stream timeout (when set), or still had messages in flight at the
    /// end of the drain after the window (always).
    pub timeouts: u64,
    /// Stream connections closed at the first echoed byte that differs from what was
    /// sent, or at a byte more than was sent; datagram replies that match nothing sent
    /// (a wrong byte, a wrong length).
    pub corrupt: u64,
    /// Errors of no kind above: other connect or I/O failures, TLS failures, a poll
    /// that failed, a run where no connection succeeded.
    pub other_errors: u64,
    /// Datagrams answered more than once: each reply after the first counts (not an
    /// error: datagrams may be duplicated).
    pub duplicated: u64,
    /// Datagrams answered after a later datagram of the same flow had been (not an
    /// error: datagrams may be reordered).
    pub reordered: u64,
}

impl Failures {
    /// The errors: the sum of the [error kinds](Self::error_kinds).
    pub fn errors(&self) -> u64 {
        self.error_kinds().iter().map(|&(_, n)| n).sum()
    }

    /// The kinds that are errors, by name, in the order reports list them: `errors`
    /// is their sum.
    pub fn error_kinds(&self) -> [(&'static str, u64); 7] {
        [
            ("connect_refused", self.connect_refused),
            ("connect_timeouts", self.connect_timeouts),
            ("resets", self.resets),
            ("eof_early", self.eof_early),
            ("timeouts", self.timeouts),
            ("corrupt", self.corrupt),
            ("other_errors", self.other_errors),
        ]
    }

    /// Adds `o`'s counts.
    pub(crate) fn add(&mut self, o: &Failures) {
        self.connect_refused += o.connect_refused;
        self.connect_timeouts += o.connect_timeouts;
        self.resets += o.resets;
        self.eof_early += o.eof_early;
        self.timeouts += o.timeouts;
        self.corrupt += o.corrupt;
        self.other_errors += o.other_errors;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
    }

    /// The counts since `base` was taken (`self` is later).
    pub(crate) fn since(&self, base: &Failures) -> Failures {
        let (f, b) = (self, base);
        Failures {
            connect_refused: f.connect_refused - b.connect_refused,
            connect_timeouts: f.connect_timeouts - b.connect_timeouts,
            resets: f.resets - b.resets,
            eof_early: f.eof_early - b.eof_early,
            timeouts: f.timeouts - b.timeouts,
            corrupt: f.corrupt - b.corrupt,
            other_errors: f.other_errors - b.other_errors,
            duplicated: f.duplicated - b.duplicated,
            reordered: f.reordered - b.reordered,
        }
    }
}

/// What a JSON object of `sockloop bench --json` is: with `--interval`, the interval
/// reports come first, then the run's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ReportType {
    /// The whole run: a [`Report`].
    #[default]
    Summary,
    /// One interval of a run: an [`IntervalReport`](super::IntervalReport).
    Interval,
}

/// The value at quantile `p` of `h` (`p` ≥ 1: its maximum); 0 when it is empty.
pub(super) fn percentile(h: &Histogram<u64>, p: f64) -> u64 {
    if h.is_empty() {
        0
    } else if p >= 1.0 {
        h.max()
    } else {
        h.value_at_quantile(p)
    }
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
        longest_gap: std::time::Duration,
        wall: &WallWindow,
    ) -> io::Result<Report> {
        let at = percentile;
        let secs = cfg.duration.as_secs_f64();
        let mode = if cfg.reconnect {
            "reconnect"
        } else if cfg.rate.is_some() {
            "open"
        } else {
            "closed"
        };
        Ok(Report {
            kind: ReportType::Summary,
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
            latency: Latencies::of(&t.hist)?,
            errors: t.failures.errors(),
            lost: t.lost,
            ramp_secs: t.ramp.as_secs_f64(),
            first_error: t.first_error.clone(),

            failures: t.failures,

            replaced: t.replaced,
            longest_gap_ms: longest_gap.as_secs_f64() * 1e3,
            connect_p50_us: at(&t.connect_hist, 0.50),
            connect_p99_us: at(&t.connect_hist, 0.99),
            connect_max_us: at(&t.connect_hist, 1.0),
            first_reply_p50_us: at(&t.first_reply_hist, 0.50),
            first_reply_p99_us: at(&t.first_reply_hist, 0.99),
            first_reply_max_us: at(&t.first_reply_hist, 1.0),
            connect_histogram: encode_histogram(&t.connect_hist)?,
            first_reply_histogram: encode_histogram(&t.first_reply_hist)?,

            start_unix: wall.start_unix,
            end_unix: wall.end_unix,
            host: crate::sys::hostname().unwrap_or_default(),
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
            intervals: Vec::new(),
        })
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
            self.latency.p50_us,
            self.latency.p90_us,
            self.latency.p99_us,
            self.latency.p999_us,
            self.latency.max_us
        )?;
        writeln!(
            f,
            "  connect µs  p50 {}  p99 {}  max {}   first reply µs  p50 {}  p99 {}  max {}",
            self.connect_p50_us,
            self.connect_p99_us,
            self.connect_max_us,
            self.first_reply_p50_us,
            self.first_reply_p99_us,
            self.first_reply_max_us
        )?;
        writeln!(
            f,
            "  continuity  {} connections replaced, longest gap without a reply {:.1} ms",
            self.replaced, self.longest_gap_ms
        )?;

        if self.runs > 1 {
            writeln!(
                f,
                "  merged      {} runs on {}, windows overlapping {:.2} s",
                self.runs, self.host, self.secs
            )?;
        }
        write!(f, "  errors      {}", self.errors)?;
        write_nonzero(f, &self.failures.error_kinds())?;
        let datagrams = [
            ("lost", self.lost),
            ("duplicated", self.failures.duplicated),
            ("reordered", self.failures.reordered),
        ];
        if datagrams.iter().any(|&(_, n)| n > 0) {
            write!(f, "\n  datagrams  ")?;
            write_nonzero(f, &datagrams)?;
        }
        if let Some(e) = &self.first_error {
            write!(f, "\n  first error {e}")?;
        }
        Ok(())
    }
}

/// ` (name n, name n)` for the non-zero counts; nothing when all are zero.
pub(super) fn write_nonzero(f: &mut fmt::Formatter<'_>, counts: &[(&str, u64)]) -> fmt::Result {
    let mut sep = " (";
    for &(name, n) in counts.iter().filter(|&&(_, n)| n > 0) {
        write!(f, "{sep}{name} {n}")?;
        sep = ", ";
    }
    if sep == ", " {
        write!(f, ")")?;
    }
    Ok(())
}
