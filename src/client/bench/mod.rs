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
//! or extra byte is an error. Connections are opened in batches with back-off, so
//! thousands can be ramped up without overflowing the server's accept queue. Each of
//! `threads` threads runs its own poll loop over its share of the connections.
//!
//! With `proxy`, every connection starts with a PROXY protocol header naming a client
//! of its own (see [`ProxyVersion`](crate::client::ProxyVersion)), so a server that
//! expects the header is loaded as if through a balancer, by many clients.

mod driver;
mod flows;
mod merge;
mod messages;
mod pattern;
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

pub use merge::{merge, read_runs};
pub use report::{Report, RunOptions};

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

    /// Connect first, then wait until this moment to start the warm-up and the measured
    /// window, so that generators started at slightly different moments (on many
    /// hosts) measure the same window. More than [`START_SLACK`] in the past is an
    /// invalid setting.
    pub start_at: Option<SystemTime>,
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
            start_at: None,
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
        if self.reconnect && self.rate.is_some() {
            return bad("--reconnect and --rate cannot be combined".into());
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

/// What one thread measured.
pub(crate) struct Tally {
    pub(crate) hist: Histogram<u64>,
    /// Messages completed inside the measured window.
    pub(crate) msgs: u64,
    /// Connections (reconnect mode) completed inside the window.
    pub(crate) conns_done: u64,
    pub(crate) errors: u64,
    pub(crate) lost: u64,
    pub(crate) connected: usize,
    pub(crate) ramp: Duration,
    pub(crate) first_error: Option<String>,
    /// Of `msgs`, how many the progress line has been told about.
    published: u64,
    live: Arc<Live>,
}

impl Tally {
    fn new(live: Arc<Live>) -> Self {
        Tally {
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            msgs: 0,
            conns_done: 0,
            errors: 0,
            lost: 0,
            connected: 0,
            ramp: Duration::ZERO,
            first_error: None,
            published: 0,
            live,
        }
    }

    /// Tells the progress line about the messages completed since the last call: once
    /// per poll, not once per message, so that the threads do not contend on a shared
    /// counter in the hot path.
    pub(crate) fn publish(&mut self) {
        if self.msgs > self.published {
            self.live
                .completed
                .fetch_add(self.msgs - self.published, Ordering::Relaxed);
            self.published = self.msgs;
        }
    }

    /// Records an error; the first one is kept for the report.
    pub(crate) fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Records a message that completed at `done` after being issued (or due) at `since`.
    pub(crate) fn completed(&mut self, window: &Window, since: Instant, done: Instant) {
        if window.counts(done) {
            self.msgs += 1;
            let us = done.saturating_duration_since(since).as_micros() as u64;
            self.hist.saturating_record(us.max(1));
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.hist.add(&other.hist);
        self.msgs += other.msgs;
        self.conns_done += other.conns_done;
        self.errors += other.errors;
        self.lost += other.lost;
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
pub fn run(mut cfg: BenchConfig) -> io::Result<Report> {
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
        handles.push(
            thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || worker(share, live, &ready, &wrx))?,
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
    progress(&cfg, &live, &window, &handles);

    let mut total = Tally::new(live);
    for h in handles {
        match h.join() {
            Ok(t) => total.merge(t),
            Err(_) => total.error(|| "a client thread panicked".into()),
        }
    }
    Report::new(&cfg, threads, &total, &wall)
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
    ready: &Barrier,
    window: &std::sync::mpsc::Receiver<Window>,
) -> Tally {
    let mut tally = Tally::new(live);
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
    tally
}

/// The live progress line on stderr, once a second, while the threads run.
fn progress(
    cfg: &BenchConfig,
    live: &Live,
    window: &Window,
    handles: &[thread::JoinHandle<Tally>],
) {
    let mut last = (Instant::now(), 0u64);
    while handles.iter().any(|h| !h.is_finished()) {
        thread::sleep(Duration::from_millis(100));
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
