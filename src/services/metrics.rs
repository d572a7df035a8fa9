//! Metrics and health over HTTP, served by the loop itself (see [`Metrics`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::line::Partial;
use crate::lifecycle::{Observer, WorkerStats};
use crate::service::{Context, Service};
use crate::stats::Stats;

/// The longest request accepted, headers included: a scrape or a probe is a few
/// hundred bytes; anything near this is not one.
pub const MAX_REQUEST: usize = 8 * 1024;

/// What the metrics listener reports, shared by every worker and filled by them as an
/// [`Observer`]: each worker's latest counters (at most
/// [`STATUS_INTERVAL`](crate::lifecycle::STATUS_INTERVAL) old), whether the server
/// is ready, and the listener's own request counts.
#[derive(Debug)]
pub struct MetricsState {
    workers: Mutex<WorkerStats>,
    ready: AtomicBool,
    started: SystemTime,
    requests: AtomicU64,
    bad_requests: AtomicU64,
}

impl Default for MetricsState {
    fn default() -> Self {
        MetricsState {
            workers: Mutex::default(),
            ready: AtomicBool::new(true),
            started: SystemTime::now(),
            requests: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
        }
    }
}

impl MetricsState {
    /// A fresh state: ready, no counters yet, started now.
    pub fn new() -> Arc<MetricsState> {
        Arc::new(MetricsState::default())
    }

    /// True until a drain or a shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The counters of every worker, summed (as the `stats` line at exit sums them):
    /// worker `own`'s as given (live, from the loop answering), the others' as they
    /// last told them.
    pub fn totals(&self, own: usize, live: &Stats) -> Stats {
        let mut total = live.clone();
        if let Ok(w) = self.workers.lock() {
            w.add_to(&mut total, Some(own));
        }
        total
    }

    /// The Prometheus text exposition format (version 0.0.4) of everything known,
    /// answered by worker `own` whose counters are `live`.
    pub fn render(&self, own: usize, live: &Stats) -> String {
        let totals = self.totals(own, live);
        let mut out = String::with_capacity(8 * 1024);
        for ((name, value), (_, help)) in totals.fields().into_iter().zip(Stats::descriptions()) {
            // One line of help: the doc comment, its lines joined.
            let help: String = help.split_whitespace().collect::<Vec<_>>().join(" ");
            match name {
                "active" => metric(&mut out, "active_connections", "gauge", &help, value),
                "queued_bytes" => metric(&mut out, "queued_output_bytes", "gauge", &help, value),
                "paused" => metric(&mut out, "paused_connections", "gauge", &help, value),
                "handshaking" => metric(&mut out, "handshaking_connections", "gauge", &help, value),
                _ => metric(&mut out, &format!("{name}_total"), "counter", &help, value),
            }
        }
        let requests = self.requests.load(Ordering::Relaxed);
        let bad = self.bad_requests.load(Ordering::Relaxed);
        metric(
            &mut out,
            "metrics_requests_total",
            "counter",
            "requests to this listener",
            requests,
        );
        metric(
            &mut out,
            "metrics_bad_requests_total",
            "counter",
            "requests refused: garbage, too large, or too slow",
            bad,
        );
        metric(
            &mut out,
            "ready",
            "gauge",
            "1 while accepting, 0 once a drain or shutdown began",
            u64::from(self.is_ready()),
        );
        let _ = writeln!(
            out,
            "# HELP sockloop_build_info The running version.\n# TYPE sockloop_build_info gauge\nsockloop_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let start = self
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        let _ = writeln!(
            out,
            "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start:.3}"
        );
        out
    }
}

/// One metric family with one sample, its name prefixed `sockloop_`.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP sockloop_{name} {help}\n# TYPE sockloop_{name} {kind}\nsockloop_{name} {value}"
    );
}

impl Observer for MetricsState {
    fn draining(&self, _: Option<usize>, _: Duration) {
        self.ready.store(false, Ordering::Release);
    }

    fn stopping(&self, _: Option<usize>) {
        self.ready.store(false, Ordering::Release);
    }

    fn status(&self, worker: Option<usize>, stats: &Stats) {
        if let Ok(mut w) = self.workers.lock() {
            w.set(worker, stats);
        }
    }
}

