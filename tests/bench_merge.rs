//! Many generators, one exact answer: `sockloop bench --json` carries its histogram and
//! window, `--start-in`/`--start-at` align the windows, and `sockloop bench merge`
//! combines the runs — checked against a histogram built here from every run's.

pub mod util;

use std::process::{Child, Output};

use hdrhistogram::Histogram;
use serde_json::Value;

use util::bench::{count, histogram, histogram_at, json_lines, now_unix};
use util::child::{Proc, expect_failure, run_bin_with_stdin, spawn_bin};
use util::fs::TempDir;

/// An echo server on a port of its own, and its URL.
fn server() -> (Proc, String) {
    let p = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let url = p.url(0);
    (p, url)
}

/// Starts `sockloop bench URL ARGS... --json`.
fn start_bench(url: &str, args: &[&str]) -> Child {
    spawn_bin(&[&["bench", url], args, &["--json"]].concat())
}

/// The one JSON line a finished bench printed.
fn report_of(out: Output) -> (String, Value) {
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 report");
    assert!(
        out.status.success(),
        "bench failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.trim().to_string();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (line, v)
}

/// `sockloop bench merge ARGS...` with `stdin` on its standard input.
fn merge(args: &[&str], stdin: &str) -> Output {
    run_bin_with_stdin(&[&["bench", "merge"], args].concat(), stdin.as_bytes())
}

fn merged_json(out: Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "merge failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// One short run, for the tests that only need a report.
fn one_run(url: &str) -> (String, Value) {
    let child = start_bench(url, &["--secs", "0.3"]);
    report_of(child.wait_with_output().expect("bench"))
}

#[test]
fn three_generators_started_together_merge_into_the_exact_sum() {
    let (_server, url) = server();
    let asked = now_unix() + 1.0;
    let children: Vec<_> = (0..3)
        .map(|_| start_bench(&url, &["--start-in", "1", "--secs", "1", "--conns", "2"]))
        .collect();
    let runs: Vec<(String, Value)> = children
        .into_iter()
        .map(|c| report_of(c.wait_with_output().expect("bench")))
        .collect();

    let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    // Connect and first-reply times, one sample per connection, summed the same way.
    let mut connects = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).expect("bounds");
    let mut first_replies = connects.clone();
    for (_, v) in &runs {
        let c = histogram_at(v, "connect_histogram");
        assert_eq!(c.len(), 2, "a connect time per connection: {v}");
        assert_eq!(v["connect_max_us"], c.max());
        connects.add(&c).expect("same bounds");
        first_replies
            .add(histogram_at(v, "first_reply_histogram"))
            .expect("same bounds");
        // Every field a merge needs, beside the ones SPEC requires.
        for key in [
            "conns",
            "msgs",
            "msgs_per_sec",
            "mb_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "histogram",
            "histogram_lowest_us",
            "histogram_highest_us",
            "histogram_sigfig",
            "start_unix",
            "end_unix",
            "host",
            "target",
            "options",
            "runs",
        ] {
            assert!(v.get(key).is_some(), "no {key} in {v}");
        }
        assert_eq!(v["target"].as_str(), Some(url.as_str()));
        assert!(!v["host"].as_str().unwrap_or("").is_empty(), "{v}");
        assert_eq!(v["options"]["size"], 64);
        assert_eq!(v["options"]["mode"], "closed");
        assert_eq!(v["options"]["conns"], 2);
        assert!(v["options"]["start_at"].as_f64().is_some(), "{v}");
        // --start-in waited: the window began no earlier than asked.
        let start = v["start_unix"].as_f64().expect("start_unix");
        let end = v["end_unix"].as_f64().expect("end_unix");
        assert!(start >= asked - 0.01, "started at {start}, asked {asked}");
        assert!((end - start - 1.0).abs() < 1e-6, "{start}..{end}");
        let h = histogram(v);
        assert_eq!(h.len(), v["msgs"].as_u64().expect("msgs"));
        assert_eq!(v["histogram_highest_us"], h.high());
        assert_eq!(v["p99_us"], h.value_at_quantile(0.99));
        all.add(&h).expect("same bounds");
    }

    let dir = TempDir::new();
    let mut paths = Vec::new();
    for (i, (line, _)) in runs.iter().enumerate() {
        let p = dir.join(&format!("run{i}.json"));
        std::fs::write(&p, format!("{line}\n")).expect("write run");
        paths.push(p.display().to_string());
    }
    let args: Vec<&str> = paths.iter().map(String::as_str).chain(["--json"]).collect();
    let from_files = merged_json(merge(&args, ""));

    // The same through stdin, among the lines `kubectl logs` would add.
    let piped = format!(
        "Defaulted container \"bench\" out of: bench\n{}\nnot json\n{{\"msg\":\"no histogram\"}}\n{}\n{}\n",
        runs[0].0, runs[1].0, runs[2].0
    );
    let out = merge(&["-", "--json"], &piped);
    let notes = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(notes.matches("skipped").count(), 3, "{notes}");
    let from_stdin = merged_json(out);

    let sum: u64 = runs
        .iter()
        .map(|(_, v)| v["msgs"].as_u64().expect("msgs"))
        .sum();
    for m in [&from_files, &from_stdin] {
        assert_eq!(m["msgs"].as_u64(), Some(sum), "{m}");
        assert_eq!(m["msgs"].as_u64(), Some(all.len()));
        assert_eq!(
            m["p99_us"].as_u64(),
            Some(all.value_at_quantile(0.99)),
            "{m}"
        );
        assert_eq!(
            m["p50_us"].as_u64(),
            Some(all.value_at_quantile(0.5)),
            "{m}"
        );
        assert_eq!(m["max_us"].as_u64(), Some(all.max()), "{m}");
        assert_eq!(
            m["connect_p99_us"].as_u64(),
            Some(connects.value_at_quantile(0.99)),
            "{m}"
        );
        assert_eq!(
            m["connect_p50_us"].as_u64(),
            Some(connects.value_at_quantile(0.5))
        );
        assert_eq!(m["connect_max_us"].as_u64(), Some(connects.max()));
        assert_eq!(
            m["first_reply_p99_us"].as_u64(),
            Some(first_replies.value_at_quantile(0.99)),
            "{m}"
        );
        assert_eq!(histogram_at(m, "connect_histogram").len(), 6);
        assert_eq!(m["conns"], 6);
        assert_eq!(m["runs"], 3);
        assert_eq!(histogram(m).len(), sum);
        let rate: f64 = runs
            .iter()
            .map(|(_, v)| v["msgs_per_sec"].as_f64().unwrap_or(0.0))
            .sum();
        assert!(
            (m["msgs_per_sec"].as_f64().unwrap_or(0.0) - rate).abs() < 1e-6 * rate,
            "{m}"
        );
        // The overlap of three windows started within milliseconds of each other.
        let secs = m["secs"].as_f64().expect("secs");
        assert!(secs > 0.9 && secs <= 1.0, "{m}");
    }

    // The text report, like a run's, says it is a merge.
    let text = merge(&paths.iter().map(String::as_str).collect::<Vec<_>>(), "");
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains(&format!("messages    {sum} =")), "{text}");
    assert!(text.contains("merged      3 runs"), "{text}");
}

