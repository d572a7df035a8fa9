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
mod logging;
mod send;
mod serve;
mod systemd;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match from_environment(&e, std::env::args_os().skip(1).collect()) {
            Some(line) => {
                eprintln!("{line}");
                return ExitCode::from(2);
            }
            // Help, version and command-line mistakes as clap shows them (exit 0 or 2).
            None => e.exit(),
        },
    };
    // The log format is an option of `serve`: the logger starts once it is known.
    let log_format = match &cli.command {
        Command::Serve(args) => args.log_format,
        Command::Send(_) | Command::Bench(_) => logging::LogFormat::Text,
    };
    logging::init(log_format);
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Send(args) => send::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// The one-line usage error for a bad value that came from a `SOCKLOOP_*` variable
/// (`sockloop: invalid value 'nope' for SOCKLOOP_MODE: unknown mode ...`), or `None`
/// when clap's error is about the command line itself. clap names the option
/// (`--mode <MODE>`) whichever the source was, and over several lines; whoever set the
/// variable in a unit file or a container needs the variable's name. A value is the
/// variable's when its option is not on the command line `args`, since a flag given
/// there wins and its variable is never read.
fn from_environment(e: &clap::Error, args: Vec<OsString>) -> Option<String> {
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue) else {
        return None;
    };
    // `--mode <MODE>`: the option's name is the first word.
    let long = shown.split_whitespace().next()?;
    let cmd = Cli::command();
    let arg = cmd
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .find(|a| {
            a.get_env().is_some() && a.get_long().map(|l| format!("--{l}")).as_deref() == Some(long)
        })?;
    let on_command_line = args.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    });
    if on_command_line {
        return None;
    }
    let var = arg.get_env()?.to_string_lossy();
    let why = match (e.kind(), e.get(ContextKind::ValidValue)) {
        (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        (ErrorKind::InvalidValue, _) => "a value is required".to_string(),
        // clap's "value was not a boolean" does not say what would be.
        _ if !arg.get_action().takes_values() => {
            "expected true or false (also 1/0, yes/no, on/off)".to_string()
        }
        _ => std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "not a valid value".to_string()),
    };
    Some(format!(
        "sockloop: invalid value '{value}' for {var}: {why}"
    ))
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
