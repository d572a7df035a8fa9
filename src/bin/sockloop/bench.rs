//! `sockloop bench`: the load generator. Keeps messages in flight against an echo
//! server, checks every byte echoed and reports rates and latencies; `sockloop bench
//! merge` combines the `--json` reports of many generators into one.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};

use sockloop::client::ProxyVersion;
use sockloop::client::bench::{self, BenchConfig};
use sockloop::tls::TlsClient;
use sockloop::{Endpoint, sys};

use crate::client_tls::ClientTlsArgs;
use crate::{parse_endpoint, parse_secs};

/// `sockloop bench URL [OPTIONS]`, or `sockloop bench merge FILE...`. A URL is never
/// `merge`, so the word decides which.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Combine the --json reports of many runs into one, exactly.
    ///
    /// Counts and histograms are added, so the percentiles are those of all the
    /// messages; rates are added; the window is where the runs' windows overlap. Runs
    /// of different size, mode, depth or PROXY header, or whose windows do not
    /// overlap, are refused.
    Merge(MergeArgs),
}

/// The arguments of `sockloop bench merge`.
#[derive(Args, Debug)]
struct MergeArgs {
    /// Files of reports, one JSON object per line (`-`: standard input, e.g. `kubectl
    /// logs` piped in); other lines are skipped with a note on stderr.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,

    /// Print JSON objects instead of the text report: the merged intervals, when the
    /// runs have them, then the merged run.
    #[arg(long)]
    json: bool,

    /// Also draw the merged runs into FILE (.svg, or .html with the SVG inline):
    /// throughput and latency over time when the runs have intervals, and the latency
    /// by percentile of all their messages.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

/// The arguments of a run.
#[derive(Args, Debug)]
struct RunArgs {
    /// The echo server: tcp://, tls://, unix:, udp:// or unixgram:.
    #[arg(value_name = "URL", value_parser = parse_endpoint, required = true)]
    url: Option<Endpoint>,

    /// Connections (datagram addresses: sockets).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,

    /// Bytes per message.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    size: u64,

    /// Messages in flight per connection.
    #[arg(long, value_name = "D", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    depth: u64,

    /// Seconds to measure.
    #[arg(long, value_name = "T", default_value = "5", value_parser = parse_secs)]
    secs: Duration,

    /// Seconds to run before measuring, excluded from the figures.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    warmup: Duration,

    /// Open loop: send R messages per second in total, whatever the server does;
    /// latency counts from each message's intended send time.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,

    /// A new connection for every message (measures connections per second).
    #[arg(long)]
    reconnect: bool,

    /// Client threads, each running its own loop over its share of the connections.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    threads: u64,

    /// Datagrams: a datagram unanswered this long is counted lost (not an error) and
    /// replaced [default: 1]. Streams, only when given: a connection whose oldest
    /// message has no complete reply this long, or a connect that takes longer, is
    /// closed and counted (`timeouts`, `connect_timeouts`); without it a stream
    /// waits until 5 s after the end.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,

    /// Print one JSON object instead of the text report (with --interval: one per
    /// interval, `"type": "interval"`, then the run's, `"type": "summary"`).
    #[arg(long)]
    json: bool,

    /// Also report every SECS of the measured window while the run goes on: a line on
    /// stderr, or with --json a JSON object on stdout, each with the interval's rate,
    /// latencies (and histogram), errors by kind and replacements. At least 0.1.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    interval: Option<Duration>,

    /// Draw the run into FILE when it ends (.svg, or .html with the SVG inline):
    /// throughput and latency percentiles per interval over time, errors marked where
    /// they happened, and the latency by percentile. Uses --interval's intervals, or
    /// (without it, and not printing them) 1 s, or a 20th of a shorter run.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,

    #[command(flatten)]
    tls: ClientTlsArgs,

    /// TLS: a full handshake on every connection. By default a new connection resumes
    /// the session of an earlier one, as most TLS clients do.
    #[arg(long)]
    no_resume: bool,

    /// Start every connection with a PROXY protocol header, v1 (text) or v2 (binary),
    /// as a load balancer would, each naming a client of its own: 198.18.0.0/15 for an
    /// IPv4 server, 2001:2::/48 for IPv6 (benchmarking ranges), so the server sees many
    /// clients. Not echoed, not timed. Stream URLs only.
    #[arg(long, value_name = "VERSION")]
    proxy: Option<String>,

    /// Streams: replace a connection that fails (after a back-off of 10 ms doubling to
    /// 1 s) instead of losing it, so the load goes on while servers restart; the
    /// failure is still counted, and the report adds `replaced` and the longest gap
    /// without a reply. With --reconnect: go on after failed attempts with the same
    /// back-off.
    #[arg(long)]
    keep_going: bool,

    /// Streams: source addresses to spread the connections over, round robin (IP
    /// addresses of this host, comma-separated): each adds its own range of ephemeral
    /// ports towards the server. Default: 16 loopback addresses towards a loopback
    /// server, else the kernel's choice.
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    bind: Vec<std::net::IpAddr>,

    /// Exit 0 even when errors were counted (they are still reported): for runs
    /// against a server that is expected to fail some connections.
    #[arg(long)]
    allow_errors: bool,

    /// Connect, then wait until UNIX_TIME (seconds since the epoch, fractions allowed)
    /// to start the warm-up and the measured window, so that generators started at
    /// slightly different moments measure the same window. More than 1 s in the past
    /// is an error.
    #[arg(long, value_name = "UNIX_TIME", conflicts_with = "start_in")]
    start_at: Option<f64>,