/// Three generators reporting every 0.25 s: the merge adds their intervals up
/// interval by interval (counts and histograms), prints them before the merged
/// summary, and draws them.
#[test]
fn intervals_of_three_runs_merge_interval_by_interval_and_are_drawn() {
    let (_server, url) = server();
    let children: Vec<_> = (0..3)
        .map(|_| {
            start_bench(
                &url,
                &["--start-in", "1", "--secs", "1", "--interval", "0.25"],
            )
        })
        .collect();
    let mut input = String::new();
    let mut runs: Vec<Vec<Value>> = Vec::new();
    for c in children {
        let out = c.wait_with_output().expect("bench");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        runs.push(json_lines(&text));
        input.push_str(&text);
    }
    let dir = TempDir::new();
    let plot = dir.join("merged.svg");
    let out = merge(
        &["-", "--json", "--plot", &plot.display().to_string()],
        &input,
    );
    assert!(out.status.success(), "{out:?}");
    let merged = json_lines(&String::from_utf8_lossy(&out.stdout));
    let (summary, intervals) = merged.split_last().expect("output");
    assert_eq!(summary["runs"], 3);
    assert_eq!(intervals.len(), 4, "{intervals:?}");
    let mut total = 0;
    for (k, iv) in intervals.iter().enumerate() {
        assert_eq!(iv["interval"], k as u64 + 1);
        let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        let mut msgs = 0;
        for run in &runs {
            let theirs = &run[k];
            assert_eq!(theirs["interval"], k as u64 + 1, "{theirs}");
            msgs += theirs["msgs"].as_u64().expect("msgs");
            all.add(histogram(theirs)).expect("same bounds");
        }
        assert_eq!(iv["msgs"].as_u64(), Some(msgs), "{iv}");
        assert_eq!(
            iv["p99_us"].as_u64(),
            Some(all.value_at_quantile(0.99)),
            "{iv}"
        );
        assert_eq!(histogram(iv).len(), msgs);
        total += msgs;
    }
    assert_eq!(summary["msgs"].as_u64(), Some(total), "{summary}");

    let svg = util::svg::Svg::parse(&std::fs::read_to_string(&plot).expect("plot"));
    assert!(
        svg.texts.iter().any(|t| t.contains("3 runs merged, on ")),
        "{:?}",
        svg.texts
    );
    let caption = format!(
        "Latency by percentile ({} messages, all runs)",
        util::svg::thousands(total)
    );
    assert!(svg.has_text(&caption), "no '{caption}' in {:?}", svg.texts);
    assert_eq!(svg.lines("#1F77B4", 3)[0].len(), 4, "{:?}", svg.polylines);
}

