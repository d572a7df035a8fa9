//! Reports per interval while a run goes on (`interval`): what changed when, during a
//! rolling update — the interval where throughput dropped, errors appeared, latency
//! spiked.
//!
//! The hot path pays nothing for it. While intervals are on, a thread records each
//! latency into its *current-interval* histogram instead of the run's, and adds that
//! histogram into the run's at each interval's end: still one `record` per message.
//! The counters are not duplicated at all: an interval's counts are the differences
//! of the thread's counters between two boundaries. A thread checks the clock for a
//! boundary once per poll (where it already tells the progress line its count), not
//! per message, and then hands its piece of the interval to the main thread over a
//! channel: one send per interval per thread. The main thread adds the threads'
//! pieces of an interval and reports it once all have arrived.
//!
//! Only the measured window is split into intervals. A message belongs to the interval
//! in which its thread saw it complete (to within one poll, at most 100 ms when idle,
//! immediately under load), so the intervals' messages and histograms add up exactly
//! to the run's. Failures are counted in the interval in which they happened; those
//! of the drain after the window are counted in the last one, those before the window
//! (connecting, warm-up) in none.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::report::{Latencies, ReportType, write_nonzero};
use super::{BenchConfig, Failures, Tally, Window};

/// The shortest interval: boundaries are checked once per poll, up to 100 ms apart
/// on an idle connection, so shorter intervals would mostly measure the polling.
pub const INTERVAL_MIN: Duration = Duration::from_millis(100);

/// How many intervals a window of `duration` splits into: the last one may be shorter.
pub(super) fn count(duration: Duration, every: Duration) -> u64 {
    let (d, e) = (duration.as_nanos(), every.as_nanos().max(1));
    (d.div_ceil(e).max(1)).min(u64::MAX as u128) as u64
}

/// The thread's counters that intervals report as differences.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    msgs: u64,
    conns_done: u64,
    lost: u64,
    replaced: u64,
    failures: Failures,
}

impl Counts {
    fn of(t: &Tally) -> Counts {
        Counts {
            msgs: t.msgs,
            conns_done: t.conns_done,
            lost: t.lost,
            replaced: t.replaced,
            failures: t.failures,
        }
    }

    fn since(&self, base: &Counts) -> Counts {
        Counts {
            msgs: self.msgs - base.msgs,
            conns_done: self.conns_done - base.conns_done,
            lost: self.lost - base.lost,
            replaced: self.replaced - base.replaced,
            failures: self.failures.since(&base.failures),
        }
    }

    fn add(&mut self, o: &Counts) {
        self.msgs += o.msgs;
        self.conns_done += o.conns_done;
        self.lost += o.lost;
        self.replaced += o.replaced;
        self.failures.add(&o.failures);
    }
}

/// One thread's part of one interval, sent to the main thread.
pub(crate) struct Piece {
    /// The interval, from 0.
    index: u64,
    hist: Histogram<u64>,
    counts: Counts,
}

/// A thread's side: the interval being filled.
pub(crate) struct Intervals {
    tx: Sender<Piece>,
    every: Duration,
    count: u64,
    /// The interval being filled, from 0.
    current: u64,
    /// The measured window's start, once the window is known.
    measure_from: Option<Instant>,
    /// When the current interval ends (the last one's end is not waited for: it
    /// takes the drain too, and is sent when the thread finishes).
    next_end: Option<Instant>,
    /// False until the window has started: what was counted before is in no interval.
    started: bool,
    /// The latencies of the current interval.
    pub(super) hist: Histogram<u64>,
    /// The thread's counters at the last boundary.
    base: Counts,
}

impl Intervals {
    pub(super) fn new(tx: Sender<Piece>, cfg: &BenchConfig, every: Duration) -> Intervals {
        Intervals {
            tx,
            every,
            count: count(cfg.duration, every),
            current: 0,
            measure_from: None,
            next_end: None,
            started: false,
            hist: super::latency_histogram(),
            base: Counts::default(),
        }
    }
}

impl Tally {
    /// Fixes the intervals' boundaries once the window is known.
    pub(crate) fn begin_intervals(&mut self, window: &Window) {
        if let Some(iv) = self.intervals.as_mut() {
            iv.measure_from = Some(window.measure_from);
            iv.next_end = (iv.count > 1).then(|| window.measure_from + iv.every);
        }
    }

    /// Sends the intervals that ended by now. Called once per poll.
    pub(crate) fn tick_intervals(&mut self) {
        let Some(iv) = self.intervals.as_ref() else {
            return;
        };
        let Some(from) = iv.measure_from else { return };
        let now = Instant::now();
        if now < from {
            return;
        }
        if !iv.started {
            self.start_counting();
        }
        while self
            .intervals
            .as_ref()
            .and_then(|iv| iv.next_end)
            .is_some_and(|end| now >= end)
        {
            self.send_interval();
        }
    }

