//! Combining the reports of many generators into one (`sockloop bench merge`), exactly.
//!
//! Percentiles cannot be averaged: the p99 of two runs is not the mean of their p99s.
//! Every report carries its whole latency histogram, so merging adds the histograms
//! and reads the percentiles from the sum — the true percentiles of all the messages.
//! Counts are added. Rates are added too: each run's rate is its count over its own
//! measured window, and runs that measured the same window (`--start-at`) add up to
//! the total rate the server sustained in it. Adding rates rather than dividing the
//! summed counts by one window keeps the answer right when the windows differ a
//! little in length, and makes merging associative (merged reports merge again).
//! The merged window is where all runs' windows overlap; runs whose windows do not
//! overlap did not load the server together, and are refused.

use std::io::{self, BufRead};

use hdrhistogram::Histogram;

use serde::Deserialize;

use super::report::{
    Failures, Latencies, ReportType, WallWindow, decode_histogram, encode_histogram, percentile,
};
use super::{IntervalReport, Report};

fn refuse(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads the runs in `input` (named `source` in errors and notes): one JSON object
/// per line, as `sockloop bench --json` prints them. The interval reports of
/// `--interval` (`"type": "interval"`) that come before a run's summary become its
/// [`intervals`](Report::intervals). Lines that are not a JSON object with a
/// `histogram` — the noise of `kubectl logs`, a progress line — are skipped, each
/// with a note handed to `skipped`, and so are interval reports that no summary
/// follows (a run that did not finish). A line that looks like a report but does not
/// read as one is an error, and so is an input without any run.
pub fn read_runs(
    input: impl BufRead,
    source: &str,
    mut skipped: impl FnMut(String),
) -> io::Result<Vec<Report>> {
    let mut runs = Vec::new();
    let mut pending: Vec<IntervalReport> = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| io::Error::new(e.kind(), format!("{source}: {e}")))?;
        let n = i + 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                skipped(format!("{source}:{n}: not a JSON object, skipped"));
                continue;
            }
        };
        if value.get("histogram").is_none() {
            skipped(format!("{source}:{n}: no histogram, skipped"));
            continue;
        }
        let bad = |e: String| refuse(format!("{source}:{n}: {e}"));
        if value.get("type").and_then(|t| t.as_str()) == Some("interval") {
            let iv = IntervalReport::deserialize(value)
                .map_err(|e| bad(format!("not an interval report: {e}")))?;
            check_count(&iv.latency, iv.msgs).map_err(bad)?;
            pending.push(iv);
            continue;
        }
        // `mode` is a `&'static str`, which rules out `from_value`'s any-lifetime bound;
        // a `Value` deserializes for `'static` as well.
        let mut report =
            Report::deserialize(value).map_err(|e| bad(format!("not a bench report: {e}")))?;
        check_count(&report.latency, report.msgs).map_err(bad)?;
        // Its intervals are those inside its window (to within a millisecond of
        // rounding): the input may hold several runs' lines.
        let (start, end) = (report.start_unix - 1e-3, report.end_unix + 1e-3);
        let (mine, others) = pending
            .into_iter()
            .partition(|iv| iv.start_unix >= start && iv.end_unix <= end);
        report.intervals = mine;
        pending = others;
        runs.push(report);
    }
    if !pending.is_empty() {
        skipped(format!(
            "{source}: {} interval reports without their run's summary, skipped",
            pending.len()
        ));
    }
    if runs.is_empty() {
        return Err(refuse(format!("{source}: no bench report (--json) in it")));
    }
    Ok(runs)
}

/// A histogram that disagrees with its count would merge into a wrong answer.
fn check_count(l: &Latencies, msgs: u64) -> Result<(), String> {
    let hist = l.histogram().map_err(|e| e.to_string())?;
    if hist.len() == msgs {
        Ok(())
    } else {
        Err(format!(
            "the histogram holds {} messages but msgs is {msgs}",
            hist.len()
        ))
    }
}

