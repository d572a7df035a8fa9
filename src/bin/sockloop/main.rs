//! `sockloop`: the command-line shell over the library.
//!
//! Exit codes: 0 on success; 1 when the server cannot start (an address cannot be
//! bound) or fails, when `send` cannot connect or gets no reply, and when `bench`
//! finds errors; 2 for a bad command line.
//!
//! This file holds the command line's top level, the logging set-up and the value
//! parsers the subcommands share; each subcommand lives in a file of its own.

mod bench;
mod client_tls;
mod send;
mod serve;
mod systemd;

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand};

use sockloop::Endpoint;

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
    Serve(serve::ServeArgs),
    /// Send a message (or all of stdin) and print everything the server sends back.
    Send(send::SendArgs),
    /// Load an echo server and check every byte it echoes.
    Bench(bench::BenchArgs),
}

/// A client's URL: clients take no query parameters.
pub(crate) fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse().map_err(|e| format!("{e}"))
}

/// A duration in seconds; fractions are allowed (`0.5`).
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a valid duration"))
}

/// A duration option whose default is a [`Duration`] taken from the library: clap
/// shows a default through `Display`, and it must read back as the option's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Secs(pub(crate) Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl FromStr for Secs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_secs(s).map(Secs)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Send(args) => send::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secs_shown_as_a_default_read_back_as_the_same_duration() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_millis(1500),
            Duration::from_millis(100),
        ] {
            let shown = Secs(d).to_string();
            assert_eq!(shown.parse::<Secs>(), Ok(Secs(d)), "{shown}");
        }
        assert_eq!(Secs(Duration::from_secs(10)).to_string(), "10");
    }
}