    /// Sends what is left: the current interval (with the drain's failures), and the
    /// ones after it empty, so the main thread hears of every interval from every
    /// thread, even one that ended early.
    pub(crate) fn finish_intervals(&mut self) {
        if self.intervals.as_ref().is_some_and(|iv| !iv.started) {
            self.start_counting();
        }
        while self
            .intervals
            .as_ref()
            .is_some_and(|iv| iv.current < iv.count)
        {
            self.send_interval();
        }
    }

    /// The window has started: failures from now on count in the intervals. Messages
    /// are only counted inside the window, so all of them do.
    fn start_counting(&mut self) {
        let base = Counts {
            msgs: 0,
            conns_done: 0,
            ..Counts::of(self)
        };
        if let Some(iv) = self.intervals.as_mut() {
            iv.base = base;
            iv.started = true;
        }
    }

    /// Sends the current interval's piece and starts the next.
    fn send_interval(&mut self) {
        let now = Counts::of(self);
        let Some(iv) = self.intervals.as_mut() else {
            return;
        };
        let counts = now.since(&iv.base);
        iv.base = now;
        // The run's histogram gets the interval's latencies here, once per interval,
        // rather than each latency twice.
        let _ = self.hist.add(&iv.hist);
        let hist = iv.hist.clone();
        iv.hist.reset();
        // A main thread that has gone away no longer reports: nothing to do about it.
        let _ = iv.tx.send(Piece {
            index: iv.current,
            hist,
            counts,
        });
        iv.current += 1;
        iv.next_end = match iv.measure_from {
            Some(from) if iv.current + 1 < iv.count => Some(
                from + iv
                    .every
                    .saturating_mul(u32::try_from(iv.current + 1).unwrap_or(u32::MAX)),
            ),
            _ => None,
        };
    }
}

/// The main thread's side: the threads' pieces added up, interval by interval.
pub(crate) struct Collector {
    threads: usize,
    count: u64,
    every: Duration,
    /// The next interval to report.
    next: u64,
    /// Intervals with pieces from some threads: (pieces, counts, latencies).
    pending: std::collections::BTreeMap<u64, (usize, Counts, Histogram<u64>)>,
}

impl Collector {
    pub(super) fn new(cfg: &BenchConfig, every: Duration, threads: usize) -> Collector {
        Collector {
            threads,
            count: count(cfg.duration, every),
            every,
            next: 0,
            pending: Default::default(),
        }
    }

    /// Adds a thread's piece; reports the intervals that are complete, in order.
    pub(super) fn add(
        &mut self,
        p: Piece,
        cfg: &BenchConfig,
        start_unix: f64,
        emit: &mut dyn FnMut(&IntervalReport),
    ) {
        let entry = self
            .pending
            .entry(p.index)
            .or_insert_with(|| (0, Counts::default(), super::latency_histogram()));
        entry.0 += 1;
        entry.1.add(&p.counts);
        let _ = entry.2.add(&p.hist);
        while self
            .pending
            .get(&self.next)
            .is_some_and(|e| e.0 >= self.threads)
        {
            self.report_next(cfg, start_unix, emit);
        }
    }

    /// Reports every interval not reported yet, with the pieces that came (all of
    /// them, unless a thread panicked).
    pub(super) fn finish(
        &mut self,
        cfg: &BenchConfig,
        start_unix: f64,
        emit: &mut dyn FnMut(&IntervalReport),
    ) {
        while self.next < self.count {
            self.report_next(cfg, start_unix, emit);
        }
    }

    fn report_next(
        &mut self,
        cfg: &BenchConfig,
        start_unix: f64,
        emit: &mut dyn FnMut(&IntervalReport),
    ) {
        let k = self.next;
        self.next += 1;
        let (_, c, h) = self
            .pending
            .remove(&k)
            .unwrap_or_else(|| (0, Counts::default(), super::latency_histogram()));
        // In whole nanoseconds, so that 3 × 0.3 s is 0.9 s.
        let at = |k: u64| {
            let k = u32::try_from(k).unwrap_or(u32::MAX);
            self.every.saturating_mul(k).min(cfg.duration).as_secs_f64()
        };
        let (from, to) = (at(k), at(k + 1));
        match IntervalReport::new(cfg, k + 1, from, to, start_unix, &c, &h) {
            Ok(r) => emit(&r),
            Err(e) => log::warn!("interval {}: {e}", k + 1),
        }
    }
}

