//! Pictures of a run (`--plot`): what a user would rather look at than read.
//!
//! One SVG, three panels, under a title that says what was measured (target,
//! options, when, where, the summary's figures):
//!
//! 1. **Throughput over time**: messages per second in each interval.
//! 2. **Latency over time**: p50, p90, p99, p99.9 and the maximum of each interval, on a
//!    log scale — a drained backend shows as a spike here and a dip above.
//! 3. **Latency by percentile**: the whole run's histogram as the classic HdrHistogram
//!    percentile plot, the x axis stretched towards the tail (90 %, 99 %, 99.9 % … are
//!    equally far apart), so the few slowest messages are as visible as the median.
//!
//! Intervals with errors are shaded red in both time panels and labelled with their
//! count and kind. The panels over time come from the report's intervals
//! ([`Report::intervals`]); a report without them gets the third panel only, and a
//! note. Drawn with `plotters`' SVG backend: text stays text, and nothing beyond Rust
//! is needed. An `.html` file is the same SVG inline in a page of its own.

use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{IntervalReport, Latencies, Report};

/// The picture's size, pixels.
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 1250;
/// The title's height above the panels.
const HEADER: u32 = 100;

const FONT: &str = "sans-serif";
/// Throughput, and the percentile distribution.
const BLUE: RGBColor = RGBColor(31, 119, 180);
/// A latency percentile as drawn: its name, its quantile (1: the maximum), its colour,
/// and where a report keeps it.
struct Percentile {
    name: &'static str,
    q: f64,
    color: RGBColor,
    of: fn(&Latencies) -> u64,
}

/// The percentiles drawn, from the median to the maximum: light to dark.
const PERCENTILES: [Percentile; 5] = [
    Percentile {
        name: "p50",
        q: 0.50,
        color: RGBColor(44, 160, 44),
        of: |l| l.p50_us,
    },
    Percentile {
        name: "p90",
        q: 0.90,
        color: RGBColor(188, 189, 34),
        of: |l| l.p90_us,
    },
    Percentile {
        name: "p99",
        q: 0.99,
        color: RGBColor(255, 127, 14),
        of: |l| l.p99_us,
    },
    Percentile {
        name: "p99.9",
        q: 0.999,
        color: RGBColor(214, 39, 40),
        of: |l| l.p999_us,
    },
    Percentile {
        name: "max",
        q: 1.0,
        color: RGBColor(80, 30, 120),
        of: |l| l.max_us,
    },
];
/// Where errors happened.
const ERROR: RGBColor = RGBColor(220, 20, 20);

/// The formats `--plot` writes, by the file name's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlotFormat {
    /// `.svg`: the picture.
    Svg,
    /// `.html`, `.htm`: a page with the picture inline, for a browser.
    Html,
}

impl PlotFormat {
    /// The format for `path`, by its extension; an error naming the ones known otherwise.
    pub fn for_path(path: &Path) -> io::Result<PlotFormat> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(PlotFormat::Svg),
            Some("html" | "htm") => Ok(PlotFormat::Html),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: a plot is a .svg or .html file", path.display()),
            )),
        }
    }
}

/// Writes the plot of `report` to `path`, as SVG or HTML by its extension
/// ([`PlotFormat::for_path`]).
pub fn write_plot(report: &Report, path: &Path) -> io::Result<()> {
    let text = match PlotFormat::for_path(path)? {
        PlotFormat::Svg => plot_svg(report)?,
        PlotFormat::Html => plot_html(report)?,
    };
    std::fs::write(path, text)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The plot of `report` as an HTML page, the SVG inline.
pub fn plot_html(report: &Report) -> io::Result<String> {
    let svg = plot_svg(report)?;
    let title = escape_html(&format!("sockloop bench {}", report.target));
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n</head>\n<body style=\"margin:0\">\n{svg}\n</body>\n</html>\n"
    ))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The plot of `report` as an SVG document.
pub fn plot_svg(report: &Report) -> io::Result<String> {
    let hist = report.latency.histogram()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, report, &hist).map_err(|e| io::Error::other(format!("cannot plot: {e}")))?;
        root.present()
            .map_err(|e| io::Error::other(format!("cannot plot: {e}")))?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

