//! `sockloop bench --interval`: a report per interval of the measured window while the
//! run goes on — JSON objects on stdout before the summary with --json, lines on stderr
//! otherwise — whose counts and histograms add up exactly to the run's, and which
//! `sockloop bench merge` passes over.

pub mod util;

use std::process::Child;

use util::bench::{histogram, json_lines};
use util::child::{Proc, expect_failure, run_bin_with_stdin, spawn_bin};

fn start_bench(url: &str, args: &[&str]) -> Child {
    spawn_bin(&[&["bench", url], args].concat())
}

fn finished(child: Child) -> (String, String) {
    let out = child.wait_with_output().expect("bench runs");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 stderr");
    assert!(out.status.success(), "bench failed: {stdout} {stderr}");
    (stdout, stderr)
}

/// Both modes at once, against one server, to keep the test short.
#[test]
fn intervals_add_up_to_the_run_in_json_and_show_on_stderr_in_text() {
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = format!("tcp://{}", server.addr(0));
    // A warm-up, which is in no interval, and two threads, whose pieces are added.
    let json = start_bench(
        &url,
        &[
            "--interval",
            "0.5",
            "--secs",
            "2",
            "--warmup",
            "0.3",
            "--conns",
            "4",
            "--threads",
            "2",
            "--json",
        ],
    );
    let text = start_bench(&url, &["--interval", "0.5", "--secs", "1.2"]);

    let (stdout, _) = finished(json);
    let objects = json_lines(&stdout);
    let (summary, intervals) = objects.split_last().expect("some output");
    assert_eq!(summary["type"], "summary", "{stdout}");
    assert!(
        (3..=5).contains(&intervals.len()),
        "{} intervals: {stdout}",
        intervals.len()
    );
    let mut msgs = 0;
    let mut hist = histogram(&intervals[0]);
    hist.reset();
    for (i, v) in intervals.iter().enumerate() {
        assert_eq!(v["type"], "interval", "{v}");
        assert_eq!(v["interval"], i as u64 + 1, "{v}");
        let m = v["msgs"].as_u64().expect("msgs");
        assert!(m > 0, "an interval without messages: {v}");
        let h = histogram(v);
        assert_eq!(
            h.len(),
            m,
            "the interval's histogram holds its messages: {v}"
        );
        assert_eq!(v["errors"], 0, "{v}");
        msgs += m;
        hist.add(&h).expect("same bounds");
    }
    assert_eq!(msgs, summary["msgs"].as_u64().expect("msgs"), "{stdout}");
    assert_eq!(hist.len(), histogram(summary).len());
    assert_eq!(hist.max(), summary["max_us"].as_u64().expect("max_us"));
    let last = intervals.last().expect("intervals");
    assert_eq!(last["to_secs"].as_f64(), Some(2.0), "{last}");
    let window = summary["end_unix"].as_f64().expect("end_unix");
    assert!((last["end_unix"].as_f64().expect("end_unix") - window).abs() < 1e-6);

    // Merge reads the intervals with their summary, without a note for any, and
    // prints them again (one run merged is itself), then the summary.
    let out = run_bin_with_stdin(&["bench", "merge", "-", "--json"], stdout.as_bytes());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "merge failed: {err}");
    assert!(!err.contains("skipped"), "{err}");
    let merged = json_lines(&String::from_utf8_lossy(&out.stdout));
    let (merged_summary, merged_intervals) = merged.split_last().expect("merged output");
    assert_eq!(merged_summary["type"], "summary");
    assert_eq!(merged_summary["msgs"], summary["msgs"]);
    assert_eq!(merged_summary["runs"], 1);
    assert_eq!(merged_intervals.len(), intervals.len());
    for (m, i) in merged_intervals.iter().zip(intervals.iter()) {
        assert_eq!(m["type"], "interval");
        for field in ["interval", "msgs", "errors", "p99_us", "histogram"] {
            assert_eq!(m[field], i[field], "{field}: {m} vs {i}");
        }
    }

    let (stdout, stderr) = finished(text);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("msg/s"))
        .collect();
    // 0.5, 1.0 and the shorter last one ending at 1.2.
    assert_eq!(lines.len(), 3, "{stderr}");
    for l in &lines {
        assert!(l.contains("p99") && l.contains("errors 0"), "{l}");
    }
    assert!(lines[2].starts_with("[  1.2 s]"), "{stderr}");
    assert!(
        stdout.contains("messages"),
        "the text report still follows: {stdout}"
    );
    assert!(
        !stdout.contains("msg/s  p50"),
        "interval lines go to stderr: {stdout}"
    );
}

#[test]
fn an_interval_too_short_to_measure_is_refused() {
    expect_failure(
        &["bench", "tcp://127.0.0.1:9", "--interval", "0.01"],
        2,
        "--interval must be at least",
    );
}
