//! `sockloop`: the command-line shell over the library.
//!
//! Exit codes: 0 on success; 1 when the server cannot start (an address cannot be
//! bound) or fails, when `send` cannot connect or gets no reply, and when `bench`
//! finds errors; 2 for a bad command line.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use log::{error, info};

use sockloop::bench::{self, BenchConfig};
use sockloop::services::{DEFAULT_MAX_LINE, Mode, Modes};
use sockloop::tls::{self, TlsClient};
use sockloop::{Builder, Endpoint, ListenOptions, Url, client, sys};

/// An event-loop echo / line server on raw readiness polling.
#[derive(Parser, Debug)]
#[command(name = "sockloop", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Send a message (or all of stdin) and print everything the server sends back.
    Send(SendArgs),
    /// Load an echo server and check every byte it echoes.
    Bench(BenchArgs),
}

/// How the client side speaks TLS (`send` and `bench` to a tls:// URL).
#[derive(Args, Debug)]
struct ClientTlsArgs {
    /// TLS: trust servers whose certificate this CA (PEM) signed. Default: the
    /// system's root certificates.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// TLS: the name the server's certificate must carry. Default: the URL's host.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,

    /// TLS: client certificate chain (PEM), for servers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// TLS: the client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS client for `url`: `Ok(None)` for a plain URL. A TLS option given for a
    /// plain URL, or a file that cannot be used, is an error.
    fn client(&self, url: &Endpoint) -> Result<Option<TlsClient>, String> {
        let Endpoint::Tls(hp) = url else {
            if self.ca.is_some()
                || self.server_name.is_some()
                || self.cert.is_some()
                || self.key.is_some()
            {
                return Err(format!(
                    "--ca, --server-name, --cert and --key apply to tls:// URLs only, not {url}"
                ));
            }
            return Ok(None);
        };
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        let config = tls::client_config(self.ca.as_deref(), identity).map_err(|e| e.to_string())?;
        let name = self.server_name.as_deref().unwrap_or(hp.host());
        TlsClient::new(config, name)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

#[derive(Args, Debug)]
struct SendArgs {
    /// The server: tcp://HOST:PORT, tls://HOST:PORT, unix:PATH, udp://HOST:PORT or
    /// unixgram:PATH.
    #[arg(value_name = "URL", value_parser = parse_endpoint)]
    url: Endpoint,

    /// What to send; without it, all of stdin. Sent as is: no newline is added.
    #[arg(value_name = "MESSAGE")]
    message: Option<String>,

    /// Datagrams: how long to wait for the reply.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    timeout: Duration,

    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Args, Debug)]
struct BenchArgs {
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

    /// Datagrams: a datagram unanswered this long is counted lost and replaced.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    timeout: Duration,

    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    tls: ClientTlsArgs,

    /// TLS: a full handshake on every connection. By default a new connection resumes
    /// the session of an earlier one, as most TLS clients do.
    #[arg(long)]
    no_resume: bool,
}

/// The listeners used when no `--listen` is given: loopback only, binding to all
/// interfaces is an explicit choice.
const DEFAULT_LISTEN: &[&str] = &["tcp://127.0.0.1:5001", "udp://127.0.0.1:5001"];

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on, repeatable: tcp://HOST:PORT, tls://HOST:PORT,
    /// udp://HOST:PORT (IPv6 as [::1]:PORT; port 0 picks a free port), unix:PATH,
    /// unixgram:PATH.
    /// `?mode=MODE` overrides --mode for this listener; `?perm=0660` sets a Unix
    /// socket file's permissions. Default: tcp://127.0.0.1:5001 and udp://127.0.0.1:5001.
    #[arg(long = "listen", value_name = "URL", value_parser = parse_listen_url)]
    listen: Vec<Url>,

    /// The service: echo (RFC 862), line (echo each complete line; on datagram
    /// sockets, each datagram is one line), chat (each line to every other client, as
    /// `<ID> LINE`), discard (RFC 863) or chargen (RFC 864).
    #[arg(long, value_name = "MODE", default_value = "echo", value_parser = parse_mode)]
    mode: Mode,

    /// Most concurrent stream connections; past it a new one is accepted and closed at
    /// once (line and chat mode first send `ERR server full`). With --workers, each
    /// worker takes an equal share. Default: the descriptor limit less 32.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_conns: Option<u64>,

    /// Longest line in line and chat mode, terminator included.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_line: u64,

    /// Close a connection with no traffic either way for this long; 0 = never.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    idle_timeout: Duration,

    /// A connection whose unsent output passes this is a slow consumer and is closed
    /// (a chat client that does not read what the others say).
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_outbuf: u64,

    /// On SIGINT/SIGTERM, wait at most this long for connections to drain.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    shutdown_timeout: Duration,

    /// PEM certificate chain for tls:// listeners.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Mutual TLS: require client certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Close a TLS connection whose handshake has not completed this long after accept.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    handshake_timeout: Duration,

    /// Answer datagrams from source port 0 and the classic service ports (7, 13, 19,
    /// 37), which are dropped by default so that two servers cannot be made to bounce
    /// a datagram between them forever.
    #[arg(long)]
    allow_service_ports: bool,

    /// Independent loops on N threads, each with its own SO_REUSEPORT sockets; the
    /// kernel spreads connections and datagrams over them.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
}