fn draw(root: &Area<'_>, r: &Report, hist: &Histogram<u64>) -> Drawn {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    draw_header(&header, r)?;
    let panels = body.split_evenly((3, 1));
    if r.intervals.is_empty() {
        for p in &panels[..2] {
            p.draw(&Text::new(
                "no interval reports: run with --interval (or --plot) to see the run over time",
                (60, 40),
                (FONT, 16).into_font().color(&BLACK.mix(0.6)),
            ))?;
        }
    } else {
        draw_throughput(&panels[0], r)?;
        draw_latency_over_time(&panels[1], r)?;
    }
    draw_distribution(&panels[2], r, hist)?;
    Ok(())
}

/// What was measured, when and where, and the answer in one line.
fn draw_header(area: &Area<'_>, r: &Report) -> Drawn {
    let o = &r.options;
    let what = match o.mode {
        "reconnect" => "a new connection per message".to_string(),
        "open" => format!("open loop at {:.0} msg/s", o.rate.unwrap_or(0.0)),
        _ => format!("depth {}", o.depth),
    };
    let proxy = o
        .proxy
        .map(|v| format!(", PROXY {v} headers"))
        .unwrap_or_default();
    let who = if r.runs > 1 {
        format!("; {} runs merged, on {}", r.runs, shorten(&r.host, 60))
    } else {
        format!(" on {}", shorten(&r.host, 60))
    };
    let answer = if r.errors > 0 { ERROR } else { BLACK };
    let lines = [
        (
            format!("sockloop bench {}", shorten(&r.target, 80)),
            (FONT, 22).into_font().style(FontStyle::Bold),
            BLACK,
        ),
        (
            format!(
                "{} connections, {what}, {} B messages{proxy}, {} thread(s); {:.1} s measured from {}{who}",
                r.conns,
                r.size,
                r.threads,
                r.secs,
                utc(r.start_unix)
            ),
            (FONT, 15).into_font(),
            BLACK,
        ),
        (
            format!(
                "{} messages, {} msg/s, {:.2} MB/s; latency p50 {}, p99 {}, p99.9 {}, max {}; errors {}{}",
                thousands(r.msgs),
                thousands(r.msgs_per_sec.round() as u64),
                r.mb_per_sec,
                micros(r.latency.p50_us as f64),
                micros(r.latency.p99_us as f64),
                micros(r.latency.p999_us as f64),
                micros(r.latency.max_us as f64),
                r.errors,
                kinds(&r.failures.error_kinds())
            ),
            (FONT, 15).into_font(),
            answer,
        ),
    ];
    let mut y = 12;
    for (text, font, color) in lines {
        area.draw(&Text::new(text, (20, y), font.color(&color)))?;
        y += 28;
    }
    Ok(())
}

/// Messages per second per interval, with the intervals that had errors shaded.
fn draw_throughput(area: &Area<'_>, r: &Report) -> Drawn {
    let end = time_end(r);
    let top = r
        .intervals
        .iter()
        .map(|iv| iv.msgs_per_sec)
        .fold(0.0, f64::max)
        .max(1.0)
        // Room for the legend above the line.
        * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput per interval", (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured window")
        .y_desc("messages per second")
        .y_label_formatter(&|v| count(*v))
        .draw()?;
    shade_errors(&mut chart, r, 0.0, top)?;
    chart
        .draw_series(LineSeries::new(
            r.intervals.iter().map(|iv| (middle(iv), iv.msgs_per_sec)),
            BLUE.stroke_width(2),
        ))?
        .label("msg/s")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(
        r.intervals
            .iter()
            .map(|iv| Circle::new((middle(iv), iv.msgs_per_sec), 3, BLUE.filled())),
    )?;
    legend(&mut chart)
}

