//! `sockloop send`: the one-shot client. Sends a message (or all of stdin) and prints
//! everything the server sends back.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

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
}

/// Sends, prints the answer, and gives the exit code.
pub(crate) fn run(args: SendArgs) -> ExitCode {
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
