//! The loop's limits and tunables: [`Config`], and the read buffer size they must allow for.
//!
//! They live apart from the builder so that the loop, which the builder makes, can read
//! them without depending on it.

use std::io;
use std::time::Duration;

use crate::lifecycle::ObserverSlot;

/// Size of the loop's read buffer, in bytes. Every read of a connection or a datagram
/// socket lands in it, so it is also the most input one read hands to a service. Large
/// enough that one read usually empties the kernel queue of a busy connection, small
/// enough to stay in cache.
pub const READ_BUFFER: usize = 64 * 1024;

/// The loop's limits and tunables. [`Config::default`] holds the binary's defaults.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Most stream connections open at once; past it a new connection is accepted and
    /// closed at once (after the service's [`reject_message`](crate::Service::reject_message)).
    /// `None`: the descriptor limit less some headroom, read when the loop is built.
    pub max_conns: Option<usize>,
    /// Close a stream connection with no traffic either way for this long. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A connection whose unsent output passes this many bytes is a slow consumer and
    /// is closed.
    pub max_outbuf: usize,
    /// When the unsent output of all connections together passes this many bytes, the
    /// connections that owe the most are closed as slow consumers until it is a tenth
    /// below. `None`: a quarter of the memory available to the process (the cgroup
    /// limit in a container, else the machine's memory), read when the loop is built,
    /// and never less than `max_outbuf`;
    /// [`Builder::build_workers`](crate::Builder::build_workers) divides it between the
    /// loops.
    pub max_outbuf_total: Option<usize>,
    /// Most bytes of spare output buffer kept for the next burst once output has been
    /// written; beyond this, memory goes back to the system.
    pub spare_output: usize,
    /// Stop reading a connection while its unsent output is at least this many bytes.
    pub high_water: usize,
    /// Resume reading once its unsent output has drained to at most this many bytes.
    pub low_water: usize,
    /// Reads per connection per turn before it yields to the others.
    pub read_budget: u32,
    /// Accepts per listener per turn.
    pub accept_budget: u32,
    /// How long a closing connection discards input waiting for the peer to close.
    pub linger: Duration,
    /// How long a TLS connection may take to complete its handshake, counted from
    /// accept; a client that connects and never sends a ClientHello is closed then.
    pub handshake_timeout: Duration,
    /// How long a graceful shutdown waits for connections to drain.
    pub shutdown_timeout: Duration,
    /// On the first SIGTERM/SIGINT, how long to stay up — accepting and serving, but
    /// reporting not ready — before the graceful shutdown begins, so that a balancer can
    /// take the server out of rotation first (see [`lifecycle`](crate::lifecycle)).
    pub drain_delay: Duration,
    /// Who is told when the loop stops being ready, begins its shutdown, and what its
    /// counters are (see [`Builder::observer`](crate::Builder::observer)).
    pub(crate) observer: ObserverSlot,
    /// Handle SIGINT/SIGTERM (graceful shutdown; a second one stops at once) and
    /// SIGUSR1 (log the counters) inside the loop. Off by default: signals belong to
    /// the program, which may want them for itself.
    pub handle_signals: bool,
    /// Bind with `SO_REUSEPORT`, so other loops can bind the same addresses.
    pub reuse_port: bool,
    /// Answer datagrams from source port 0 and the classic service ports (7, 13, 19,
    /// 37). Off by default: see the datagram safety rules.
    pub allow_service_ports: bool,
    /// Receive and answer UDP datagrams in batches (`recvmmsg`/`sendmmsg`, Linux).
    /// Off, every datagram costs a `recv_from` and a `send_to`.
    pub datagram_batch: bool,
    /// Datagrams received per datagram socket per turn before it yields to the others.
    pub datagram_budget: u32,
    /// Most replies waiting for a full datagram socket; past it replies are dropped.
    pub reply_queue_max: usize,
    /// Most bytes of replies waiting for a full datagram socket.
    pub reply_queue_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns: None,
            idle_timeout: None,
            max_outbuf: 4 * 1024 * 1024,
            max_outbuf_total: None,
            spare_output: 4 * 1024 * 1024,
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            read_budget: 16,
            accept_budget: 256,
            linger: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
            observer: ObserverSlot::default(),
            handle_signals: false,
            reuse_port: false,
            allow_service_ports: false,
            datagram_batch: cfg!(any(target_os = "linux", target_os = "android")),
            datagram_budget: 128,
            reply_queue_max: 1024,
            reply_queue_bytes: 1024 * 1024,
        }
    }
}

impl Config {
    /// The output ceiling of each of `loops` loops: [`max_outbuf_total`](Self::max_outbuf_total)
    /// when it is set (it is already a loop's), else the loop's share of the default —
    /// a quarter of the memory available to the process — but never less than
    /// `max_outbuf`: on a machine too small for the quarter rule, a smaller share would
    /// close a single connection before its own limit.
    pub fn max_outbuf_total_per_loop(&self, loops: usize) -> usize {
        self.max_outbuf_total.unwrap_or_else(|| {
            (crate::sys::default_max_outbuf_total() / loops.max(1)).max(self.max_outbuf)
        })
    }

