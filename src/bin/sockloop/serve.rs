//! `sockloop serve`: the server. Its options, the checks of its listener URLs, and
//! the start-up that prints the ready lines and runs the loops.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use log::{error, info};

use sockloop::services::{DEFAULT_MAX_LINE, Metrics, MetricsState, Mode, Modes, Template};
use sockloop::{Builder, Config, Endpoint, ListenOptions, Observer, ProxyProtocol, Url, sys, tls};

use crate::logging::LogFormat;
use crate::{Secs, systemd};

/// The listeners used when no `--listen` is given: loopback only, binding to all
/// interfaces is an explicit choice.
const DEFAULT_LISTEN: &[&str] = &["tcp://127.0.0.1:5001", "udp://127.0.0.1:5001"];

/// The options of `sockloop serve`.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on, repeatable or comma-separated: tcp://HOST:PORT, tls://HOST:PORT,
    /// udp://HOST:PORT (IPv6 as [::1]:PORT; port 0 picks a free port), unix:PATH,
    /// unixgram:PATH.
    /// `?mode=MODE` overrides --mode for this listener; `?perm=0660` sets a Unix
    /// socket file's permissions; `?proxy=v1|v2|any` (stream listeners) expects a PROXY
    /// protocol header, `?proxy=off` none. Default: tcp://127.0.0.1:5001 and
    /// udp://127.0.0.1:5001.
    // The delimiter lets SOCKLOOP_LISTEN hold several URLs; it applies to the flag too
    // (`--listen A,B`), which costs nothing: no URL takes a comma (queries use `&`).
    #[arg(long = "listen", value_name = "URL", value_parser = parse_listen,
          env = "SOCKLOOP_LISTEN", value_delimiter = ',')]
    listen: Vec<ListenArg>,

    /// The service: echo (RFC 862), line (echo each complete line; on datagram
    /// sockets, each datagram is one line), chat (each line to every other client, as
    /// `<ID> LINE`), discard (RFC 863), chargen (RFC 864) or who (one line of
    /// key=value pairs — peer, via, local, listener, host, worker, conn, tls,
    /// tls_client — then a close; a datagram is answered with it only when at least as
    /// long: pad the request).
    #[arg(long, value_name = "MODE", default_value = "echo", value_parser = parse_mode,
          env = "SOCKLOOP_MODE")]
    mode: Mode,

    /// Most concurrent stream connections; past it a new one is accepted and closed at
    /// once (line and chat mode first send `ERR server full`). With --workers, each
    /// worker takes an equal share. Default: the descriptor limit less 32.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKLOOP_MAX_CONNS")]
    max_conns: Option<u64>,

    /// Longest line in line and chat mode, terminator included.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE as u64,
          value_parser = clap::value_parser!(u64).range(1..), env = "SOCKLOOP_MAX_LINE")]
    max_line: u64,

    /// Close a connection with no traffic either way for this long; 0 = never.
    #[arg(long, value_name = "SECS",
          default_value_t = Secs(Config::default().idle_timeout.unwrap_or_default()),
          env = "SOCKLOOP_IDLE_TIMEOUT")]
    idle_timeout: Secs,

    /// A connection whose unsent output passes this is a slow consumer and is closed
    /// (a chat client that does not read what the others say).
    // No range here: Config::validate knows the minimum, and says what it is.
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().max_outbuf,
          env = "SOCKLOOP_MAX_OUTBUF")]
    max_outbuf: usize,

    /// When the unsent output of all connections together passes this, those that owe
    /// the most are closed as slow consumers until it is a tenth below. With
    /// --workers, each worker takes an equal share. Default: a quarter of the memory
    /// the process may use (its cgroup's limit, else the machine's memory).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..),
          env = "SOCKLOOP_MAX_OUTBUF_TOTAL")]
    max_outbuf_total: Option<u64>,

    /// Serve metrics and health over HTTP on this address (tcp://HOST:PORT; port 0
    /// picks one): GET /metrics (Prometheus text format), /healthz, /readyz (503 from
    /// the first SIGTERM). Printed after the ready lines as `metrics tcp://HOST:PORT`.
    /// Off by default.
    #[arg(long, value_name = "URL", env = "SOCKLOOP_METRICS", value_parser = parse_metrics)]
    metrics: Option<Endpoint>,

    /// On the first SIGTERM/SIGINT, first report not ready (on the metrics listener's
    /// /readyz, and to systemd) and keep accepting and serving this long, so that a
    /// load balancer takes the server out of rotation; then shut down gracefully.
    #[arg(long, value_name = "SECS", env = "SOCKLOOP_DRAIN_DELAY",
          default_value_t = Secs(Config::default().drain_delay))]
    drain_delay: Secs,

    /// On SIGINT/SIGTERM, wait at most this long for connections to drain.
    #[arg(long, value_name = "SECS", default_value_t = Secs(Config::default().shutdown_timeout),
          env = "SOCKLOOP_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Secs,

    /// PEM certificate chain for tls:// listeners.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "SOCKLOOP_TLS_CERT"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "SOCKLOOP_TLS_KEY"
    )]
    tls_key: Option<PathBuf>,

    /// Mutual TLS: require client certificates signed by this CA (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "SOCKLOOP_TLS_CLIENT_CA"
    )]
    tls_client_ca: Option<PathBuf>,

    /// Every stream listener (tcp://, tls://, unix:) expects a PROXY protocol header
    /// from its clients' load balancer, version v1, v2 or either (any), unless its URL
    /// says `?proxy=off`. The header names the real client; without it a connection is
    /// closed.
    #[arg(long, value_name = "VERSION", value_parser = parse_proxy, env = "SOCKLOOP_PROXY_PROTOCOL")]
    proxy_protocol: Option<ProxyProtocol>,

    /// Close a connection whose TLS handshake, or PROXY protocol header, has not
    /// completed this long after accept.
    #[arg(long, value_name = "SECS", default_value_t = Secs(Config::default().handshake_timeout),
          env = "SOCKLOOP_HANDSHAKE_TIMEOUT")]
    handshake_timeout: Secs,

    /// Answer datagrams from source port 0 and the classic service ports (7, 13, 19,
    /// 37), which are dropped by default so that two servers cannot be made to bounce
    /// a datagram between them forever. From the environment: true or false (also 1/0,
    /// yes/no, on/off).
    // Boolish: from the environment `1`, `yes`, `on` read as naturally as `true`
    // (clap's default for a flag takes only `true` and `false`).
    #[arg(long, env = "SOCKLOOP_ALLOW_SERVICE_PORTS",
          value_parser = clap::builder::BoolishValueParser::new())]
    allow_service_ports: bool,

    /// A line sent to every new stream connection before anything else, in every
    /// mode. Placeholders: {host}, {peer} (the client, after a PROXY header), {via}
    /// (the load balancer; empty without one), {local}, {conn}, {worker},
    /// {env:NAME} (read at start; empty when unset); {{ and }} for braces.
    #[arg(long, value_name = "TEMPLATE", env = "SOCKLOOP_BANNER")]
    banner: Option<String>,

    /// In line mode, put this before every line echoed (exactly its expansion,
    /// nothing added); placeholders as for --banner, expanded once per connection. A
    /// usage error when no listener runs line mode.
    #[arg(long, value_name = "TEMPLATE", env = "SOCKLOOP_PREFIX")]
    prefix: Option<String>,

    /// Log lines as text (for people) or as JSON, one object per line with the
    /// structured fields (conn, peer, listener, reason, the counters as numbers); on
    /// stderr either way, filtered by RUST_LOG.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text,
          env = "SOCKLOOP_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,

    /// Independent loops on N threads, each with its own SO_REUSEPORT sockets; the
    /// kernel spreads connections and datagrams over them.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=1024), env = "SOCKLOOP_WORKERS")]
    workers: u64,
}

