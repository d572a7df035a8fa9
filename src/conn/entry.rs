//! A server connection as the connection table keeps it: the [`Connection`], where it
//! is in its life, and why it ended.
//!
//! # Lifecycle
//!
//! ```text
//!            accept
//!              │
//!              ▼
//!           Header           (listeners that expect a PROXY protocol header) input is
//!              │             read and kept until the header is whole; nothing is served
//!              │ header taken off: the service is opened, bytes behind it go to it
//!              ▼
//!   ┌──────── Open ◄──────────────┐   reading and writing
//!   │          │ unsent ≥ high    │ unsent ≤ low
//!   │          ├──────────► (paused) ──┘   not reading: backpressure
//!   │          │
//!   │   read 0 (peer EOF), service closes, server shuts down
//!   │          ▼
//!   │       Closing          no more input is served; what is owed is written
//!   │          │ nothing owed: shutdown(Write)
//!   │          ├────────────────────────► closed   (peer had sent EOF: nothing unread)
//!   │          ▼
//!   │      Lingering         input is read and discarded until EOF or the linger time,
//!   │          │             so that close() does not turn into a reset that destroys
//!   │          ▼             the last bytes in flight
//!   │        closed
//!   │
//!   └─ reset, TLS or PROXY error, idle or handshake timeout, slow consumer ──► closed at once
//! ```
//!
//! Who moves it: the loop's steps (`Conns::next_step`) for reading, writing and
//! shutting down; the service through its [`Context`](crate::Context) (`close`); the
//! deadline lists for timeouts; the loop's shutdown. "Closed at once" means marked
//! [`Phase::Closed`] with a [`Reason`] and removed as soon as the callback running now
//! returns (see `Conns::doom`), never in the middle of one.

use std::fmt;
use std::io;

use super::connection::Connection;
use super::timer::{Linked, Links, Timer};
use crate::proxy::ProxyProtocol;
use crate::stats::Stats;
use crate::transport::Fault;

/// Where a connection is in its life (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the PROXY protocol header the listener expects: the service has not
    /// been opened yet (see `crate::proxy`).
    Header(ProxyProtocol),
    /// Reading and writing.
    Open,
    /// No more input is served; the output still owed is being written.
    Closing,
    /// Write side shut; input is discarded until EOF or the linger deadline.
    Lingering,
    /// Ended, for the [`Reason`] on the table's close list: nothing more is read or
    /// written, and the table removes it once the current callback returns.
    Closed,
}

/// Why a connection ended: logged with it, and counted.
#[derive(Debug)]
pub(crate) enum Reason {
    /// The peer closed and everything owed was delivered.
    PeerClosed,
    /// After the server shut down its side, the peer did not close within the linger
    /// time.
    LingerOver,
    /// No traffic either way for `--idle-timeout`.
    IdleTimeout,
    /// A TLS handshake did not complete within `--handshake-timeout`.
    HandshakeTimeout,
    /// A PROXY protocol header did not complete within `--handshake-timeout`.
    ProxyTimeout,
    /// A connection of a short-lived listener outlived `--handshake-timeout`.
    RequestTimeout,
    /// What came where a PROXY protocol header was expected was not one.
    ProxyError(String),
    /// The socket failed: a reset, a broken pipe.
    SocketError(io::Error),
    /// The peer broke the TLS protocol.
    TlsError(String),
    /// Its unsent output passed the per-connection limit (`--max-outbuf`).
    SlowConsumer { queued: usize, limit: usize },
    /// The output queued for all connections together passed `--max-outbuf-total`,
    /// and this connection had the most.
    Evicted {
        queued: usize,
        total: usize,
        limit: usize,
    },
    /// The server's shutdown deadline passed, or a second signal came.
    Shutdown,
}

impl From<Fault> for Reason {
    fn from(f: Fault) -> Reason {
        match f {
            Fault::Socket(e) => Reason::SocketError(e),
            Fault::Tls(what) => Reason::TlsError(what),
        }
    }
}

