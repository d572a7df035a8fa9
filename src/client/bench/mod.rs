//! `sockloop bench`: a load generator whose numbers can be trusted.
//!
//! - **Closed loop** (the default): every connection (or datagram flow) keeps `depth`
//!   messages of `size` bytes in flight and sends the next as soon as one comes back.
//! - **Open loop** (`rate`): messages leave at a fixed total rate whatever the server
//!   does, and latency runs from each message's *intended* send time, so a server that
//!   stalls shows in the percentiles instead of silently slowing the client down
//!   (no coordinated omission).
//! - **Reconnect**: a new connection for every message — the accept path under load.
//!
//! Every echoed byte is checked against what was sent (`pattern`); a wrong, missing
//! or extra byte is an error. Failures are counted by kind (refused, timed out,
//! reset, closed early, corrupt; see [`Report`]), and `errors` is their sum.
//! With `keep_going`, a failed stream connection is counted and replaced after a
//! back-off, so the load goes on while servers restart; the report says how many were
//! replaced and the longest time in which no reply at all arrived. Each connection's
//! connect time and first-reply time are recorded once, off the per-message path.
//! Connections are opened in batches with back-off, so thousands can be ramped up
//! without overflowing the server's accept queue. Each of `threads` threads runs its
//! own poll loop over its share of the connections.
//!
//! With `interval`, the measured window is also reported interval by interval while
//! the run goes on ([`IntervalReport`], see [`run_with_intervals`]), at no cost per
//! message (see the `interval` module). A report keeps its intervals
//! ([`Report::intervals`]), and [`write_plot`] draws it: throughput and latency per
//! interval over time, errors marked, and the latency by percentile (see the `plot`
//! module). Reports of many generators combine exactly with [`merge`].
//!
//! With `proxy`, every connection starts with a PROXY protocol header naming a client
//! of its own (see [`ProxyVersion`](crate::client::ProxyVersion)), so a server that
//! expects the header is loaded as if through a balancer, by many clients.

mod driver;
mod flows;
mod interval;
mod merge;
mod messages;
mod pattern;
mod plot;
mod ramp;
mod reconnect;
mod report;

use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

pub use interval::{INTERVAL_MIN, IntervalReport};
pub use merge::{merge, merge_intervals, read_runs};
pub use plot::{PlotFormat, plot_html, plot_svg, write_plot};
pub use report::{Failures, Latencies, Report, ReportType, RunOptions};

use crate::endpoint::Endpoint;

/// What to measure.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BenchConfig {
    /// The echo server.
    pub endpoint: Endpoint,
    /// Connections, or datagram flows (one socket each).
    pub conns: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (closed loop).
    pub depth: usize,
    /// How long to measure.
    pub duration: Duration,
    /// How long to run before measuring; excluded from every figure.
    pub warmup: Duration,
    /// Open loop: messages per second in total, spread evenly over the connections.
    pub rate: Option<f64>,
    /// A new connection for every message.
    pub reconnect: bool,
    /// Client threads, each with its own loop over its share of the connections.
    pub threads: usize,
    /// A datagram without a reply after this long is counted lost and replaced.
    pub timeout: Duration,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
    /// How to speak TLS to a `tls://` endpoint; `None` trusts the system's roots and
    /// expects the URL's host in the server's certificate (see
    /// [`TlsClient::for_endpoint`](crate::tls::TlsClient::for_endpoint)).
    pub tls: Option<crate::tls::TlsClient>,
    /// Start every connection with a PROXY protocol header of this version, each naming
    /// a made-up client of its own, for a server that expects one (stream endpoints
    /// only). The header is written while connecting: it is neither echoed nor part of
    /// any latency, except in `reconnect` mode, whose latency runs from the connect.
    pub proxy: Option<crate::client::ProxyVersion>,
    /// Source addresses to spread the connections over, round robin (`--bind`): on a
    /// host with several addresses, each adds a range of ephemeral ports, so one
    /// generator can open more connections to one server address and port than one
    /// source address allows (about 28,000 with the default port range). Empty (the
    /// default): 16 loopback addresses towards a loopback server, else the kernel's
    /// choice.
    pub bind: Vec<std::net::IpAddr>,

    // Failures by kind.
    /// Streams: a connection whose oldest message has had no complete reply for this
    /// long is closed and counted in [`Failures::timeouts`]; a connect attempt that
    /// takes longer is abandoned and counted in [`Failures::connect_timeouts`] (while
    /// ramping up, only once its retries are spent). `None` (the default) waits for
    /// replies until the end of the drain after the window (5 s), so that a slow
    /// server at a high depth is measured rather than failed. Datagrams use
    /// [`timeout`](Self::timeout).
    pub stream_timeout: Option<Duration>,

    // Load that survives failures.
    /// Streams: a connection that fails (any kind) is counted as usual, closed, and
    /// replaced by a new one after a back-off (10 ms, doubling to 1 s, reset once the
    /// new connection has echoed a message), so the load goes on while backends
    /// restart; the messages in flight on it are abandoned as part of that one
    /// failure. Counted in [`Report::replaced`]. In `reconnect` mode, where every
    /// message has a connection of its own anyway, a failed attempt is followed by the
    /// next after the same back-off.
    pub keep_going: bool,

    /// Connect first, then wait until this moment to start the warm-up and the measured
    /// window, so that generators started at slightly different moments (on many
    /// hosts) measure the same window. More than [`START_SLACK`] in the past is an
    /// invalid setting.
    pub start_at: Option<SystemTime>,

    /// Also report every `interval` of the measured window while the run goes on (see
    /// [`run_with_intervals`]); the last interval may be shorter. At least
    /// [`INTERVAL_MIN`].
    pub interval: Option<Duration>,
}

