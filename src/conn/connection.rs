//! One connection's stream machinery, shared by the server and the clients: a
//! [`Transport`], the output it still owes ([`Outbox`]), and its sticky [`Readiness`].
//!
//! Everything that makes a non-blocking stream behave like a blocking one without
//! blocking lives here, once: the short-read rule on the way in, `sendall` on the way
//! out, "held-back TLS records before the queue" when flushing, and keeping the
//! readiness flags true. The server's connection table wraps it with a lifecycle
//! (`conn/entry.rs`); `sockloop send` and `sockloop bench` use it as it is.

use log::trace;

use super::outbox::{Outbox, Outboxes};
use crate::readiness::Readiness;
use crate::stats::Stats;
use crate::transport::{Fault, Io, Status, Transport};

/// A connected stream with its unsent output and what the kernel last said about it.
#[derive(Debug)]
pub(crate) struct Connection {
    transport: Transport,
    outbox: Outbox,
    readiness: Readiness,
}

/// What one read brought.
#[derive(Debug)]
pub(crate) enum Input {
    /// This many bytes, at the front of the buffer.
    Data(usize),
    /// The peer ended its output.
    Eof,
    /// Nothing now: the readable flag is cleared until the next edge.
    Nothing,
    /// The connection failed.
    Failed(Fault),
}

impl Connection {
    /// A connection over `transport`, starting from what is already known of it
    /// ([`Readiness::WRITABLE`] for an accepted socket, [`Readiness::NONE`] for one
    /// still connecting).
    pub(crate) fn new(transport: Transport, readiness: Readiness) -> Self {
        Connection {
            transport,
            outbox: Outbox::default(),
            readiness,
        }
    }

    /// The stream underneath.
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The stream underneath, to register it or to end a session.
    pub(crate) fn transport_mut(&mut self) -> &mut Transport {
        &mut self.transport
    }

    /// What is known of the socket's readiness.
    #[inline]
    pub(crate) fn readiness(&self) -> Readiness {
        self.readiness
    }

    /// Records a readiness event (see [`Readiness`]).
    #[inline]
    pub(crate) fn add_event(&mut self, ev: &mio::event::Event) {
        self.readiness.add(ev);
    }

    /// Bytes queued and not yet taken by the socket.
    pub(crate) fn queued(&self, outboxes: &Outboxes) -> usize {
        outboxes.len(self.outbox)
    }

    /// True while nothing is queued here (the transport may still hold records).
    #[inline]
    pub(crate) fn nothing_queued(&self) -> bool {
        self.outbox.is_empty()
    }

    /// True while output is owed: queued here, or held below by the transport (TLS
    /// records that did not fit the socket).
    #[inline]
    pub(crate) fn owes(&self) -> bool {
        !self.outbox.is_empty() || self.transport.holds_output()
    }

    /// True when a [`flush`](Self::flush) can make progress now: the socket is
    /// writable, and output is owed that the transport can take — its own held
    /// records, or queued bytes once any TLS handshake is over (until then the queue
    /// waits, and the read that completes the handshake makes this true).
    #[inline]
    pub(crate) fn can_flush(&self) -> bool {
        self.readiness.writable()
            && (self.transport.holds_output()
                || (!self.outbox.is_empty() && !self.transport.is_handshaking()))
    }

    /// Reads once into `buf`.
    ///
    /// A read shorter than the buffer means the kernel's queue was emptied at that
    /// instant (Linux raises a new edge for data that arrives later), so the readable
    /// flag is cleared and the read that would only say `WouldBlock` is never made —
    /// unless an event already reported the peer's FIN as queued: then the caller
    /// reads on to the end of file, which no later edge would announce.
    #[inline]
    pub(crate) fn read(&mut self, buf: &mut [u8], stats: &mut Stats) -> Input {
        let io = self.transport.read(buf);
        self.settle_read(io, stats)
    }

    /// Reads once into `buf` from the socket itself, beneath any TLS session (see
    /// [`Transport::read_raw`]), with the same rules as [`read`](Self::read).
    pub(crate) fn read_raw(&mut self, buf: &mut [u8], stats: &mut Stats) -> Input {
        let io = self.transport.read_raw(buf);
        self.settle_read(io, stats)
    }