impl Reason {
    /// Counts the close under its reason (`closed` counts every close).
    pub(crate) fn count(&self, stats: &mut Stats) {
        stats.closed += 1;
        match self {
            Reason::SocketError(_) => stats.conn_errors += 1,
            Reason::TlsError(_) => stats.tls_errors += 1,
            Reason::IdleTimeout => stats.idle_timeouts += 1,
            Reason::HandshakeTimeout => stats.handshake_timeouts += 1,
            Reason::ProxyTimeout => stats.proxy_timeouts += 1,
            Reason::RequestTimeout => stats.request_timeouts += 1,
            Reason::ProxyError(_) => stats.proxy_errors += 1,
            Reason::SlowConsumer { .. } => stats.slow_consumers += 1,
            Reason::Evicted { .. } => {
                stats.slow_consumers += 1;
                stats.outbuf_evictions += 1;
            }
            Reason::PeerClosed | Reason::LingerOver | Reason::Shutdown => {}
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::PeerClosed => f.write_str("peer closed"),
            Reason::LingerOver => f.write_str("linger time over"),
            Reason::IdleTimeout => f.write_str("idle timeout"),
            Reason::HandshakeTimeout => f.write_str("TLS handshake timeout"),
            Reason::ProxyTimeout => f.write_str("no complete PROXY header in time"),
            Reason::RequestTimeout => f.write_str("request not finished in time"),
            Reason::ProxyError(what) => f.write_str(what),
            Reason::SocketError(e) => write!(f, "error: {e}"),
            Reason::TlsError(what) => f.write_str(what),
            Reason::SlowConsumer { queued, limit } => write!(
                f,
                "slow consumer: {queued} bytes unsent, over the {limit}-byte --max-outbuf"
            ),
            Reason::Evicted {
                queued,
                total,
                limit,
            } => write!(
                f,
                "slow consumer: {queued} bytes unsent, the most of any connection, while \
                 {total} bytes were queued for all of them, over the {limit}-byte \
                 --max-outbuf-total"
            ),
            Reason::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// What a connection wants done next, given its phase and readiness (see
/// `Conns::next_step`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Write what is owed: the socket is writable.
    Flush,
    /// Nothing is owed on a closing connection: shut down the write side.
    Shutdown,
    /// Read: the socket is readable and the connection is not paused.
    Read,
    /// Read the PROXY protocol header (or more of it): the socket is readable.
    ReadHeader,
    /// Ask the service for more output ([`Service::writable`](crate::Service::writable)).
    Produce,
    /// Nothing until the next event.
    Wait,
}

/// Small per-connection facts, packed in one byte so that an idle connection's entry
/// stays small.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Flags(u8);

impl Flags {
    /// Not reading because unsent output reached the high-water mark.
    pub(crate) const PAUSED: u8 = 1;
    /// The peer shut down its write side (a read returned end of file).
    pub(crate) const PEER_EOF: u8 = 2;
    /// The service asked for a [`writable`](crate::Service::writable) call.
    pub(crate) const WANTS_WRITABLE: u8 = 4;
    /// On the loop's list of connections to serve next turn without an event.
    pub(crate) const READY_LISTED: u8 = 8;
    /// Of a short-lived listener: the deadline from the accept holds for its whole life.
    pub(crate) const SHORT_LIVED: u8 = 64;
    /// Waiting for its PROXY header or its TLS handshake (counted by the table).
    pub(crate) const WAITING: u8 = 128;
    /// Which deadline list it is on: none, or a [`Timer`] + 1, in bits 4–5.
    const TIMER_SHIFT: u8 = 4;
    const TIMER_MASK: u8 = 0b11 << Self::TIMER_SHIFT;

    #[inline]
    pub(crate) fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    pub(crate) fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
    }

    /// The deadline list the connection is on.
    #[inline]
    pub(crate) fn timer(self) -> Option<Timer> {
        match (self.0 & Self::TIMER_MASK) >> Self::TIMER_SHIFT {
            1 => Some(Timer::Idle),
            2 => Some(Timer::Linger),
            3 => Some(Timer::Handshake),
            _ => None,
        }
    }

    pub(crate) fn set_timer(&mut self, t: Option<Timer>) {
        let bits = t.map_or(0, |t| t as u8 + 1);
        self.0 = (self.0 & !Self::TIMER_MASK) | (bits << Self::TIMER_SHIFT);
    }
}

/// One connection in the table.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) conn: Connection,
    /// The accept sequence number; with the slot it makes the token and the
    /// [`ConnId`](crate::ConnId), so a stale event never reaches the slot's next owner.
    pub(crate) seq: u32,
    /// Index of the listener that accepted it.
    pub(crate) listener: u16,
    pub(crate) phase: Phase,
    pub(crate) flags: Flags,
    pub(crate) links: Links,
}

impl Linked for Entry {
    fn links(&self) -> &Links {
        &self.links
    }
    fn links_mut(&mut self) -> &mut Links {
        &mut self.links
    }
}

impl Entry {
    pub(crate) fn new(conn: Connection, seq: u32, listener: u16, phase: Phase) -> Self {
        Entry {
            conn,
            seq,
            listener,
            phase,
            flags: Flags::default(),
            links: Links::default(),
        }
    }
}
