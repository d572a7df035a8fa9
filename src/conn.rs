//! One stream connection as the loop sees it: the socket, the bytes it still owes the
//! peer, and where it is in its life.
//!
//! # Lifecycle
//!
//! ```text
//!            accept
//!              │
//!              ▼
//!   ┌──────── Open ◄─────────────┐   reading and writing
//!   │          │   unsent > high │ unsent < low
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
//!   └─ reset, broken pipe, idle timeout, slow consumer ──► closed at once
//! ```
//!
//! The loop moves a connection between these states; the service only asks for a close
//! through its [`Context`](crate::Context).

use std::io::{self, IoSlice, Write};

use log::trace;

use crate::buffer::SendBuf;
use crate::stats::Stats;
use crate::timer::{Linked, Links};
use crate::transport::Stream;

/// Where a connection is in its life (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading and writing.
    Open,
    /// No more input is served; the output still owed is being written.
    Closing,
    /// Write side shut; input is discarded until EOF or the linger deadline.
    Lingering,
    /// A socket error ended it: to be removed as soon as the current callback returns.
    Dead,
}

/// A stream connection's loop-side state. The service's own state lives beside it, in a
/// slab with the same key, so that neither side can reach into the other.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) out: SendBuf,
    /// The accept sequence number; with the slab key it makes the token and the
    /// [`ConnId`](crate::ConnId), so a stale event never reaches the key's next owner.
    pub(crate) seq: u32,
    /// Index of the listener that accepted it.
    pub(crate) listener: u32,
    pub(crate) phase: Phase,
    /// Not reading because unsent output passed the high-water mark.
    pub(crate) paused: bool,
    /// The peer shut down its write side (a read returned 0).
    pub(crate) peer_eof: bool,
    /// An event reported the peer's FIN as queued (EPOLLRDHUP): read on to the EOF even
    /// after a short read.
    pub(crate) read_closed: bool,
    /// Queued to be served next turn (read budget used up, or resumed from a pause).
    pub(crate) pending: bool,
    /// The service asked for a [`writable`](crate::Service::writable) call.
    pub(crate) wants_writable: bool,
    pub(crate) links: Links,
}

impl Linked for Conn {
    fn links(&self) -> &Links {
        &self.links
    }
    fn links_mut(&mut self) -> &mut Links {
        &mut self.links
    }
}

impl Conn {
    pub(crate) fn new(stream: Stream, seq: u32, listener: u32) -> Self {
        Conn {
            stream,
            out: SendBuf::new(),
            seq,
            listener,
            phase: Phase::Open,
            paused: false,
            peer_eof: false,
            read_closed: false,
            pending: false,
            wants_writable: false,
            links: Links::default(),
        }
    }

    /// `sendall` without blocking: writes `parts` (one `write`, or one `writev` for
    /// several) straight from the caller's memory when nothing is queued, and queues only
    /// what the socket did not take. When output is already queued the new bytes go
    /// behind it without a syscall: the peer must receive bytes in order, and the queue
    /// is flushed when the socket reports writable.
    ///
    /// A short write is not retried: it means the send buffer is full right now, and the
    /// retry would only return `WouldBlock`. The kernel raises a writable edge once
    /// space frees up.
    pub(crate) fn send(&mut self, parts: &[&[u8]], stats: &mut Stats) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(());
        }
        if !self.out.is_empty() {
            for p in parts {
                self.out.push(p);
            }
            return Ok(());
        }
        let written = loop {
            let r = if parts.len() == 1 {
                self.stream.write(parts[0])
            } else {
                write_parts(&mut self.stream, parts)
            };
            match r {
                Ok(n) => {
                    stats.writes += 1;
                    stats.bytes_out += n as u64;
                    break n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stats.writes += 1;
                    stats.write_would_block += 1;
                    trace!("write: would block, queueing {total} bytes");
                    break 0;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if written < total {
            if written > 0 {
                stats.short_writes += 1;
                trace!(
                    "partial write: {written} of {total} bytes, queueing {}",
                    total - written
                );
            }
            let mut skip = written;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                } else {
                    self.out.push(&p[skip..]);
                    skip = 0;
                }
            }
        }
        Ok(())
    }

    /// Writes queued output, oldest first, until it is gone or the socket is full.
    /// Returns the number of bytes written.
    pub(crate) fn flush(&mut self, stats: &mut Stats) -> io::Result<usize> {
        if self.out.is_empty() {
            return Ok(0);
        }
        let before = self.out.len();
        let f = self.out.write_to(&mut self.stream)?;
        stats.writes += u64::from(f.calls);
        stats.bytes_out += f.written as u64;
        stats.short_writes += u64::from(f.short);
        if f.would_block {
            stats.write_would_block += 1;
        }
        if f.short > 0 || f.would_block {
            trace!(
                "flush: wrote {} of {before} queued bytes, {} still queued",
                f.written,
                self.out.len()
            );
        }
        Ok(f.written)
    }
}

/// One `writev` of several slices, without allocating for the common small case.
fn write_parts(w: &mut Stream, parts: &[&[u8]]) -> io::Result<usize> {
    const INLINE: usize = 8;
    if parts.len() <= INLINE {
        let mut slices = [IoSlice::new(&[]); INLINE];
        for (s, p) in slices.iter_mut().zip(parts) {
            *s = IoSlice::new(p);
        }
        w.write_vectored(&slices[..parts.len()])
    } else {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        w.write_vectored(&slices)
    }
}
