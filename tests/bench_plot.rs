//! `sockloop bench --plot`: the picture of a run is well-formed SVG (or an HTML page
//! holding it) whose lines carry the run's series — one point per interval for the
//! throughput and each latency percentile, the whole histogram by percentile — and
//! whose shading marks the intervals that had errors.

pub mod util;

use std::io::{Read, Write};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use util::bench::{count, json_lines, reset, tcp_server};
use util::child::{Proc, expect_failure, run_bin};
use util::fs::TempDir;
use util::svg::{Svg, thousands};

/// The colours plot.rs draws with: throughput and the distribution, the percentiles
/// over time, errors.
const BLUE: &str = "#1F77B4";
const PERCENTILES: [(&str, &str); 5] = [
    ("p50", "#2CA02C"),
    ("p90", "#BCBD22"),
    ("p99", "#FF7F0E"),
    ("p99.9", "#D62728"),
    ("max", "#501E78"),
];
const ERROR: &str = "#DC1414";

/// Runs `sockloop bench URL ARGS`.
fn bench(url: &str, args: &[&str]) -> Output {
    run_bin(&[&["bench", url], args].concat())
}

/// The JSON objects a `--json` run printed: its intervals, then its summary.
fn objects(out: &Output) -> (Vec<Value>, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut all = json_lines(&stdout);
    let summary = all.pop().expect("a summary");
    assert_eq!(summary["type"], "summary", "{stdout}");
    (all, summary)
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_run_is_drawn_over_time_and_by_percentile() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = format!("tcp://{}", server.addr(0));
    let dir = TempDir::new();
    let path = dir.join("run.svg");
    let out = bench(
        &url,
        &[
            "--conns",
            "4",
            "--secs",
            "1.5",
            "--interval",
            "0.5",
            "--json",
            "--plot",
            &path.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let (intervals, summary) = objects(&out);
    assert_eq!(intervals.len(), 3, "{intervals:?}");
    let svg = Svg::parse(&read(&path));

    // Labelled with what was measured, and the answer.
    assert!(
        svg.has_text(&format!("sockloop bench {url}")),
        "{:?}",
        svg.texts
    );
    let options = svg
        .texts
        .iter()
        .find(|t| t.starts_with("4 connections, depth 1, 64 B messages"))
        .unwrap_or_else(|| panic!("no options line: {:?}", svg.texts));
    assert!(options.contains(" UTC on "), "{options}");
    let msgs = count(&summary, "msgs");
    assert!(
        svg.texts
            .iter()
            .any(|t| t.starts_with(&format!("{} messages", thousands(msgs)))
                && t.ends_with("errors 0")),
        "{:?}",
        svg.texts
    );
    for t in [
        "Throughput per interval",
        "Latency per interval",
        "msg/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
    ] {
        assert!(svg.has_text(t), "no '{t}' in {:?}", svg.texts);
    }
    assert!(svg.has_text(&format!(
        "Latency by percentile ({} messages)",
        thousands(msgs)
    )));

    // Throughput: one point per interval, left to right, higher for a higher rate.
    let blue = svg.lines(BLUE, 3);
    assert_eq!(blue.len(), 2, "throughput and distribution: {blue:?}");
    let throughput = blue[0];
    assert_eq!(throughput.len(), intervals.len(), "{throughput:?}");
    assert!(throughput.windows(2).all(|w| w[0].0 < w[1].0));
    let rates: Vec<f64> = intervals
        .iter()
        .map(|i| i["msgs_per_sec"].as_f64().expect("msgs_per_sec"))
        .collect();
    for i in 0..rates.len() {
        for j in 0..rates.len() {
            // Every pair: never lower for a rate at least as high (within the pixel
            // the coordinates are rounded to)...
            if rates[i] >= rates[j] {
                assert!(
                    throughput[i].1 <= throughput[j].1 + 1.0,
                    "{rates:?} drawn as {throughput:?}"
                );
            }
            // ...and higher for a rate clearly higher.
            if rates[i] > rates[j] * 1.02 {
                assert!(
                    throughput[i].1 < throughput[j].1,
                    "{rates:?} drawn as {throughput:?}"
                );
            }
        }
    }
    // Each percentile over time: one point per interval (no interval is empty here).
    for (name, colour) in PERCENTILES {
        let lines = svg.lines(colour, 3);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert_eq!(lines[0].len(), intervals.len(), "{name}");
    }
    // p50 is drawn below p99 in every interval (a larger latency is higher up).
    let (p50, p99) = (
        svg.lines(PERCENTILES[0].1, 3)[0],
        svg.lines(PERCENTILES[2].1, 3)[0],
    );
    for (i, (a, b)) in p50.iter().zip(p99.iter()).enumerate() {
        let (v50, v99) = (
            count(&intervals[i], "p50_us"),
            count(&intervals[i], "p99_us"),
        );
        // p99 is never below p50, and is never drawn lower (within a pixel).
        assert!(b.1 <= a.1 + 1.0, "interval {i}: p50 at {a:?}, p99 at {b:?}");
        if v99 > v50 {
            assert!(
                b.1 < a.1,
                "interval {i}: p50 {v50} at {a:?}, p99 {v99} at {b:?}"
            );
        }
    }
    // The distribution: many points, rising to the right (pixels: y falls).
    let distribution = blue[1];
    assert!(distribution.len() > 10, "{distribution:?}");
    assert!(
        distribution
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 >= w[1].1)
    );
    // No errors, nothing shaded.
    assert!(
        !svg.rects.iter().any(|(fill, _)| fill == ERROR),
        "{:?}",
        svg.rects
    );
}

#[test]
fn html_holds_the_picture_and_a_plot_needs_no_interval_option() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = format!("tcp://{}", server.addr(0));
    let dir = TempDir::new();
    let path = dir.join("run.html");
    let out = bench(
        &url,
        &["--secs", "1", "--plot", &path.display().to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    // The intervals drawn are not printed: the report is as without --plot.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(" msg/s "), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&format!("bench {url}")), "{stdout}");

    let page = read(&path);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page:.200}");
    assert!(page.contains(&format!("<title>sockloop bench {url}</title>")));
    let start = page.find("<svg").expect("an <svg> in the page");
    let end = page.rfind("</svg>").expect("</svg>") + "</svg>".len();
    let svg = Svg::parse(&page[start..end]);
    // 1 s drawn in intervals of a 20th, at least 0.1 s: 10 points.
    assert_eq!(svg.lines(BLUE, 3)[0].len(), 10, "{:?}", svg.polylines);
    assert!(page[end..].trim_start().starts_with("</body>"));
}

/// Two connections are reset by the server 0.7 s after they connected; their
/// replacements (`--keep-going`) live on. The plot shades the intervals where the
/// resets happened, and says how many there were and of which kind.
#[test]
fn errors_are_marked_where_they_happened() {
    let resets = Arc::new(AtomicU64::new(0));
    let done = resets.clone();
    let url = tcp_server(move |mut s, n| {
        let born = Instant::now();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if n <= 2 && born.elapsed() > Duration::from_millis(700) {
                if reset(s) {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let dir = TempDir::new();
    let path = dir.join("resets.svg");
    let out = bench(
        &url,
        &[
            "--conns",
            "2",
            "--secs",
            "2",
            "--interval",
            "0.25",
            "--keep-going",
            "--allow-errors",
            "--json",
            "--plot",
            &path.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let (intervals, summary) = objects(&out);
    assert_eq!(count(&summary, "resets"), 2, "{summary}");
    assert_eq!(resets.load(Ordering::SeqCst), 2);
    assert_eq!(count(&summary, "errors"), 2, "{summary}");

    // The stretches of consecutive intervals with errors, from the JSON.
    let mut spans: Vec<u64> = Vec::new();
    let mut previous = false;
    for i in &intervals {
        let e = count(i, "errors");
        match (e > 0, previous) {
            (true, true) => *spans.last_mut().expect("a span") += e,
            (true, false) => spans.push(e),
            _ => {}
        }
        previous = e > 0;
    }
    assert!(!spans.is_empty(), "{intervals:?}");
    let svg = Svg::parse(&read(&path));
    let shaded = svg
        .rects
        .iter()
        .filter(|(fill, opacity)| fill == ERROR && opacity == "0.15")
        .count();
    // Each stretch in both panels over time.
    assert_eq!(shaded, 2 * spans.len(), "{:?}", svg.rects);
    for e in &spans {
        let label = format!("{e} errors (resets {e})");
        assert_eq!(
            svg.texts.iter().filter(|t| **t == label).count(),
            2,
            "no '{label}' in {:?}",
            svg.texts
        );
    }
    assert!(svg.has_text("errors (2)"), "legend: {:?}", svg.texts);
    assert!(
        svg.texts.iter().any(|t| t.ends_with("errors 2 (resets 2)")),
        "{:?}",
        svg.texts
    );
}

#[test]
fn a_plot_that_cannot_be_written_fails_before_the_run() {
    // Not .svg or .html: a usage error, before anything connects (nothing listens on
    // port 1, which would be exit 1).
    let dir = TempDir::new();
    let png = dir.join("a.png").display().to_string();
    let err = expect_failure(&["bench", "tcp://127.0.0.1:1", "--plot", &png], 2, "--plot");
    assert!(err.contains(".svg or .html"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!dir.join("a.png").exists());
    let err = expect_failure(&["bench", "merge", "-", "--plot", &png], 2, "--plot");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A directory that does not exist: said at once, exit 1, no run.
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = format!("tcp://{}", server.addr(0));
    let missing = dir.join("no/such/dir/a.svg").display().to_string();
    let started = Instant::now();
    let out = bench(&url, &["--secs", "5", "--plot", &missing]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "it ran first");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing), "{err}");
}
