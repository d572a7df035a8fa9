//! `sockloop send`: the one-shot client. Sends a message (or all of stdin) and prints
//! everything the server sends back.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use sockloop::client::ProxyVersion;
use sockloop::{Endpoint, client};

use crate::client_tls::ClientTlsArgs;
use crate::{parse_endpoint, parse_secs};

/// The arguments of `sockloop send`.
#[derive(Args, Debug)]
pub(crate) struct SendArgs {
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

    /// Start the connection with a PROXY protocol header, v1 (text) or v2 (binary), as
    /// a load balancer would: to try a server that expects one without a balancer. The
    /// header goes first, in the clear, also before a TLS handshake. Stream URLs only.
    #[arg(long, value_name = "VERSION")]
    proxy: Option<String>,

    /// The client the PROXY header names, IP:PORT ([IPv6]:PORT). Default: the
    /// connection's own address (for unix: URLs, 198.18.0.1:1024).
    #[arg(long, value_name = "ADDR")]
    proxy_source: Option<String>,
}

/// `--proxy` and `--proxy-source`, checked before anything is sent. They are read here
/// rather than by clap so that a mistake is one line on stderr, like every other
/// usage error found after parsing.
fn proxy_options(args: &SendArgs) -> Result<(Option<ProxyVersion>, Option<SocketAddr>), String> {
    let version = match &args.proxy {
        None if args.proxy_source.is_some() => {
            return Err("--proxy-source needs --proxy v1|v2".into());
        }
        None => return Ok((None, None)),
        Some(v) => v
            .parse::<ProxyVersion>()
            .map_err(|e| format!("--proxy: {e}"))?,
    };
    if !args.url.is_stream() {
        return Err(format!(
            "--proxy needs a stream URL (tcp://, tls://, unix:), not {}",
            args.url
        ));
    }
    let source = match &args.proxy_source {
        None => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
            format!(
                "--proxy-source: '{s}' is not IP:PORT (an IPv6 address in brackets: [::1]:PORT)"
            )
        })?),
    };
    Ok((Some(version), source))
}

/// Sends, prints the answer, and gives the exit code.
pub(crate) fn run(args: SendArgs) -> ExitCode {
    let mut opts = client::SendOptions::default();
    opts.timeout = args.timeout;
    (opts.proxy, opts.proxy_source) = match proxy_options(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sockloop: {e}");
            return ExitCode::from(2);
        }
    };
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