    /// Like --start-at, SECS from now.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    start_in: Option<Duration>,
}

/// Runs the load (or merges reports), prints the report, and gives the exit code.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    match args.command {
        Some(BenchCommand::Merge(m)) => merge(m),
        None => load(args.run),
    }
}

/// `--start-at` or `--start-in` as a moment, or the one-line complaint.
fn start_time(args: &RunArgs) -> Result<Option<SystemTime>, String> {
    if let Some(at) = args.start_at {
        let d = Duration::try_from_secs_f64(at)
            .map_err(|_| format!("--start-at: '{at}' is not a time in seconds since 1970"))?;
        return Ok(Some(UNIX_EPOCH + d));
    }
    Ok(args.start_in.map(|d| SystemTime::now() + d))
}

fn load(args: RunArgs) -> ExitCode {
    let Some(url) = args.url.clone() else {
        // clap requires the URL unless `merge` is given.
        eprintln!("sockloop: bench needs a URL");
        return ExitCode::from(2);
    };
    if let Err(code) = check_plot(args.plot.as_deref()) {
        return code;
    }
    let start_at = match start_time(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sys::raise_nofile_limit() {
        eprintln!("sockloop: cannot read the descriptor limit: {e}");
    }
    let tls = match args.tls.client(&url) {
        Ok(t) if args.no_resume && t.is_none() => {
            eprintln!("sockloop: --no-resume applies to tls:// URLs only");
            return ExitCode::from(2);
        }
        Ok(t) => t,
        Err(e) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(2);
        }
    };
    // Read here rather than by clap, so that a mistake is one line on stderr.
    let proxy = match args.proxy.as_deref().map(str::parse::<ProxyVersion>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("sockloop: --proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cfg = BenchConfig::new(url);
    cfg.proxy = proxy;
    cfg.start_at = start_at;
    cfg.tls = if args.no_resume {
        tls.map(TlsClient::without_resumption)
    } else {
        tls
    };
    cfg.conns = args.conns as usize;
    cfg.size = args.size as usize;
    cfg.depth = args.depth as usize;
    cfg.duration = args.secs;
    cfg.warmup = args.warmup;
    cfg.rate = args.rate;
    cfg.reconnect = args.reconnect;
    cfg.threads = args.threads as usize;
    cfg.keep_going = args.keep_going;
    cfg.bind = args.bind;
    if let Some(t) = args.timeout {
        cfg.timeout = t;
        cfg.stream_timeout = Some(t);
    }
    cfg.interval = args.interval.or_else(|| {
        args.plot
            .is_some()
            .then(|| (args.secs / 20).clamp(bench::INTERVAL_MIN, Duration::from_secs(1)))
    });
    let (json, print_intervals) = (args.json, args.interval.is_some());
    let report = match bench::run_with_intervals(cfg, |i| match (print_intervals, json) {
        (false, _) => {}
        (true, true) => println!("{}", i.to_json()),
        (true, false) => eprintln!("{i}"),
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sockloop: {e}");
            let bad_arguments = e.kind() == io::ErrorKind::InvalidInput;
            return ExitCode::from(if bad_arguments { 2 } else { 1 });
        }
    };
    conclude(&report, args.json, args.plot.as_deref(), args.allow_errors)
}

/// Prints `report` (text, or JSON), draws it into `plot` if asked, and gives the exit
/// code: 1 when the plot cannot be written, or when errors were counted and not
/// allowed.
fn conclude(
    report: &bench::Report,
    json: bool,
    plot: Option<&Path>,
    allow_errors: bool,
) -> ExitCode {
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if let Some(path) = plot {
        if let Err(e) = bench::write_plot(report, path) {
            eprintln!("sockloop: {e}");
            return ExitCode::from(1);
        }
    }
    if report.errors > 0 && !allow_errors {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks that `--plot` names a file that can be written, before anything is run: a
/// name that is not `.svg` or `.html` is a usage error (exit 2), a file that cannot
/// be created an error (exit 1). The file is left empty until the plot is written.
fn check_plot(path: Option<&Path>) -> Result<(), ExitCode> {
    let Some(path) = path else { return Ok(()) };
    if let Err(e) = bench::PlotFormat::for_path(path) {
        eprintln!("sockloop: --plot: {e}");
        return Err(ExitCode::from(2));
    }
    if let Err(e) = File::create(path) {
        eprintln!("sockloop: --plot: {}: {e}", path.display());
        return Err(ExitCode::from(1));
    }
    Ok(())
}

/// `sockloop bench merge`: reads every file, merges, prints like a run. Exit 1 when a
/// file cannot be read, holds no report, or the runs cannot be merged (one line on
/// stderr), and — as for a run — when the merged runs counted errors.
fn merge(args: MergeArgs) -> ExitCode {
    if let Err(code) = check_plot(args.plot.as_deref()) {
        return code;
    }
    let mut runs = Vec::new();
    for path in &args.files {
        let note = |n: String| eprintln!("sockloop: {n}");
        let read = if path.as_os_str() == "-" {
            bench::read_runs(io::stdin().lock(), "-", note)
        } else {
            let name = path.display().to_string();
            File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))
                .and_then(|f| bench::read_runs(BufReader::new(f), &name, note))
        };
        match read {
            Ok(r) => runs.extend(r),
            Err(e) => {
                eprintln!("sockloop: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let report = match bench::merge(&runs) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(1);
        }
    };
    for i in &report.intervals {
        if args.json {
            println!("{}", i.to_json());
        } else {
            println!("{i}");
        }
    }
    conclude(&report, args.json, args.plot.as_deref(), false)
}