/// Combines `runs` into one report, as if one generator had made them all: counts,
/// bytes and connections added, histograms added (percentiles, maximum and mean read
/// from the sum), rates added, the window where all the runs' windows overlap, the
/// longest ramp-up, the first error; and their intervals, when they have them, added
/// up by the time they cover ([`merge_intervals`]). Runs of different message size,
/// mode, depth or PROXY header measured different things and are refused, as are runs
/// whose windows do not overlap and an empty list; the error says which runs and why.
pub fn merge(runs: &[Report]) -> io::Result<Report> {
    let Some(first) = runs.first() else {
        return Err(refuse("no runs to merge".into()));
    };
    let mut hist: Histogram<u64> = first.latency.histogram()?;
    for (i, r) in runs.iter().enumerate().skip(1) {
        let differ = |what: &str, a: String, b: String| {
            refuse(format!(
                "cannot merge runs of different {what}: {a} (run 1, {}) and {b} (run {}, {})",
                first.host,
                i + 1,
                r.host
            ))
        };
        if r.size != first.size {
            return Err(differ("--size", first.size.to_string(), r.size.to_string()));
        }
        if r.mode != first.mode {
            return Err(differ("mode", first.mode.into(), r.mode.into()));
        }
        if r.depth != first.depth {
            return Err(differ(
                "--depth",
                first.depth.to_string(),
                r.depth.to_string(),
            ));
        }
        if r.proxy != first.proxy {
            let shown = |p: Option<crate::client::ProxyVersion>| {
                p.map_or("no PROXY header".to_string(), |v| format!("PROXY {v}"))
            };
            return Err(differ("--proxy", shown(first.proxy), shown(r.proxy)));
        }
        hist.add(&r.latency.histogram()?).map_err(|e| {
            refuse(format!(
                "run {} ({}): its histogram does not fit the first one's bounds: {e:?}",
                i + 1,
                r.host
            ))
        })?;
    }
    let wall = WallWindow {
        start_unix: runs.iter().map(|r| r.start_unix).fold(f64::MIN, f64::max),
        end_unix: runs.iter().map(|r| r.end_unix).fold(f64::MAX, f64::min),
    };
    if wall.end_unix <= wall.start_unix {
        return Err(refuse(format!(
            "the runs' measured windows do not overlap (latest start {:.3}, earliest end {:.3}): \
             start the generators with the same --start-at",
            wall.start_unix, wall.end_unix
        )));
    }
    let connect = Summed::of(runs, |r| &r.connect_histogram)?;
    let first_reply = Summed::of(runs, |r| &r.first_reply_histogram)?;
    let sum_u = |f: fn(&Report) -> u64| runs.iter().map(f).sum::<u64>();
    let sum_n = |f: fn(&Report) -> usize| runs.iter().map(f).sum::<usize>();
    let sum_f = |f: fn(&Report) -> f64| runs.iter().map(f).sum::<f64>();
    let mut hosts: Vec<&str> = Vec::new();
    for r in runs {
        for h in r.host.split(',') {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    // Every field is named here, so a counter added to `Report` does not compile
    // until it is decided how it merges.
    Ok(Report {
        kind: ReportType::Summary,
        url: first.url.clone(),
        mode: first.mode,
        conns: sum_n(|r| r.conns),
        connected: sum_n(|r| r.connected),
        threads: sum_n(|r| r.threads),
        size: first.size,
        depth: first.depth,
        secs: wall.end_unix - wall.start_unix,
        warmup_secs: runs.iter().map(|r| r.warmup_secs).fold(0.0, f64::max),
        rate: first.rate.map(|_| runs.iter().filter_map(|r| r.rate).sum()),
        proxy: first.proxy,
        msgs: sum_u(|r| r.msgs),
        msgs_per_sec: sum_f(|r| r.msgs_per_sec),
        mb_per_sec: sum_f(|r| r.mb_per_sec),
        conns_per_sec: first
            .conns_per_sec
            .map(|_| runs.iter().filter_map(|r| r.conns_per_sec).sum()),
        latency: Latencies::of(&hist)?,
        errors: sum_u(|r| r.errors),
        lost: sum_u(|r| r.lost),
        ramp_secs: runs.iter().map(|r| r.ramp_secs).fold(0.0, f64::max),
        first_error: runs
            .iter()
            .find_map(|r| r.first_error.as_ref().map(|e| format!("{}: {e}", r.host))),

        failures: runs.iter().fold(Failures::default(), |mut f, r| {
            f.add(&r.failures);
            f
        }),

        // Replacements add up. The gap is the longest any run saw (the runs' gaps do
        // not line up in time exactly enough to intersect them). Connect and
        // first-reply times are read from their summed histograms, like the message
        // latencies; runs from before those histograms were reported only have their
        // percentiles, and then the merged ones are the largest of the runs': an upper
        // bound, exact for the maxima.
        replaced: sum_u(|r| r.replaced),
        longest_gap_ms: runs.iter().map(|r| r.longest_gap_ms).fold(0.0, f64::max),
        connect_p50_us: connect.at(0.50, |r| r.connect_p50_us),
        connect_p99_us: connect.at(0.99, |r| r.connect_p99_us),
        connect_max_us: connect.at(1.0, |r| r.connect_max_us),
        first_reply_p50_us: first_reply.at(0.50, |r| r.first_reply_p50_us),
        first_reply_p99_us: first_reply.at(0.99, |r| r.first_reply_p99_us),
        first_reply_max_us: first_reply.at(1.0, |r| r.first_reply_max_us),
        connect_histogram: connect.encoded()?,
        first_reply_histogram: first_reply.encoded()?,

        start_unix: wall.start_unix,
        end_unix: wall.end_unix,
        host: hosts.join(","),
        target: first.target.clone(),
        options: first.options.clone(),
        runs: sum_u(|r| r.runs),
        intervals: merge_intervals(runs)?,
    })
}

/// A histogram that every run may carry (connect or first-reply times), summed over
/// the runs; or, when some run does not carry it, the runs' own percentiles.
struct Summed<'a> {
    runs: &'a [Report],
    sum: Option<Histogram<u64>>,
}

impl<'a> Summed<'a> {
    fn of(runs: &'a [Report], field: fn(&Report) -> &String) -> io::Result<Summed<'a>> {
        if runs.iter().any(|r| field(r).is_empty()) {
            return Ok(Summed { runs, sum: None });
        }
        let mut sum: Option<Histogram<u64>> = None;
        for (i, r) in runs.iter().enumerate() {
            let h = decode_histogram(field(r))
                .map_err(|e| refuse(format!("run {} ({}): {e}", i + 1, r.host)))?;
            match sum.as_mut() {
                None => sum = Some(h),
                Some(s) => s.add(&h).map_err(|e| {
                    refuse(format!(
                        "run {} ({}): a histogram of other bounds: {e:?}",
                        i + 1,
                        r.host
                    ))
                })?,
            }
        }
        Ok(Summed { runs, sum })
    }

    /// The value at quantile `q` of the sum; without one, the largest of the runs'
    /// `own` figures for it.
    fn at(&self, q: f64, own: fn(&Report) -> u64) -> u64 {
        match &self.sum {
            Some(h) => percentile(h, q),
            None => self.runs.iter().map(own).max().unwrap_or(0),
        }
    }

    /// The sum, encoded; empty without one.
    fn encoded(&self) -> io::Result<String> {
        self.sum
            .as_ref()
            .map_or(Ok(String::new()), encode_histogram)
    }
}

/// The intervals of `runs` added up by the time they cover, as if one generator had
/// reported them: slot *k* covers the *k*-th interval after the earliest run's window
/// started, and takes every run's interval that started then (to within half an
/// interval), so runs started with the same `--start-at` add up interval by
/// interval, and runs started apart land where they were. Counts, failures and
/// histograms are added, rates too (each is its run's count over its own interval).
/// Empty when a run has no intervals or the runs' intervals differ in length: there
/// is no common time grid to add them on.
pub fn merge_intervals(runs: &[Report]) -> io::Result<Vec<IntervalReport>> {
    let every = |r: &Report| r.intervals.first().map(|iv| iv.to_secs - iv.from_secs);
    let Some(step) = runs.first().and_then(every) else {
        return Ok(Vec::new());
    };
    if step <= 0.0
        || runs
            .iter()
            .any(|r| every(r).is_none_or(|s| (s - step).abs() > 1e-3))
    {
        return Ok(Vec::new());
    }
    let origin = runs.iter().map(|r| r.start_unix).fold(f64::MAX, f64::min);
    let mut slots: Vec<Option<IntervalReport>> = Vec::new();
    for iv in runs.iter().flat_map(|r| &r.intervals) {
        let k = ((iv.start_unix - origin) / step).round().max(0.0) as usize;
        if slots.len() <= k {
            slots.resize(k + 1, None);
        }
        match &mut slots[k] {
            None => slots[k] = Some(iv.clone()),
            Some(sum) => sum.add(iv)?,
        }
    }
    let mut merged = Vec::with_capacity(slots.len());
    for (k, slot) in slots.into_iter().enumerate() {
        let from = k as f64 * step;
        let mut iv = match slot {
            Some(iv) => iv,
            // A slot no run reported (runs far apart): nothing happened in it.
            None => IntervalReport::empty(origin + from, step)?,
        };
        iv.interval = k as u64 + 1;
        iv.from_secs = from;
        iv.to_secs = from + iv.secs;
        merged.push(iv);
    }
    Ok(merged)
}
