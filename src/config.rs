//! The loop's limits and tunables: [`Config`], and the read buffer size they must allow for.
//!
//! They live apart from the builder so that the loop, which the builder makes, can read
//! them without depending on it.

use std::time::Duration;

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
            high_water: 256 * 1024,
            low_water: 64 * 1024,
            read_budget: 16,
            accept_budget: 256,
            linger: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
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
