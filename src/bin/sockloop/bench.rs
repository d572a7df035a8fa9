//! `sockloop bench`: the load generator. Keeps messages in flight against an echo
//! server, checks every byte echoed and reports rates and latencies.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use sockloop::client::ProxyVersion;
use sockloop::client::bench::{self, BenchConfig};
use sockloop::tls::TlsClient;
use sockloop::{Endpoint, sys};

use crate::client_tls::ClientTlsArgs;
use crate::{parse_endpoint, parse_secs};

/// The arguments of `sockloop bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// The echo server: tcp://, tls://, unix:, udp:// or unixgram:.
    #[arg(value_name = "URL", value_parser = parse_endpoint)]
    url: Endpoint,

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

    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,

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

    /// Exit 0 even when errors were counted (they are still reported): for runs
    /// against a server that is expected to fail some connections.
    #[arg(long)]
    allow_errors: bool,
}

/// Runs the load, prints the report, and gives the exit code.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    if let Err(e) = sys::raise_nofile_limit() {
        eprintln!("sockloop: cannot read the descriptor limit: {e}");
    }
    let tls = match args.tls.client(&args.url) {
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
    let mut cfg = BenchConfig::new(args.url);
    cfg.proxy = proxy;
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
    if let Some(t) = args.timeout {
        cfg.timeout = t;
        cfg.stream_timeout = Some(t);
    }
    let report = match bench::run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sockloop: {e}");
            let bad_arguments = e.kind() == io::ErrorKind::InvalidInput;
            return ExitCode::from(if bad_arguments { 2 } else { 1 });
        }
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if report.errors > 0 && !args.allow_errors {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
