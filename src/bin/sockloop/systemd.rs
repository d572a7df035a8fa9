//! `sockloop serve` under systemd: the sockets it passes become listeners, and it is
//! told when the server is ready, when it stops, and how many connections it has.
//!
//! A passed socket's name (`FileDescriptorName=` in the .socket unit, `--fdname` of
//! `systemd-socket-activate`) may carry the listener options of a `--listen` URL after
//! a `?`: `echo?mode=line`, `lb?proxy=v2&mode=who`. What comes before the `?` is a
//! label for the logs. The keys are those of `--listen` with the same rules, except
//! `perm` (the .socket unit's `SocketMode=` sets a socket file's permissions), plus
//! `tls` (`?tls` or `?tls=on`): the TCP socket serves TLS with `--tls-cert`.

use std::sync::Arc;

use log::{info, warn};

use sockloop::systemd::{Notifier, listen_fds};
use sockloop::{Endpoint, StdSocket, Url};

use crate::serve::{ListenArg, listen_arg};

/// Exit code for a passed socket that cannot be served: like an address that cannot be
/// bound, the environment is at fault, not the command line.
const UNUSABLE_SOCKET: u8 = 1;
/// Exit code for bad options in a socket's name: a configuration error, like a bad
/// query on a `--listen` URL.
const BAD_OPTIONS: u8 = 2;

/// The sockets passed by socket activation, in the order passed (`LISTEN_FDS`), each
/// with the listener it becomes. They come before any `--listen` listener.
pub(crate) struct Activation {
    /// Taken one by one as the builder adopts them.
    sockets: Vec<Option<StdSocket>>,
    args: Vec<ListenArg>,
}

impl Activation {
    /// Takes the passed sockets, if any, and reads the options in their names. Must run
    /// before any thread is started (it changes the environment). On error, the exit
    /// code and the message.
    pub(crate) fn take() -> Result<Activation, (u8, String)> {
        let passed = listen_fds();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // SAFETY: `serve` calls this first thing, before it starts any thread (the
            // loops and their workers come later, and logging starts none), so nothing
            // reads or writes the environment concurrently. Removing the variables, as
            // sd_listen_fds(3) does, keeps another reader from taking the descriptors.
            unsafe { std::env::remove_var(var) };
        }
        let passed = passed.map_err(|e| (UNUSABLE_SOCKET, format!("socket activation: {e}")))?;
        let mut activation = Activation {
            sockets: Vec::with_capacity(passed.len()),
            args: Vec::with_capacity(passed.len()),
        };
        for (socket, name) in passed {
            let endpoint = socket
                .local_endpoint()
                .map_err(|e| (UNUSABLE_SOCKET, format!("socket activation: {e}")))?;
            let arg = passed_listener(endpoint, name.as_deref())
                .map_err(|e| (BAD_OPTIONS, format!("socket activation: {e}")))?;
            activation.sockets.push(Some(socket));
            activation.args.push(arg);
        }
        if !activation.args.is_empty() {
            info!(
                "{} socket(s) passed by the service manager",
                activation.args.len()
            );
        }
        Ok(activation)
    }

    /// No socket was passed.
    pub(crate) fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// The passed sockets as listener arguments, in order.
    pub(crate) fn listen_args(&self) -> impl Iterator<Item = ListenArg> + '_ {
        self.args.iter().cloned()
    }

    /// Listener `i`'s passed socket, if it is one (the first time only).
    pub(crate) fn socket(&mut self, i: usize) -> Option<StdSocket> {
        self.sockets.get_mut(i).and_then(Option::take)
    }
}

/// The listener a passed socket bound to `endpoint` becomes, with the options in its
/// name (`LABEL?key=value&...`).
fn passed_listener(endpoint: Endpoint, name: Option<&str>) -> Result<ListenArg, String> {
    let shown = format!("{endpoint} ({})", name.unwrap_or("no name"));
    let query = name.and_then(|n| n.split_once('?')).map_or("", |(_, q)| q);
    let mut url = Url::with_query(endpoint, query).map_err(|e| format!("{shown}: {e}"))?;
    let mut tls = false;
    for (k, v) in &url.query {
        match k.as_str() {
            "perm" => {
                return Err(format!(
                    "{shown}: perm= does not apply to a passed socket (SocketMode= in the \
                     .socket unit sets it)"
                ));
            }
            "tls" => {
                tls = match v.as_str() {
                    "" | "on" => true,
                    "off" => false,
                    _ => return Err(format!("{shown}: tls={v}: expected on or off")),
                }
            }
            _ => {}
        }
    }
    // `tls` is this module's key, not one of `--listen`'s.
    url.query.retain(|(k, _)| k != "tls");
    url.endpoint = match (tls, url.endpoint) {
        (true, Endpoint::Tcp(hp)) => Endpoint::Tls(hp),
        (true, other) => return Err(format!("{other}: tls applies to TCP sockets only")),
        (false, ep) => ep,
    };
    listen_arg(url, &shown)
}

/// The notifier for systemd when it listens (`NOTIFY_SOCKET`); an unusable address is
/// a warning, not a reason to refuse to serve.
pub(crate) fn notifier() -> Option<Arc<Notifier>> {
    match Notifier::from_env() {
        Ok(n) => n.map(Arc::new),
        Err(e) => {
            warn!("not notifying the service manager: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp() -> Endpoint {
        "tcp://127.0.0.1:5001".parse().expect("an endpoint")
    }

    #[test]
    fn a_name_carries_listen_options_after_a_question_mark() {
        let l = passed_listener(tcp(), Some("echo?mode=line&proxy=v2")).expect("parses");
        let shown = format!("{l:?}");
        assert!(shown.contains("Line") && shown.contains("V2"), "{shown}");
        let l = passed_listener(tcp(), Some("plain")).expect("a label alone");
        assert!(format!("{l:?}").contains("mode: None"), "{l:?}");
        assert!(passed_listener(tcp(), None).is_ok());
    }

    #[test]
    fn tls_perm_and_unknown_keys() {
        let l = passed_listener(tcp(), Some("web?tls")).expect("parses");
        assert!(format!("{l:?}").contains("Tls("), "{l:?}");
        let unix: Endpoint = "unix:/run/s.sock".parse().expect("an endpoint");
        let e = passed_listener(unix.clone(), Some("x?perm=0600")).expect_err("refused");
        assert!(e.contains("SocketMode="), "{e}");
        let e = passed_listener(unix, Some("x?tls")).expect_err("refused");
        assert!(e.contains("TCP sockets only"), "{e}");
        let e = passed_listener(tcp(), Some("x?colour=red")).expect_err("refused");
        assert!(e.contains("unknown parameter 'colour'"), "{e}");
        let e = passed_listener(tcp(), Some("x?mode=nope")).expect_err("refused");
        assert!(!e.is_empty());
    }
}