/// Query keys a listener URL may carry.
const LISTEN_PARAMS: &[&str] = &["mode", "perm", "proxy"];

/// One `--listen` URL with its query read: what the server needs to know of it.
#[derive(Clone, Debug)]
pub(crate) struct ListenArg {
    endpoint: Endpoint,
    /// `?mode=`: this listener's service in place of `--mode`.
    mode: Option<Mode>,
    /// `?perm=`: the permission bits of a Unix socket file.
    perm: Option<u32>,
    /// `?proxy=`: the PROXY protocol header expected (`Some(None)`: `off`, whatever
    /// `--proxy-protocol` says).
    proxy: Option<Option<ProxyProtocol>>,
}

/// Parses a `--listen` URL and its query once, so that a bad parameter is a usage
/// error before anything is bound. A key given twice is checked both times, and the
/// first one counts.
fn parse_listen(s: &str) -> Result<ListenArg, String> {
    let url: Url = s.parse().map_err(|e| format!("{e}"))?;
    listen_arg(url, s)
}

/// A listener's query read with the rules of `--listen`; `s` names it in errors. Also
/// used for the options of sockets systemd passes (see `systemd.rs`).
pub(crate) fn listen_arg(url: Url, s: &str) -> Result<ListenArg, String> {
    let mut arg = ListenArg {
        endpoint: url.endpoint,
        mode: None,
        perm: None,
        proxy: None,
    };
    for (k, v) in &url.query {
        match k.as_str() {
            "mode" => {
                let mode = v.parse::<Mode>()?;
                arg.mode.get_or_insert(mode);
            }
            "perm" => {
                if arg.endpoint.path().is_none() {
                    return Err(format!(
                        "'{s}': perm= applies to unix: and unixgram: sockets only"
                    ));
                }
                let perm = parse_perm(v)?;
                arg.perm.get_or_insert(perm);
            }
            "proxy" => {
                if !arg.endpoint.is_stream() {
                    return Err(format!(
                        "'{s}': proxy= applies to stream listeners only (tcp://, tls://, unix:)"
                    ));
                }
                let proxy = match v.as_str() {
                    "off" => None,
                    v => Some(parse_proxy(v)?),
                };
                arg.proxy.get_or_insert(proxy);
            }
            _ => {
                return Err(format!(
                    "unknown parameter '{k}' in '{s}' (known: {})",
                    LISTEN_PARAMS.join(", ")
                ));
            }
        }
    }
    Ok(arg)
}