/// Query keys a listener URL may carry.
const LISTEN_PARAMS: &[&str] = &["mode", "perm"];

fn parse_listen_url(s: &str) -> Result<Url, String> {
    let url: Url = s.parse().map_err(|e| format!("{e}"))?;
    for (k, v) in &url.query {
        if !LISTEN_PARAMS.contains(&k.as_str()) {
            return Err(format!(
                "unknown parameter '{k}' in '{s}' (known: {})",
                LISTEN_PARAMS.join(", ")
            ));
        }
        if k == "mode" {
            v.parse::<Mode>()?;
        }
        if k == "perm" {
            if url.endpoint.path().is_none() {
                return Err(format!(
                    "'{s}': perm= applies to unix: and unixgram: sockets only"
                ));
            }
            parse_perm(v)?;
        }
    }
    Ok(url)
}

/// Octal permission bits, as `chmod` takes them: `0660` or `660`.
fn parse_perm(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("perm={v}: expected octal permission bits such as 0660"))
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a valid duration"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Send(args) => send(args),
        Command::Bench(args) => bench(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            error!("cannot read the descriptor limit: {e}");
            return ExitCode::from(1);
        }
    };
    let listen = if args.listen.is_empty() {
        DEFAULT_LISTEN
            .iter()
            .map(|u| u.parse::<Url>().expect("the default listen URLs parse"))
            .collect()
    } else {
        args.listen
    };
    // Certificates are read before anything is bound: a bad file is a usage error.
    let wants_tls = listen
        .iter()
        .any(|u| matches!(u.endpoint, Endpoint::Tls(_)));
    let tls_config = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            match tls::server_config(cert, key, args.tls_client_ca.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("sockloop: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ if wants_tls => {
            eprintln!("sockloop: tls:// listeners need --tls-cert FILE and --tls-key FILE");
            return ExitCode::from(2);
        }
        _ => None,
    };
    if tls_config.is_some() && !wants_tls {
        log::warn!("--tls-cert given but no tls:// listener: it is not used");
    }
    let mut service = Modes::new(args.mode).max_line(args.max_line as usize);
    let mut builder = Builder::new()
        .idle_timeout(args.idle_timeout)
        .max_outbuf(args.max_outbuf as usize)
        .shutdown_timeout(args.shutdown_timeout)
        .handshake_timeout(args.handshake_timeout)
        .handle_signals(true)
        .allow_service_ports(args.allow_service_ports)
        .max_conns(
            // The limit is the server's: workers share the process's descriptors.
            (args
                .max_conns
                .map(|n| n as usize)
                .unwrap_or_else(|| sys::default_max_conns(nofile))
                / args.workers as usize)
                .max(1),
        );
    if let Some(config) = tls_config {
        builder = builder.tls(config);
    }
    for (i, url) in listen.iter().enumerate() {
        if let Some(mode) = url.param("mode") {
            match mode.parse() {
                Ok(m) => service = service.set(i, m),
                Err(e) => {
                    eprintln!("sockloop: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        let mut options = ListenOptions::default();
        if let Some(perm) = url.param("perm") {
            match parse_perm(perm) {
                Ok(m) => options = options.unix_perm(m),
                Err(e) => {
                    eprintln!("sockloop: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        builder = builder.listen_with(url.endpoint.clone(), options);
    }

    let workers = args.workers as usize;
    if workers > 1 && service.uses(Mode::Chat, listen.len()) {
        eprintln!(
            "sockloop: chat relays between the clients of one loop; it cannot run with \
             --workers {workers} (clients of different workers would not hear each other)"
        );
        return ExitCode::from(2);
    }
    let server = match builder.build_workers(workers, |_| service.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(1);
        }
    };

    // The ready lines: one per --listen, in order, with the real bound address.
    let mut out = io::stdout().lock();
    for ep in server.local_addrs() {
        let _ = writeln!(out, "listening {ep}");
    }
    if let Err(e) = out.flush() {
        error!("cannot write the ready lines to stdout: {e}");
    }
    drop(out);
    let on = if workers > 1 {
        format!(" on {workers} workers")
    } else {
        String::new()
    };
    info!(
        "serving {} on {} listener(s){on}, at most {} connections{} (descriptor limit {nofile})",
        args.mode,
        listen.len(),
        server.max_conns(),
        if workers > 1 { " per worker" } else { "" },
    );

    match server.run() {
        Ok(stats) => {
            info!("stats {stats}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn send(args: SendArgs) -> ExitCode {
    let mut opts = client::SendOptions::default();
    opts.timeout = args.timeout;
    opts.tls = match args.tls.client(&args.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(2);
        }
    };
    let input = match args.message {
        Some(m) => m.into_bytes(),
        None => {
            let mut all = Vec::new();
            if let Err(e) = io::stdin().lock().read_to_end(&mut all) {
                eprintln!("sockloop: reading stdin: {e}");
                return ExitCode::from(1);
            }
            all
        }
    };
    let mut out = io::stdout().lock();
    match client::send(&args.url, &input, &mut out, &opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("sockloop: {e}");
            ExitCode::from(1)
        }
    }
}

fn bench(args: BenchArgs) -> ExitCode {
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
    let mut cfg = BenchConfig::new(args.url);
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
    cfg.timeout = args.timeout;
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
    if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