/// The percentiles of each interval over time, log scale.
fn draw_latency_over_time(area: &Area<'_>, r: &Report) -> Drawn {
    let end = time_end(r);
    let (lo, hi) = latency_bounds(r.intervals.iter().flat_map(|iv| {
        [iv.latency.p50_us, iv.latency.max_us]
            .into_iter()
            .filter(|&v| v > 0)
    }));
    // A decade more on top, for the legend.
    let hi = hi * 10.0;
    let mut chart = ChartBuilder::on(area)
        .caption("Latency per interval", (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..end, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured window")
        .y_desc("latency")
        .y_label_formatter(&|v| micros(*v))
        .draw()?;
    shade_errors(&mut chart, r, lo, hi)?;
    for Percentile {
        name, color, of, ..
    } in PERCENTILES
    {
        // An interval without messages has no latency: the line breaks there.
        let mut drawn = false;
        for run in segments(r.intervals.iter().map(|iv| {
            let v = of(&iv.latency);
            (v > 0).then(|| (middle(iv), v as f64))
        })) {
            let series = chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
            if !drawn {
                series.label(name).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
                drawn = true;
            }
        }
    }
    legend(&mut chart)
}

/// The whole run's latency by percentile: x is 1 / (1 − q) on a log scale, so each
/// "nine" gets the same width.
fn draw_distribution(area: &Area<'_>, r: &Report, hist: &Histogram<u64>) -> Drawn {
    // As far into the tail as the messages go: with n messages, the slowest is at
    // q = 1 − 1/n.
    let nines = (hist.len().max(10) as f64).log10().ceil().clamp(2.0, 7.0);
    let right = 10f64.powf(nines);
    let points: Vec<(f64, f64)> = hist
        .iter_quantiles(5)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q >= 1.0 {
                right
            } else {
                (1.0 / (1.0 - q)).min(right)
            };
            (x, v.value_iterated_to().max(1) as f64)
        })
        .collect();
    let (lo, hi) = latency_bounds(points.iter().map(|&(_, v)| v as u64));
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Latency by percentile ({} messages{})",
                thousands(r.msgs),
                if r.runs > 1 { ", all runs" } else { "" }
            ),
            (FONT, 18),
        )
        .margin(15)
        // Room for the last label, centred on the axis' end.
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d((1.0..right).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency")
        .x_label_formatter(&|v| percentile_label(*v))
        .y_label_formatter(&|v| micros(*v))
        .draw()?;
    if points.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            "no messages",
            (10.0, lo * 2.0),
            (FONT, 16).into_font(),
        )))?;
        return Ok(());
    }
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?
        .label("latency")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    // The report's own percentiles, marked and named on the curve.
    for Percentile { name, q, color, .. } in PERCENTILES {
        let v = super::report::percentile(hist, q).max(1) as f64;
        let x = if q >= 1.0 { right } else { 1.0 / (1.0 - q) };
        chart.draw_series([Circle::new((x, v), 5, color.filled())])?;
        chart.draw_series([Text::new(
            format!("{name} {}", micros(v)),
            (x, v),
            (FONT, 13).into_font().color(&BLACK).pos(text_pos(q)),
        )])?;
    }
    Ok(())
}

/// Labels left of the curve's end, right of the rest, so they stay inside.
fn text_pos(q: f64) -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    if q >= 1.0 {
        Pos::new(HPos::Right, VPos::Bottom)
    } else {
        Pos::new(HPos::Left, VPos::Bottom)
    }
}

/// Shades the intervals with errors, from `lo` to `hi`, and labels each stretch of
/// consecutive ones at its top with its errors by kind.
fn shade_errors<Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    r: &Report,
    lo: f64,
    hi: f64,
) -> Drawn
where
    Y: Ranged<ValueType = f64>,
{
    let spans = error_spans(&r.intervals);
    if spans.is_empty() {
        return Ok(());
    }
    let total: u64 = spans.iter().map(|s| s.errors).sum();
    chart
        .draw_series(
            spans
                .iter()
                .map(|s| Rectangle::new([(s.from, lo), (s.to, hi)], ERROR.mix(0.15).filled())),
        )?
        .label(format!("errors ({total})"))
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], ERROR.mix(0.3).filled()));
    chart.draw_series(spans.iter().map(|s| {
        Text::new(
            format!("{} errors{}", s.errors, kinds(&s.kinds.error_kinds())),
            (s.from, hi),
            (FONT, 12).into_font().color(&ERROR),
        )
    }))?;
    Ok(())
}

/// A stretch of consecutive intervals with errors.
#[derive(Debug, PartialEq)]
struct ErrorSpan {
    from: f64,
    to: f64,
    errors: u64,
    kinds: super::Failures,
}