    /// Checks that the limits fit together; the builder calls it before binding anything.
    ///
    /// Refused, with an [`InvalidInput`](io::ErrorKind::InvalidInput) error of one line:
    /// - `max_outbuf` below `high_water` + [`READ_BUFFER`]. Reading pauses only once the
    ///   unsent output has reached `high_water`, and the read just before that check can
    ///   add a whole read buffer of output (echo sends back all it read). A lower limit
    ///   closes an ordinary slow reader as a slow consumer before backpressure can pause
    ///   it.
    /// - `high_water` of 0, which pauses every connection before its first read, and
    ///   `low_water` above `high_water`, which resumes a paused connection before its
    ///   queue has drained at all.
    /// - a `read_budget`, `accept_budget` or `datagram_budget` of 0, which would stop
    ///   that reading or accepting for good.
    /// - a `reply_queue_max` of 0, which would drop every reply that a datagram socket
    ///   cannot take at once.
    pub fn validate(&self) -> io::Result<()> {
        let invalid = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.high_water == 0 {
            return invalid("high_water must be at least 1 byte".to_string());
        }
        if self.low_water > self.high_water {
            return invalid(format!(
                "low_water ({} bytes) must not be above high_water ({} bytes)",
                self.low_water, self.high_water
            ));
        }
        let min = self.high_water.saturating_add(READ_BUFFER);
        if self.max_outbuf < min {
            return invalid(format!(
                "max_outbuf of {} bytes is below the minimum of {min} bytes: one read can \
                 queue a whole read buffer ({READ_BUFFER} bytes) of output before reading \
                 pauses at high_water ({} bytes), so a lower limit would close an ordinary \
                 slow reader as a slow consumer",
                self.max_outbuf, self.high_water
            ));
        }
        for (name, budget) in [
            ("read_budget", self.read_budget),
            ("accept_budget", self.accept_budget),
            ("datagram_budget", self.datagram_budget),
        ] {
            if budget == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if let Some(total) = self.max_outbuf_total {
            if total < self.max_outbuf {
                return invalid(format!(
                    "max_outbuf_total of {total} bytes is below max_outbuf ({} bytes): one \
                     connection could not reach its own limit",
                    self.max_outbuf
                ));
            }
        }
        if self.reply_queue_max == 0 {
            return invalid("reply_queue_max must be at least 1".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of `config`'s validation error; panics if it validates.
    fn refusal(config: &Config) -> String {
        let e = config.validate().expect_err("an invalid config");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "more than one line: {msg}");
        msg
    }

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().expect("the defaults validate");
    }

    #[test]
    fn max_outbuf_must_hold_high_water_and_one_read() {
        let mut c = Config::default();
        let min = c.high_water + READ_BUFFER;
        c.max_outbuf = min;
        c.validate().expect("the minimum itself is allowed");
        c.max_outbuf = min - 1;
        let msg = refusal(&c);
        assert!(msg.contains("max_outbuf"), "{msg}");
        assert!(msg.contains(&format!("{min} bytes")), "{msg}");
    }

    #[test]
    fn the_minimum_follows_high_water() {
        let c = Config {
            high_water: 1,
            low_water: 0,
            max_outbuf: 1 + READ_BUFFER,
            ..Config::default()
        };
        c.validate()
            .expect("a low high-water mark allows a low limit");
    }

    #[test]
    fn water_marks_must_be_ordered_and_nonzero() {
        let mut c = Config::default();
        c.low_water = c.high_water;
        c.validate().expect("equal marks are allowed");
        c.low_water = c.high_water + 1;
        assert!(refusal(&c).contains("low_water"));

        let c = Config {
            high_water: 0,
            low_water: 0,
            ..Config::default()
        };
        assert!(refusal(&c).contains("high_water"));
    }

    #[test]
    fn the_builder_refuses_before_binding() {
        let path =
            std::env::temp_dir().join(format!("sockloop-config-{}.sock", std::process::id()));
        let c = Config {
            max_outbuf: 1,
            ..Config::default()
        };
        for workers in [None, Some(2)] {
            let builder = crate::Builder::new()
                .listen(crate::Endpoint::Unix(path.clone()))
                .config(c.clone());
            let e = match workers {
                None => builder.build(crate::services::Echo).err(),
                Some(n) => builder.build_workers(n, |_| crate::services::Echo).err(),
            }
            .expect("an invalid config is refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(!path.exists(), "the socket was bound");
        }
    }

    #[test]
    fn budgets_and_the_reply_queue_must_be_nonzero() {
        let with = |change: fn(&mut Config)| {
            let mut c = Config::default();
            change(&mut c);
            c
        };
        for (name, c) in [
            ("read_budget", with(|c| c.read_budget = 0)),
            ("accept_budget", with(|c| c.accept_budget = 0)),
            ("datagram_budget", with(|c| c.datagram_budget = 0)),
            ("reply_queue_max", with(|c| c.reply_queue_max = 0)),
        ] {
            assert!(refusal(&c).contains(name), "{name}");
        }
    }
}