/// Octal permission bits, as `chmod` takes them: `0660` or `660`.
fn parse_perm(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("perm={v}: expected octal permission bits such as 0660"))
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

fn parse_metrics(s: &str) -> Result<Endpoint, String> {
    let url: Url = s.parse().map_err(|e| format!("{e}"))?;
    match url.endpoint {
        Endpoint::Tcp(_) if url.query.is_empty() => Ok(url.endpoint),
        Endpoint::Tcp(_) => Err(format!("'{s}': --metrics takes no ?query")),
        _ => Err(format!(
            "'{s}': --metrics serves HTTP on tcp://HOST:PORT only"
        )),
    }
}

fn parse_proxy(s: &str) -> Result<ProxyProtocol, String> {
    s.parse()
}

/// A `--banner` or `--prefix` template, read in `run` rather than by clap so that a
/// bad one is one line on stderr, like the other checks made before binding; its
/// environment variables are read now, once.
fn parse_template(option: &str, s: Option<&str>) -> Result<Option<Template>, String> {
    s.map(|s| Template::parse(s).map_err(|e| format!("{option}: {e}")))
        .transpose()
}

/// Serves until a signal ends it; the exit code as the module says.
pub(crate) fn run(args: ServeArgs) -> ExitCode {
    // First, before any thread starts: sockets passed by systemd are listeners too.
    let mut activation = match systemd::Activation::take() {
        Ok(a) => a,
        Err((code, e)) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(code);
        }
    };
    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            error!("cannot read the descriptor limit: {e}");
            return ExitCode::from(1);
        }
    };
    let listen: Vec<ListenArg> = if args.listen.is_empty() && activation.is_empty() {
        DEFAULT_LISTEN
            .iter()
            .map(|u| parse_listen(u).expect("the default listen URLs parse"))
            .collect()
    } else {
        // Passed sockets first, in their order, then the --listen ones.
        activation.listen_args().chain(args.listen).collect()
    };
    // Certificates are read before anything is bound: a bad file is a usage error.
    let wants_tls = listen
        .iter()
        .any(|l| matches!(l.endpoint, Endpoint::Tls(_)));
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
    let mut config = Config::default();
    config.idle_timeout = Some(args.idle_timeout.0).filter(|d| !d.is_zero());
    config.max_outbuf = args.max_outbuf;
    config.shutdown_timeout = args.shutdown_timeout.0;
    config.drain_delay = args.drain_delay.0;
    config.handshake_timeout = args.handshake_timeout.0;
    config.handle_signals = true;
    config.allow_service_ports = args.allow_service_ports;
    // The memory ceiling is the server's too: each worker gets its share. The default
    // share is never below one connection's own limit (on a very small machine); a
    // total given explicitly is checked against it below.
    if let Some(n) = args.max_outbuf_total {
        config.max_outbuf_total = Some((n as usize / args.workers as usize).max(1));
    }
    let outbuf_share = config.max_outbuf_total_per_loop(args.workers as usize);
    config.max_outbuf_total = Some(outbuf_share);
    // The limit is the server's: workers share the process's descriptors.
    config.max_conns = Some(
        (args
            .max_conns
            .map(|n| n as usize)
            .unwrap_or_else(|| sys::default_max_conns(nofile))
            / args.workers as usize)
            .max(1),
    );
    // Limits that do not fit together are a bad command line, refused before binding.
    if let Err(e) = config.validate() {
        eprintln!("sockloop: {e}");
        return ExitCode::from(2);
    }
    let mut service = Modes::new(args.mode).max_line(args.max_line as usize);
    let mut builder = Builder::new().config(config);
    if let Some(server_tls) = &tls_config {
        builder = builder.tls(server_tls.clone());
    }
    for (i, l) in listen.iter().enumerate() {
        if let Some(mode) = l.mode {
            service = service.set(i, mode);
        }
        let mut options = ListenOptions::default();
        if let Some(perm) = l.perm {
            options = options.unix_perm(perm);
        }
        let proxy = match l.proxy {
            Some(given) => given,
            None if l.endpoint.is_stream() => args.proxy_protocol,
            None => None,
        };
        if let Some(version) = proxy {
            options = options.proxy(version);
        }
        builder = match activation.socket(i) {
            Some(socket) => {
                // An adopted socket serves TLS when its options carry the configuration.
                if let (Endpoint::Tls(_), Some(c)) = (&l.endpoint, &tls_config) {
                    options = options.tls(c.clone());
                }
                builder.listen_socket_with(socket, options)
            }
            None => builder.listen_with(l.endpoint.clone(), options),
        };
    }
    let notifier = systemd::notifier();
    let mut observers: Vec<Arc<dyn Observer>> = Vec::new();
    if let Some(n) = &notifier {
        observers.push(n.clone());
    }

    let (banner, prefix) = match (
        parse_template("--banner", args.banner.as_deref()),
        parse_template("--prefix", args.prefix.as_deref()),
    ) {
        (Ok(b), Ok(p)) => (b, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(banner) = banner {
        service = service.banner(banner);
    }
    if let Some(prefix) = prefix {
        // A prefix that nothing would ever print is a mistake on the command line.
        let line_streams = listen
            .iter()
            .enumerate()
            .any(|(i, l)| l.endpoint.is_stream() && service.mode(i) == Mode::Line);
        if !line_streams {
            eprintln!(
                "sockloop: --prefix applies to line mode on stream listeners, and none runs \
                 it (--mode line, or ?mode=line on a tcp://, tls:// or unix: URL)"
            );
            return ExitCode::from(2);
        }
        service = service.prefix(prefix);
    }

    // The metrics listener comes after every --listen, so their numbering (and the
    // ready lines) stay as they were; every loop tells the shared state its counters.
    if let Some(ep) = &args.metrics {
        let state = MetricsState::new();
        service = service.metrics(listen.len(), Metrics::new(state.clone()));
        builder = builder.listen_with(ep.clone(), ListenOptions::default().short_lived());
        observers.push(state);
    }
    if !observers.is_empty() {
        builder = builder.observer(Arc::new(observers));
    }
    let workers = args.workers as usize;
    if workers > 1 && service.uses(Mode::Chat, listen.len()) {
        eprintln!(
            "sockloop: chat relays between the clients of one loop; it cannot run with \
             --workers {workers} (clients of different workers would not hear each other)"
        );
        return ExitCode::from(2);
    }
    let server = match builder.build_workers(workers, |i| service.clone().worker(i)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(1);
        }
    };

    // The ready lines: one per --listen, in order, with the real bound address; then
    // the metrics listener's.
    let mut out = io::stdout().lock();
    for (i, ep) in server.local_addrs().into_iter().enumerate() {
        if i < listen.len() {
            let _ = writeln!(out, "listening {ep}");
        } else {
            let _ = writeln!(out, "metrics {ep}");
        }
    }
    if let Err(e) = out.flush() {
        error!("cannot write the ready lines to stdout: {e}");
    }
    drop(out);
    if let Some(n) = &notifier {
        n.ready(listen.len());
    }
    let on = if workers > 1 {
        format!(" on {workers} workers")
    } else {
        String::new()
    };
    info!(
        "serving {} on {} listener(s){on}, at most {} connections and {} MiB of unsent output{} (descriptor limit {nofile})",
        args.mode,
        listen.len(),
        server.max_conns(),
        outbuf_share >> 20,
        if workers > 1 { " per worker" } else { "" },
    );

    match server.run() {
        Ok(stats) => {
            // The counters as a field too, for the JSON log format: a map of numbers.
            let counters: BTreeMap<_, _> = stats.fields().into_iter().collect();
            info!(stats:serde = counters; "stats {stats}");
            if let Some(n) = &notifier {
                n.finished(&stats);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_url_is_read_into_its_parts() {
        let l = parse_listen("unix:/tmp/s.sock?mode=line&perm=660").expect("parses");
        assert_eq!(l.endpoint, Endpoint::Unix("/tmp/s.sock".into()));
        assert_eq!(l.mode, Some(Mode::Line));
        assert_eq!(l.perm, Some(0o660));

        let l = parse_listen("tcp://127.0.0.1:0").expect("parses");
        assert_eq!((l.mode, l.perm), (None, None));
    }

    #[test]
    fn every_repeated_key_is_checked_and_the_first_counts() {
        let l = parse_listen("udp://127.0.0.1:0?mode=chargen&mode=echo").expect("parses");
        assert_eq!(l.mode, Some(Mode::Chargen));
        assert!(parse_listen("udp://127.0.0.1:0?mode=echo&mode=nope").is_err());
    }

    /// Every option of `serve` can come from the environment, under the name the README
    /// promises: an option added without its variable fails here.
    #[test]
    fn every_option_has_its_sockloop_variable() {
        use clap::CommandFactory;
        let cli = crate::Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        for arg in serve
            .get_arguments()
            .filter(|a| a.get_long() != Some("help"))
        {
            let long = arg.get_long().expect("a long option");
            let expected = format!("SOCKLOOP_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{long}"
            );
        }
    }

    #[test]
    fn perm_is_for_unix_sockets_only() {
        let e = parse_listen("tcp://127.0.0.1:0?perm=0660").expect_err("refused");
        assert!(e.contains("unix: and unixgram: sockets only"), "{e}");
        assert!(parse_listen("unixgram:/tmp/d?perm=0600").is_ok());
    }
}