#[test]
fn runs_that_measured_different_things_or_times_are_refused() {
    let (_server, url) = server();
    let (line, v) = one_run(&url);
    let dir = TempDir::new();
    let write = |name: &str, v: &Value| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{v}\n")).expect("write run");
        p.display().to_string()
    };
    let a = dir.join("a.json");
    std::fs::write(&a, format!("{line}\n")).expect("write run");
    let a = a.display().to_string();

    let mut bigger = v.clone();
    bigger["size"] = 128.into();
    let b = write("size.json", &bigger);
    let err = expect_failure(&["bench", "merge", &a, &b], 1, "different --size: 64");
    assert_eq!(err.lines().count(), 1, "{err}");

    let mut open = v.clone();
    open["mode"] = "open".into();
    let b = write("mode.json", &open);
    expect_failure(&["bench", "merge", &a, &b], 1, "different mode: closed");

    let mut later = v.clone();
    later["start_unix"] = (v["start_unix"].as_f64().unwrap_or(0.0) + 100.0).into();
    later["end_unix"] = (v["end_unix"].as_f64().unwrap_or(0.0) + 100.0).into();
    let b = write("later.json", &later);
    expect_failure(&["bench", "merge", &a, &b], 1, "do not overlap");

    let mut lying = v.clone();
    lying["msgs"] = (v["msgs"].as_u64().unwrap_or(0) + 1).into();
    let b = write("lying.json", &lying);
    expect_failure(&["bench", "merge", &b], 1, "the histogram holds");

    let empty = dir.join("empty.json");
    std::fs::write(&empty, "no reports here\n").expect("write");
    expect_failure(
        &["bench", "merge", &empty.display().to_string()],
        1,
        "no bench report",
    );
    expect_failure(&["bench", "merge"], 2, "FILE");

    // A single run merges into itself.
    let one = merged_json(merge(&[&a, "--json"], ""));
    for key in [
        "msgs",
        "p50_us",
        "p99_us",
        "max_us",
        "size",
        "conns",
        "start_unix",
    ] {
        assert_eq!(one[key], v[key], "{key}");
    }
}

#[test]
fn a_start_time_in_the_past_is_a_command_line_error() {
    let (_server, url) = server();
    let past = format!("{:.3}", now_unix() - 10.0);
    let err = expect_failure(&["bench", &url, "--start-at", &past], 2, "in the past");
    assert_eq!(err.lines().count(), 1, "{err}");
    expect_failure(
        &["bench", &url, "--start-at", &past, "--start-in", "1"],
        2,
        "cannot be used with",
    );
    // A start time a moment ago is within the slack: the run goes ahead.
    let just = format!("{:.3}", now_unix() - 0.2);
    let (_, v) = report_of(
        start_bench(&url, &["--start-at", &just, "--secs", "0.2"])
            .wait_with_output()
            .expect("bench"),
    );
    assert!(v["msgs"].as_u64().unwrap_or(0) > 0, "{v}");
}

/// A report from before connect and first-reply histograms were written merges too:
/// its connection latencies then merge to the largest of the runs' figures, and the
/// merged report carries no connect histogram rather than a wrong one.
#[test]
fn reports_without_connection_histograms_merge_to_the_largest_figures() {
    let (_server, url) = server();
    let (line, run) = one_run(&url);
    let mut older: Value = serde_json::from_str(&line).expect("JSON");
    let fields = older.as_object_mut().expect("an object");
    fields
        .remove("connect_histogram")
        .expect("a connect histogram");
    fields
        .remove("first_reply_histogram")
        .expect("a first-reply histogram");
    fields.insert("connect_p99_us".into(), Value::from(1_000_000u64));
    let input = format!("{line}\n{older}\n");
    let merged = merged_json(merge(&["-", "--json"], &input));
    assert_eq!(merged["connect_p99_us"], 1_000_000, "{merged}");
    assert_eq!(merged["first_reply_max_us"], run["first_reply_max_us"]);
    assert_eq!(merged["connect_histogram"], "", "{merged}");
    assert_eq!(count(&merged, "msgs"), 2 * count(&run, "msgs"), "{merged}");
}