/// HTTP/1.1 on a listener of the loop: `GET /metrics` (Prometheus text format),
/// `GET /healthz` (200 while the loop runs), `GET /readyz` (200 while ready, 503 from
/// the moment a drain or shutdown begins); any other path 404, any other method 405.
///
/// It is an ordinary service on the loop's own machinery — the same limits, deadlines
/// and counters as any stream — with no HTTP framework: `httparse` reads the request
/// line and headers, and every answer closes the connection (`Connection: close`), so
/// a connection lives for one request. A request over [`MAX_REQUEST`] bytes is
/// answered 431, garbage 400, both counted in `sockloop_metrics_bad_requests_total`;
/// one that does not complete in time is closed by the listener's deadline.
#[derive(Clone, Debug)]
pub struct Metrics {
    state: Arc<MetricsState>,
    worker: usize,
}

/// The bytes of a request not yet complete (most arrive in one read and need none),
/// held as line mode holds a line: nothing at all between requests.
pub type Request = Partial;

impl Metrics {
    /// Serves `state`, which the loops fill as their [`Observer`].
    pub fn new(state: Arc<MetricsState>) -> Self {
        Metrics { state, worker: 0 }
    }

    /// This service runs in worker `i` (its own counters are read live; the other
    /// workers' from what they last told the state).
    pub fn worker(mut self, i: usize) -> Self {
        self.worker = i;
        self
    }

    /// Answers a whole request (or refuses a bad one), then closes.
    fn answer(&self, req: &[u8], ctx: &mut Context<'_>) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        let (status, kind, body) = match parsed.parse(req) {
            Ok(httparse::Status::Partial) if req.len() < MAX_REQUEST => return false,
            Ok(httparse::Status::Partial) => self.bad("431 Request Header Fields Too Large"),
            Err(_) => self.bad("400 Bad Request"),
            Ok(httparse::Status::Complete(_)) => {
                self.state.requests.fetch_add(1, Ordering::Relaxed);
                match (parsed.method, parsed.path) {
                    (Some("GET" | "HEAD"), Some("/metrics")) => (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        self.state.render(self.worker, &ctx.loop_stats()),
                    ),
                    (Some("GET" | "HEAD"), Some("/healthz")) => {
                        ("200 OK", "text/plain", "ok\n".into())
                    }
                    (Some("GET" | "HEAD"), Some("/readyz")) if self.state.is_ready() => {
                        ("200 OK", "text/plain", "ready\n".into())
                    }
                    (Some("GET" | "HEAD"), Some("/readyz")) => {
                        ("503 Service Unavailable", "text/plain", "draining\n".into())
                    }
                    (Some("GET" | "HEAD"), _) => {
                        ("404 Not Found", "text/plain", "not found\n".into())
                    }
                    _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
                }
            }
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if parsed.method == Some("HEAD") {
            ctx.write(head.as_bytes());
        } else {
            ctx.write_vectored(&[head.as_bytes(), body.as_bytes()]);
        }
        ctx.close();
        true
    }

    fn bad(&self, status: &'static str) -> (&'static str, &'static str, String) {
        self.state.bad_requests.fetch_add(1, Ordering::Relaxed);
        (status, "text/plain", format!("{status}\n"))
    }
}

impl Service for Metrics {
    type State = Request;

    fn open(&mut self, _: &mut Context<'_>) -> Request {
        Partial::new()
    }

    fn data(&mut self, state: &mut Request, data: &[u8], ctx: &mut Context<'_>) {
        if ctx.is_closing() {
            return;
        }
        if state.is_empty() {
            if !self.answer(data, ctx) {
                state.set(data);
            }
            return;
        }
        let room = (MAX_REQUEST + 1).saturating_sub(state.len());
        state.push(&data[..data.len().min(room)]);
        if self.answer(state.as_slice(), ctx) {
            state.clear();
        }
    }

    fn eof(&mut self, state: &mut Request, ctx: &mut Context<'_>) {
        // A request cut short: nothing to answer.
        if !state.is_empty() {
            state.clear();
            self.state.bad_requests.fetch_add(1, Ordering::Relaxed);
        }
        ctx.close();
    }
}