    /// Bytes taken with [`read_raw`](Self::read_raw) that the session above must read
    /// (ciphertext behind a PROXY header): kept by the transport, and the connection
    /// counts as readable until they are read.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        self.transport.unread(bytes);
        self.readiness.set_readable();
    }

    /// Writes `bytes` on the socket itself, beneath any TLS session and ahead of
    /// anything queued (see [`Transport::write_raw`]): what a client owes before its
    /// session starts. Returns the bytes the socket took; when that is not all, the
    /// writable flag is cleared, and the caller writes the rest on the next writable
    /// event, before anything else.
    pub(crate) fn write_raw(&mut self, bytes: &[u8], stats: &mut Stats) -> Result<usize, Fault> {
        let io = self.transport.write_raw(bytes);
        count(&io, stats, true);
        let written = io.bytes;
        self.settle_write(io.status, stats)?;
        Ok(written)
    }

    /// Applies how a read ended to the counters and the readable flag.
    #[inline]
    fn settle_read(&mut self, io: Io, stats: &mut Stats) -> Input {
        count(&io, stats, false);
        match io.status {
            Status::Continue | Status::Handshaking => {}
            Status::Drained => {
                if !self.readiness.read_closed() {
                    self.readiness.clear_readable();
                }
            }
            Status::WouldBlock => {
                stats.read_would_block += 1;
                self.readiness.clear_readable();
            }
            Status::Closed => return Input::Eof,
            Status::Failed(f) => return Input::Failed(f),
        }
        if io.bytes > 0 {
            Input::Data(io.bytes)
        } else {
            Input::Nothing
        }
    }

    /// `sendall` without blocking: writes `parts` (one `write`, or one `writev` for
    /// several) straight from the caller's memory when nothing is owed, and queues only
    /// what the socket did not take. When output is already owed the new bytes go
    /// behind it without a system call — the peer must receive bytes in order — and
    /// the queue is written when the socket reports writable.
    ///
    /// A short write is not retried: the send buffer is full right now, and the retry
    /// would only return `WouldBlock`. Returns the bytes the socket took at once.
    pub(crate) fn send(
        &mut self,
        parts: &[&[u8]],
        outboxes: &mut Outboxes,
        stats: &mut Stats,
    ) -> Result<usize, Fault> {
        // Leave out empty parts, so that one real slice among them is a plain write().
        let mut inline: [&[u8]; 4] = [&[]; 4];
        let parts: &[&[u8]] = match parts {
            [_] => parts,
            _ if parts.len() <= inline.len() => {
                let mut n = 0;
                for p in parts.iter().filter(|p| !p.is_empty()) {
                    inline[n] = p;
                    n += 1;
                }
                &inline[..n]
            }
            _ => parts,
        };
        let total: usize = match parts {
            [one] => one.len(),
            _ => parts.iter().map(|p| p.len()).sum(),
        };
        if total == 0 {
            return Ok(0);
        }
        if self.owes() || !self.readiness.writable() {
            self.queue(parts, 0, outboxes);
            return Ok(0);
        }
        let io = self.transport.write(parts, total);
        count(&io, stats, true);
        if !matches!(io.status, Status::Continue) {
            let written = io.bytes;
            self.write_stopped(io.status, stats, written, total)?;
            self.queue(parts, written, outboxes);
            return Ok(written);
        }
        Ok(io.bytes)
    }

    /// Queues what is left of `parts` after the first `skip` bytes.
    fn queue(&mut self, parts: &[&[u8]], mut skip: usize, outboxes: &mut Outboxes) {
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
            } else {
                outboxes.push(&mut self.outbox, &p[skip..]);
                skip = 0;
            }
        }
    }

    /// A write that took `written` of `total` bytes: counts why it stopped, and clears
    /// the writable flag when the socket is full. The rest is about to be queued.
    #[cold]
    fn write_stopped(
        &mut self,
        status: Status,
        stats: &mut Stats,
        written: usize,
        total: usize,
    ) -> Result<(), Fault> {
        let why = match status {
            Status::Handshaking => "write: handshake under way",
            Status::Drained => "partial write",
            _ => "write: would block",
        };
        self.settle_write(status, stats)?;
        trace!(
            "{why}: {written} of {total} bytes taken, queueing {}",
            total - written
        );
        Ok(())
    }

    /// Writes what is owed, oldest first, until it is all gone or the socket is full:
    /// output held by the transport first (it is older), then the queue. Returns the
    /// bytes of the queue that the socket took.
    pub(crate) fn flush(
        &mut self,
        outboxes: &mut Outboxes,
        stats: &mut Stats,
    ) -> Result<usize, Fault> {
        if self.transport.holds_output() {
            let io = self.transport.flush_held();
            count(&io, stats, true);
            if self.settle_write(io.status, stats)? {
                return Ok(0);
            }
        }
        if self.outbox.is_empty() {
            return Ok(0);
        }
        let before = outboxes.len(self.outbox);
        let io = outboxes.write_to(&mut self.outbox, &mut self.transport);
        count(&io, stats, true);
        let written = io.bytes;
        if self.settle_write(io.status, stats)? {
            trace!(
                "flush: wrote {written} of {before} queued bytes, {} still queued",
                outboxes.len(self.outbox)
            );
        }
        Ok(written)
    }

    /// Applies how a write ended to the counters and the writable flag. `Ok(true)`
    /// when the socket is full (the rest waits for the next edge).
    fn settle_write(&mut self, status: Status, stats: &mut Stats) -> Result<bool, Fault> {
        match status {
            Status::Continue | Status::Closed | Status::Handshaking => Ok(false),
            Status::Drained => {
                stats.short_writes += 1;
                self.readiness.clear_writable();
                Ok(true)
            }
            Status::WouldBlock => {
                stats.write_would_block += 1;
                self.readiness.clear_writable();
                Ok(true)
            }
            Status::Failed(f) => Err(f),
        }
    }

    /// Drops whatever is queued: the peer will never read it.
    pub(crate) fn drop_output(&mut self, outboxes: &mut Outboxes) {
        outboxes.clear(&mut self.outbox);
    }

    /// Shuts down the sending side once nothing is owed. `Ok(false)` while TLS's
    /// `close_notify` still waits for room in the socket: flush and ask again.
    pub(crate) fn shutdown_write(&mut self, stats: &mut Stats) -> Result<bool, Fault> {
        let io = self.transport.shutdown_write();
        count(&io, stats, true);
        Ok(!self.settle_write(io.status, stats)?)
    }

    /// Once, after the read that completed a TLS handshake: its protocol and cipher
    /// suite. Nothing else needs doing then — output queued during the handshake is
    /// written because the writable flag was never cleared.
    #[inline]
    pub(crate) fn take_established(&mut self) -> Option<String> {
        self.transport.take_established()
    }
}

/// Adds an I/O call's system calls to the counters, and for a write the bytes it
/// took (bytes read are counted by the caller, which knows whether they were served or
/// discarded).
#[inline]
fn count(io: &Io, stats: &mut Stats, write: bool) {
    stats.reads += u64::from(io.reads);
    stats.writes += u64::from(io.writes);
    if write {
        stats.bytes_out += io.bytes as u64;
    }
}