/// How far in the past `start_at` may be: the time it takes to start a process and
/// read its command line, not a late start of the window.
pub const START_SLACK: Duration = Duration::from_secs(1);

impl BenchConfig {
    /// A closed-loop run of 1 connection, 64-byte messages, depth 1, for 5 s.
    pub fn new(endpoint: Endpoint) -> Self {
        BenchConfig {
            endpoint,
            conns: 1,
            size: 64,
            depth: 1,
            duration: Duration::from_secs(5),
            warmup: Duration::ZERO,
            rate: None,
            reconnect: false,
            threads: 1,
            timeout: Duration::from_secs(1),
            progress: std::io::stderr().is_terminal(),
            tls: None,
            proxy: None,
            bind: Vec::new(),
            stream_timeout: None,
            keep_going: false,
            start_at: None,
            interval: None,
        }
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        if self.conns == 0 || self.size == 0 || self.depth == 0 || self.threads == 0 {
            return bad("--conns, --size, --depth and --threads must be at least 1".into());
        }
        if !self.endpoint.is_stream() && self.size < pattern::HEADER {
            return bad(format!(
                "datagram messages carry a {}-byte sequence header: --size must be at least {}",
                pattern::HEADER,
                pattern::HEADER
            ));
        }
        if !self.endpoint.is_stream() && self.reconnect {
            return bad("--reconnect needs a stream address (tcp://, tls://, unix:)".into());
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return bad("--rate must be a positive number of messages per second".into());
        }
        if !self.endpoint.is_stream() && self.proxy.is_some() {
            return bad("--proxy needs a stream address (tcp://, tls://, unix:)".into());
        }
        if !self.endpoint.is_stream() && self.keep_going {
            return bad(
                "--keep-going needs a stream address (tcp://, tls://, unix:): datagram flows \
                 carry on past lost datagrams anyway"
                    .into(),
            );
        }
        if !self.bind.is_empty() && !matches!(self.endpoint, Endpoint::Tcp(_) | Endpoint::Tls(_)) {
            return bad("--bind needs a tcp:// or tls:// address".into());
        }
        if self.reconnect && self.rate.is_some() {
            return bad("--reconnect and --rate cannot be combined".into());
        }
        if let Some(every) = self.interval {
            if every < INTERVAL_MIN {
                return bad(format!(
                    "--interval must be at least {} s",
                    INTERVAL_MIN.as_secs_f64()
                ));
            }
            // Boundaries are counted in u32 multiples of the interval.
            if interval::count(self.duration, every) > u64::from(u32::MAX) {
                return bad("--interval is too short for --secs".into());
            }
        }
        if let Some(at) = self.start_at {
            if let Ok(late) = SystemTime::now().duration_since(at) {
                if late > START_SLACK {
                    return bad(format!(
                        "the start time {:.3} is {:.1} s in the past",
                        report::unix_secs(at),
                        late.as_secs_f64()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How long, after the measured window, outstanding messages may take to come back
/// before they count as missing.
const DRAIN: Duration = Duration::from_secs(5);

/// Counters shared by the threads, for the progress line.
struct Live {
    completed: AtomicU64,
    errors: AtomicU64,
}

/// The timeline every thread follows, fixed once all have connected.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    /// Messages completing before this are not counted.
    pub(crate) measure_from: Instant,
    /// No new messages after this.
    pub(crate) end: Instant,
    /// Outstanding messages not back by this are missing.
    pub(crate) drain_until: Instant,
}

impl Window {
    fn new(warmup: Duration, duration: Duration) -> Self {
        let start = Instant::now();
        Window {
            start,
            measure_from: start + warmup,
            end: start + warmup + duration,
            drain_until: start + warmup + duration + DRAIN,
        }
    }

    pub(crate) fn counts(&self, t: Instant) -> bool {
        t >= self.measure_from && t <= self.end
    }
}

/// The open loop's timetable: messages due at a fixed rate, handed to the connections
/// in turn, each stamped with when it was due (not when it left).
pub(crate) struct Schedule {
    interval: Duration,
    next_due: Instant,
    next: usize,
}

impl Schedule {
    /// The timetable for `rate` messages per second from `start`; `None` in closed loop.
    pub(crate) fn new(rate: Option<f64>, start: Instant) -> Option<Schedule> {
        rate.map(|r| Schedule {
            interval: Duration::from_secs_f64(1.0 / r),
            next_due: start,
            next: 0,
        })
    }

    /// Calls `issue(connection, due)` for every message due by `now` (none after
    /// `end`), over `n` connections in turn.
    pub(crate) fn issue_due(
        &mut self,
        now: Instant,
        end: Instant,
        n: usize,
        mut issue: impl FnMut(usize, Instant),
    ) {
        while self.next_due <= now && self.next_due < end && n > 0 {
            issue(self.next % n, self.next_due);
            self.next += 1;
            self.next_due += self.interval;
        }
    }

    /// `timeout`, or less if the next message is due sooner.
    pub(crate) fn wait(&self, now: Instant, end: Instant, timeout: Duration) -> Duration {
        if self.next_due < end {
            timeout.min(self.next_due.saturating_duration_since(now))
        } else {
            timeout
        }
    }
}

/// What went wrong, for [`Tally::fail`]: each kind has a counter of its own in the
/// [`Report`], whose `errors` is their sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    ConnectRefused,
    ConnectTimeout,
    Reset,
    EofEarly,
    Timeout,
    Corrupt,
    Other,
}

impl Fault {
    /// The kind of a failed connect.
    pub(crate) fn of_connect(e: &io::Error) -> Fault {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Fault::ConnectRefused,
            io::ErrorKind::TimedOut => Fault::ConnectTimeout,
            _ => Fault::Other,
        }
    }

    /// The kind of a failed read or write on an established connection.
    pub(crate) fn of_io(e: &io::Error) -> Fault {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Fault::Reset,
            _ => Fault::Other,
        }
    }
}

/// A histogram for message latencies, µs: 1 µs to an hour, 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A histogram for connect and first-reply times, µs: one sample per connection, so
/// 2 significant digits are plenty.
fn connection_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

/// What one thread measured.
pub(crate) struct Tally {
    pub(crate) hist: Histogram<u64>,
    /// Messages completed inside the measured window.
    pub(crate) msgs: u64,
    /// Connections (reconnect mode) completed inside the window.
    pub(crate) conns_done: u64,
    pub(crate) lost: u64,
    pub(crate) connected: usize,
    pub(crate) ramp: Duration,
    pub(crate) first_error: Option<String>,
    pub(crate) failures: Failures,
    /// Failed connections replaced by new ones (`keep_going`).
    pub(crate) replaced: u64,
    /// Connect times (to established; for TLS to handshake done), µs, per connection.
    pub(crate) connect_hist: Histogram<u64>,
    /// From established (or the first message, if later) to its first complete reply,
    /// µs, per connection.
    pub(crate) first_reply_hist: Histogram<u64>,
    /// The thread's gaps of at least [`GAP_MIN`] between consecutive completions inside
    /// the window, oldest first; merged across threads into the run's longest gap.
    pub(crate) gaps: Vec<(Instant, Instant)>,
    /// When the thread's last message inside the window completed.
    pub(crate) last_done: Option<Instant>,
    /// Of `msgs`, how many the progress line has been told about.
    published: u64,
    /// The interval being filled, when intervals are reported.
    pub(crate) intervals: Option<Box<interval::Intervals>>,
    live: Arc<Live>,
}

impl Tally {
    fn new(live: Arc<Live>) -> Self {
        Tally {
            hist: latency_histogram(),
            msgs: 0,
            conns_done: 0,
            lost: 0,
            connected: 0,
            ramp: Duration::ZERO,
            first_error: None,
            failures: Failures::default(),
            replaced: 0,
            connect_hist: connection_histogram(),
            first_reply_hist: connection_histogram(),
            gaps: Vec::new(),
            last_done: None,
            published: 0,
            intervals: None,
            live,
        }
    }

    /// Tells the progress line about the messages completed since the last call: once
    /// per poll, not once per message, so that the threads do not contend on a shared
    /// counter in the hot path. Also where an interval's end is noticed.
    pub(crate) fn publish(&mut self) {
        self.tick_intervals();
        if self.msgs > self.published {
            self.live
                .completed
                .fetch_add(self.msgs - self.published, Ordering::Relaxed);
            self.published = self.msgs;
        }
    }

    /// Records an error of no particular kind (`other_errors`); the first error is
    /// kept for the report.
    pub(crate) fn error(&mut self, what: impl FnOnce() -> String) {
        self.fail(Fault::Other, what);
    }

    /// Records an error of kind `kind`; the first error is kept for the report.
    pub(crate) fn fail(&mut self, kind: Fault, what: impl FnOnce() -> String) {
        self.fail_n(kind, 1, what);
    }

    /// Records `n` errors of kind `kind` at once.
    pub(crate) fn fail_n(&mut self, kind: Fault, n: u64, what: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        let f = &mut self.failures;
        *match kind {
            Fault::ConnectRefused => &mut f.connect_refused,
            Fault::ConnectTimeout => &mut f.connect_timeouts,
            Fault::Reset => &mut f.resets,
            Fault::EofEarly => &mut f.eof_early,
            Fault::Timeout => &mut f.timeouts,
            Fault::Corrupt => &mut f.corrupt,
            Fault::Other => &mut f.other_errors,
        } += n;
        self.live.errors.fetch_add(n, Ordering::Relaxed);
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Records a message that completed at `done` after being issued (or due) at `since`.
    pub(crate) fn completed(&mut self, window: &Window, since: Instant, done: Instant) {
        if window.counts(done) {
            self.msgs += 1;
            let us = done.saturating_duration_since(since).as_micros() as u64;
            // With intervals, the interval's histogram, added into the run's at the
            // interval's end: one record per message either way.
            match self.intervals.as_mut() {
                Some(iv) => iv.hist.saturating_record(us.max(1)),
                None => self.hist.saturating_record(us.max(1)),
            }
            // Only gaps long enough to matter are kept, so the list stays short.
            let last = self.last_done.unwrap_or(window.measure_from);
            if done.saturating_duration_since(last) >= GAP_MIN {
                self.gaps.push((last, done));
            }
            self.last_done = Some(done);
        }
    }

    /// Records how long a connection took to connect (for TLS, to finish its
    /// handshake), from the connect call at `from` to `to`.
    pub(crate) fn connect_time(&mut self, from: Instant, to: Instant) {
        let us = to.saturating_duration_since(from).as_micros() as u64;
        self.connect_hist.saturating_record(us.max(1));
    }

    /// Records how long a connection took to echo its first message, from `from`.
    pub(crate) fn first_reply(&mut self, from: Instant, to: Instant) {
        let us = to.saturating_duration_since(from).as_micros() as u64;
        self.first_reply_hist.saturating_record(us.max(1));
    }

    /// The thread's gaps, closed by the one from its last completion to the end of
    /// the window.
    fn gaps_until(&mut self, window: &Window) -> Vec<(Instant, Instant)> {
        let last = self.last_done.unwrap_or(window.measure_from);
        let mut gaps = std::mem::take(&mut self.gaps);
        if window.end.saturating_duration_since(last) >= GAP_MIN {
            gaps.push((last, window.end));
        }
        gaps
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        self.msgs += other.msgs;
        self.conns_done += other.conns_done;
        self.lost += other.lost;
        self.failures.add(&other.failures);
        self.replaced += other.replaced;
        let _ = self.connect_hist.add(&other.connect_hist);
        let _ = self.first_reply_hist.add(&other.first_reply_hist);
        self.connected += other.connected;
        self.ramp = self.ramp.max(other.ramp);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One thread's share of the work.
pub(crate) struct Share {
    pub(crate) cfg: Arc<BenchConfig>,
    /// Resolved internet address, when the endpoint has one.
    pub(crate) addr: Option<SocketAddr>,
    /// Global index of this thread's first connection (connections differ in content).
    pub(crate) first: u32,
    pub(crate) conns: usize,
    /// This thread's part of the open-loop rate.
    pub(crate) rate: Option<f64>,
}

/// Runs the benchmark and returns its report. Setup problems (an address that does not
/// resolve, invalid settings) are errors; problems during the run are counted in the
/// report's `errors`.
pub fn run(cfg: BenchConfig) -> io::Result<Report> {
    run_with_intervals(cfg, |_| {})
}

/// Like [`run`], and with [`BenchConfig::interval`] set, hands each interval's report to
/// `on_interval` while the run goes on, in order, from the thread that called this:
/// each as soon as every client thread has finished the interval, the last when they
/// have finished the run (its drain included).
pub fn run_with_intervals(
    mut cfg: BenchConfig,
    mut on_interval: impl FnMut(&IntervalReport),
) -> io::Result<Report> {
    cfg.validate()?;
    cfg.tls = super::tls_for(&cfg.endpoint, cfg.tls.as_ref())?;
    let addr = match cfg.endpoint.host_port() {
        Some(_) => Some(crate::socket::resolve(&cfg.endpoint)?),
        None => None,
    };
    let threads = cfg.threads.min(cfg.conns);
    let cfg = Arc::new(cfg);
    let live = Arc::new(Live {
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    // Every thread connects first; the window starts when all have.
    let ready = Arc::new(Barrier::new(threads + 1));
    let mut window_txs = Vec::new();
    let (piece_tx, piece_rx) = std::sync::mpsc::channel::<interval::Piece>();
    let mut collector = cfg
        .interval
        .map(|every| interval::Collector::new(&cfg, every, threads));
    let mut handles = Vec::new();
    let mut first = 0usize;
    for t in 0..threads {
        let n = cfg.conns / threads + usize::from(t < cfg.conns % threads);
        let share = Share {
            cfg: cfg.clone(),
            addr,
            first: first as u32,
            conns: n,
            rate: cfg.rate.map(|r| r * n as f64 / cfg.conns as f64),
        };
        first += n;
        let (wtx, wrx) = std::sync::mpsc::channel::<Window>();
        window_txs.push(wtx);
        let (ready, live) = (ready.clone(), live.clone());
        let intervals = cfg
            .interval
            .map(|every| Box::new(interval::Intervals::new(piece_tx.clone(), &cfg, every)));
        handles.push(
            thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || worker(share, live, intervals, &ready, &wrx))?,
        );
    }
    ready.wait();
    if let Some(at) = cfg.start_at {
        wait_until(at, cfg.progress);
    }
    // The wall clock, read next to the monotonic one, dates the window for merging.
    let wall_start = report::unix_secs(SystemTime::now()) + cfg.warmup.as_secs_f64();
    let window = Window::new(cfg.warmup, cfg.duration);
    let wall = report::WallWindow {
        start_unix: wall_start,
        end_unix: wall_start + cfg.duration.as_secs_f64(),
    };
    for w in &window_txs {
        let _ = w.send(window);
    }
    // The report keeps the intervals too, for a plot of the run.
    let mut intervals = Vec::new();
    let mut on_interval = |i: &IntervalReport| {
        on_interval(i);
        intervals.push(i.clone());
    };
    let mut emit = |p: interval::Piece| {
        if let Some(c) = collector.as_mut() {
            if cfg.progress {
                // The interval's line replaces the progress line, which comes back.
                let _ = write!(io::stderr(), "\r{:80}\r", "");
            }
            c.add(p, &cfg, wall.start_unix, &mut on_interval);
        }
    };
    progress(&cfg, &live, &window, &handles, &piece_rx, &mut emit);
    // Every thread has sent all its pieces before it finished.
    while let Ok(p) = piece_rx.try_recv() {
        emit(p);
    }
    if let Some(c) = collector.as_mut() {
        c.finish(&cfg, wall.start_unix, &mut on_interval);
    }

    let mut total = Tally::new(live);
    let mut idle: Option<Vec<(Instant, Instant)>> = None;
    for h in handles {
        match h.join() {
            Ok(mut t) => {
                let gaps = t.gaps_until(&window);
                idle = Some(match idle {
                    None => gaps,
                    Some(so_far) => intersect(&so_far, &gaps),
                });
                total.merge(t);
            }
            Err(_) => total.error(|| "a client thread panicked".into()),
        }
    }
    let longest_gap = idle
        .unwrap_or_default()
        .iter()
        .map(|&(a, b)| b.saturating_duration_since(a))
        .max()
        .unwrap_or(Duration::ZERO);
    let mut report = Report::new(&cfg, threads, &total, longest_gap, &wall)?;
    report.intervals = intervals;
    Ok(report)
}

/// Gaps shorter than this between one thread's completions are not kept: the run's
/// longest gap is exact from this length up, and reported as 0 below it.
pub(crate) const GAP_MIN: Duration = Duration::from_millis(1);

/// The times that are in a gap of both `a` and `b` (each sorted and disjoint): when
/// neither thread had a reply, no thread of the two had.
fn intersect(a: &[(Instant, Instant)], b: &[(Instant, Instant)]) -> Vec<(Instant, Instant)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let from = a[i].0.max(b[j].0);
        let to = a[i].1.min(b[j].1);
        if from < to {
            out.push((from, to));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Sleeps until `at`, with a countdown on stderr when `progress`. Connections are
/// open meanwhile, idle. A ramp-up that ended after `at` starts the window at once,
/// late, and says so: the report's `start_unix` shows by how much.
fn wait_until(at: SystemTime, progress: bool) {
    if let Ok(late) = SystemTime::now().duration_since(at) {
        if late > Duration::from_millis(10) {
            log::warn!(
                "connecting ended {:.3} s after the start time: measuring from now",
                late.as_secs_f64()
            );
        }
        return;
    }
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if progress {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r[waiting {:5.1} s to start]", left.as_secs_f64());
            let _ = err.flush();
        }
        // Steps short enough for the countdown; the last one sleeps exactly what is left.
        thread::sleep(left.min(Duration::from_millis(if progress { 200 } else { 1000 })));
    }
    if progress {
        let _ = write!(io::stderr(), "\r{:40}\r", "");
    }
}

fn worker(
    share: Share,
    live: Arc<Live>,
    intervals: Option<Box<interval::Intervals>>,
    ready: &Barrier,
    window: &std::sync::mpsc::Receiver<Window>,
) -> Tally {
    let mut tally = Tally::new(live);
    tally.intervals = intervals;
    if share.cfg.endpoint.is_stream() {
        match driver::Driver::new(&share, &mut tally) {
            Ok(d) => d.run(ready, window),
            Err(e) => {
                tally.error(|| format!("poll: {e}"));
                ready.wait();
            }
        }
    } else {
        flows::run(&share, &mut tally, ready, window);
    }
    tally.finish_intervals();
    tally
}

/// The live progress line on stderr, once a second, while the threads run; the
/// threads' pieces of intervals handed to `piece` as they come.
fn progress(
    cfg: &BenchConfig,
    live: &Live,
    window: &Window,
    handles: &[thread::JoinHandle<Tally>],
    pieces: &std::sync::mpsc::Receiver<interval::Piece>,
    piece: &mut dyn FnMut(interval::Piece),
) {
    let mut last = (Instant::now(), 0u64);
    while handles.iter().any(|h| !h.is_finished()) {
        // Waits for pieces rather than sleeping, so an interval is reported when its
        // last piece comes; without intervals nothing comes and this is the sleep.
        if let Ok(p) = pieces.recv_timeout(Duration::from_millis(100)) {
            piece(p);
            continue;
        }
        let now = Instant::now();
        if !cfg.progress || now.duration_since(last.0) < Duration::from_secs(1) {
            continue;
        }
        let done = live.completed.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done);
        let phase = if now < window.measure_from {
            "warm-up"
        } else if now <= window.end {
            "measuring"
        } else {
            "draining"
        };
        let elapsed = now.saturating_duration_since(window.start).as_secs_f64();
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\r[{elapsed:5.1} s {phase:9}] {rate:>10.0} msg/s  {done:>10} done  {:>4} errors ",
            live.errors.load(Ordering::Relaxed)
        );
        let _ = err.flush();
    }
    if cfg.progress {
        let _ = write!(io::stderr(), "\r{:80}\r", "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_wide_gap_is_where_every_thread_was_idle() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        // Thread a idle 0–100 and 200–500; thread b idle 50–300 and 400–450.
        let a = [(ms(0), ms(100)), (ms(200), ms(500))];
        let b = [(ms(50), ms(300)), (ms(400), ms(450))];
        let both = intersect(&a, &b);
        assert_eq!(
            both,
            vec![(ms(50), ms(100)), (ms(200), ms(300)), (ms(400), ms(450))]
        );
        assert!(intersect(&a, &[]).is_empty());
    }
}