fn error_spans(intervals: &[IntervalReport]) -> Vec<ErrorSpan> {
    let mut spans: Vec<ErrorSpan> = Vec::new();
    let mut previous_failed = false;
    for iv in intervals {
        let failed = iv.errors > 0;
        match spans.last_mut() {
            Some(s) if failed && previous_failed => {
                s.to = iv.to_secs;
                s.errors += iv.errors;
                s.kinds.add(&iv.failures);
            }
            _ if failed => spans.push(ErrorSpan {
                from: iv.from_secs,
                to: iv.to_secs,
                errors: iv.errors,
                kinds: iv.failures,
            }),
            _ => {}
        }
        previous_failed = failed;
    }
    spans
}

fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
) -> Drawn
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// Where the time axis ends: the window (merged: the intervals') end.
fn time_end(r: &Report) -> f64 {
    r.intervals
        .iter()
        .map(|iv| iv.to_secs)
        .fold(r.options.secs, f64::max)
        .max(0.1)
}

/// An interval is drawn at its middle.
fn middle(iv: &IntervalReport) -> f64 {
    (iv.from_secs + iv.to_secs) / 2.0
}

/// The runs of consecutive present points.
fn segments(points: impl Iterator<Item = Option<(f64, f64)>>) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![Vec::new()];
    for p in points {
        match p {
            Some(p) => runs.last_mut().expect("never empty").push(p),
            None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
            None => {}
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// A log axis for latencies `values` (µs): whole decades around them.
fn latency_bounds(values: impl Iterator<Item = u64>) -> (f64, f64) {
    let (mut lo, mut hi) = (u64::MAX, 0);
    for v in values {
        lo = lo.min(v.max(1));
        hi = hi.max(v);
    }
    if hi == 0 {
        return (1.0, 1000.0);
    }
    let down = 10f64.powf((lo as f64).log10().floor());
    let up = 10f64.powf((hi as f64 * 1.01).log10().ceil());
    (down, up.max(down * 10.0))
}

/// `x` = 1 / (1 − q) as a percentile: 1 → "0%", 10 → "90%", 1000 → "99.9%".
fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let nines = x.log10();
    if (nines - nines.round()).abs() > 1e-6 {
        // Only decades are labelled in full.
        return String::new();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let decimals = (nines.round() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

/// A latency in µs as people read it: `850 µs`, `1.4 ms`, `2 s`.
fn micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} µs", trim(us))
    }
}

fn trim(v: f64) -> String {
    if v >= 100.0 || (v - v.round()).abs() < 0.05 {
        format!("{:.0}", v)
    } else {
        format!("{v:.1}")
    }
}

/// A rate on an axis: `120k`, `1.5M`.
fn count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// `1881140` as `1,881,140`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// ` (resets 3, timeouts 1)` for the kinds that are not zero.
fn kinds(counts: &[(&str, u64)]) -> String {
    let named: Vec<String> = counts
        .iter()
        .filter(|&&(_, n)| n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!(" ({})", named.join(", "))
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

/// Seconds since the Unix epoch as `2026-12-02 03:04:05 UTC`.
fn utc(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day number.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_180_645.5), "2026-12-02 03:04:05 UTC");
    }

    #[test]
    fn the_percentile_axis_names_its_nines() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(1e5), "99.999%");
        assert_eq!(percentile_label(50.0), "");
    }

    #[test]
    fn latencies_read_as_people_write_them() {
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(1400.0), "1.4 ms");
        assert_eq!(micros(2_000_000.0), "2 s");
        assert_eq!(count(120_000.0), "120k");
        assert_eq!(thousands(1_881_140), "1,881,140");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn a_line_breaks_where_values_are_missing() {
        let s = segments(
            [
                Some((0.0, 1.0)),
                None,
                None,
                Some((2.0, 2.0)),
                Some((3.0, 3.0)),
            ]
            .into_iter(),
        );
        assert_eq!(s, vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]);
    }

    #[test]
    fn a_plot_is_svg_or_html_by_its_name() {
        assert_eq!(
            PlotFormat::for_path(Path::new("a.svg")).unwrap(),
            PlotFormat::Svg
        );
        assert_eq!(
            PlotFormat::for_path(Path::new("a.HTML")).unwrap(),
            PlotFormat::Html
        );
        let e = PlotFormat::for_path(Path::new("a.png")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