/// One interval of a run (`interval`): `--interval --json` prints one per line, in
/// order, before the run's [`Report`](super::Report). Rates and percentiles are those
/// of the interval alone; the counts are those of the interval, and the intervals'
/// counts, histograms included, add up to the run's (failures before the window,
/// while connecting or warming up, are in the run's only).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IntervalReport {
    /// Always `"interval"` (the run's report says `"summary"`).
    #[serde(rename = "type")]
    pub kind: ReportType,
    /// Which interval, from 1.
    pub interval: u64,
    /// Where it starts in the measured window, seconds.
    pub from_secs: f64,
    /// Where it ends in the measured window, seconds (the last one ends with the window).
    pub to_secs: f64,
    /// Its start, seconds since the Unix epoch.
    pub start_unix: f64,
    /// Its end, seconds since the Unix epoch.
    pub end_unix: f64,
    /// Its length, seconds.
    pub secs: f64,
    /// Messages echoed completely in it.
    pub msgs: u64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Echoed payload, MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// New connections per second (reconnect mode).
    pub conns_per_sec: Option<f64>,
    /// The latencies of its messages, µs, and their histogram.
    #[serde(flatten)]
    pub latency: Latencies,
    /// Failures in it (the last interval: also those of the drain after the window),
    /// the sum of the kinds below, as in the run's report.
    pub errors: u64,
    /// Datagrams lost in it (not errors).
    pub lost: u64,
    /// Connections replaced in it (`--keep-going`).
    pub replaced: u64,
    /// Its failures by kind.
    #[serde(flatten)]
    pub failures: Failures,
}

impl IntervalReport {
    fn new(
        cfg: &BenchConfig,
        interval: u64,
        from_secs: f64,
        to_secs: f64,
        window_start_unix: f64,
        c: &Counts,
        h: &Histogram<u64>,
    ) -> std::io::Result<IntervalReport> {
        let secs = to_secs - from_secs;
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        Ok(IntervalReport {
            kind: ReportType::Interval,
            interval,
            from_secs,
            to_secs,
            start_unix: window_start_unix + from_secs,
            end_unix: window_start_unix + to_secs,
            secs,
            msgs: c.msgs,
            msgs_per_sec: per_sec(c.msgs),
            mb_per_sec: per_sec(c.msgs) * cfg.size as f64 / 1e6,
            conns_per_sec: cfg.reconnect.then(|| per_sec(c.conns_done)),
            latency: Latencies::of(h)?,
            errors: c.failures.errors(),
            lost: c.lost,
            replaced: c.replaced,
            failures: c.failures,
        })
    }

    /// An interval in which nothing happened, starting at `start_unix`, `secs` long.
    pub(super) fn empty(start_unix: f64, secs: f64) -> std::io::Result<IntervalReport> {
        Ok(IntervalReport {
            kind: ReportType::Interval,
            interval: 0,
            from_secs: 0.0,
            to_secs: secs,
            start_unix,
            end_unix: start_unix + secs,
            secs,
            msgs: 0,
            msgs_per_sec: 0.0,
            mb_per_sec: 0.0,
            conns_per_sec: None,
            latency: Latencies::of(&super::latency_histogram())?,
            errors: 0,
            lost: 0,
            replaced: 0,
            failures: Failures::default(),
        })
    }

    /// Adds `o`, an interval of another run over the same time: counts, failures and
    /// histograms added, rates added; the time spanned is the union of both.
    pub(super) fn add(&mut self, o: &IntervalReport) -> std::io::Result<()> {
        let mut h = self.latency.histogram()?;
        h.add(o.latency.histogram()?).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "interval {}: histograms of different bounds: {e:?}",
                    o.interval
                ),
            )
        })?;
        self.latency = Latencies::of(&h)?;
        self.start_unix = self.start_unix.min(o.start_unix);
        self.end_unix = self.end_unix.max(o.end_unix);
        self.secs = self.secs.max(o.secs);
        self.msgs += o.msgs;
        self.msgs_per_sec += o.msgs_per_sec;
        self.mb_per_sec += o.mb_per_sec;
        self.conns_per_sec = match (self.conns_per_sec, o.conns_per_sec) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.errors += o.errors;
        self.lost += o.lost;
        self.replaced += o.replaced;
        self.failures.add(&o.failures);
        Ok(())
    }

    /// The interval as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an interval report always serialises")
    }
}

/// One line: `[  3.0 s]     142011 msg/s  p50 620 µs  p99 1400 µs  max 2100 µs  errors 0`,
/// with the failure kinds that are not zero, and `replaced`, `lost` when not zero.
impl std::fmt::Display for IntervalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:5.1} s] {:>10.0} msg/s  p50 {} µs  p99 {} µs  max {} µs  errors {}",
            self.to_secs,
            self.msgs_per_sec,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.max_us,
            self.errors
        )?;
        write_nonzero(f, &self.failures.error_kinds())?;
        if self.replaced > 0 {
            write!(f, "  replaced {}", self.replaced)?;
        }
        if self.lost > 0 {
            write!(f, "  lost {}", self.lost)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_splits_into_whole_intervals_and_a_shorter_last_one() {
        let s = Duration::from_secs_f64;
        assert_eq!(count(s(2.0), s(0.5)), 4);
        assert_eq!(count(s(2.2), s(0.5)), 5);
        assert_eq!(count(s(0.3), s(1.0)), 1);
    }
}
