//! The bytes each connection still owes its peer, in fixed-size chunks from one pool.
//!
//! A non-blocking `write` may take only part of what it is given (a *short write*) or
//! nothing at all (`WouldBlock`) when the kernel's send buffer is full. Python's
//! `socket.sendall` hides this by blocking; a readiness loop cannot block, so it keeps
//! the unsent remainder and writes it when the socket reports writable again. This
//! file keeps those remainders for every connection of one loop (or one client
//! thread).
//!
//! # Why chunks from a pool
//! The bytes queue up in [`CHUNK`]-sized chunks, taken from and returned to a spare
//! list shared by all the connections. A queue grows without copying what it already
//! holds (a growing `Vec` copies everything at each doubling), writing from the front
//! only moves an offset, and one `writev` sends many chunks at once. The pool is what
//! makes memory come back after a burst: when a fan-out makes hundreds of slow readers
//! each queue megabytes, and then they leave, their chunks go back to the spare list,
//! which keeps at most a fixed number of them and frees the rest at once (and the loop
//! then asks the allocator to hand freed memory back to the system; see
//! [`sys::release_free_memory`](crate::sys::release_free_memory)). Queues of growing
//! `Vec`s instead leave the allocator holding the high-water mark of every burst.
//!
//! # Why a connection holds only a ticket
//! A connection's [`Outbox`] is a 4-byte ticket to its queue here, and no ticket at all
//! when nothing is owed: an idle connection owns no buffer, and its table entry stays
//! small (see `conn/mod.rs`).

use std::collections::VecDeque;

use slab::Slab;

use crate::transport::{Io, Status, Transport};

/// Bytes per chunk: four pages. Small enough that a connection owing a few bytes does
/// not hold much, large enough that a `writev` of [`WRITEV_CHUNKS`] of them fills a
/// socket's send buffer in one call.
pub(crate) const CHUNK: usize = 16 * 1024;

/// Most chunks handed to one `writev`.
const WRITEV_CHUNKS: usize = 16;

type Chunk = Box<[u8; CHUNK]>;

/// A connection's ticket to its queue in [`Outboxes`]; the default, no ticket, means
/// nothing is queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outbox(u32);

impl Outbox {
    /// True when nothing is queued.
    #[inline]
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn key(self) -> usize {
        self.0 as usize - 1
    }
}

/// One connection's unsent bytes: the first chunk from `head`, the last up to `tail`.
struct Queue {
    chunks: VecDeque<Chunk>,
    head: usize,
    tail: usize,
    len: usize,
}

/// Every queue of a loop, and the spare chunks they draw from.
pub(crate) struct Outboxes {
    queues: Slab<Queue>,
    spare: Vec<Chunk>,
    /// Most spare chunks kept for the next burst; beyond this they are freed.
    keep: usize,
    /// Bytes queued across all connections.
    queued: usize,
    /// Bytes of chunks freed since [`take_freed`](Self::take_freed) was last asked.
    freed: usize,
}

impl std::fmt::Debug for Outboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboxes")
            .field("queues", &self.queues.len())
            .field("queued", &self.queued)
            .field("spare", &self.spare.len())
            .finish()
    }
}

impl Outboxes {
    /// No queues yet; at most `keep_bytes` of spare chunks kept between bursts.
    pub(crate) fn new(keep_bytes: usize) -> Self {
        Outboxes {
            queues: Slab::new(),
            spare: Vec::new(),
            keep: keep_bytes / CHUNK,
            queued: 0,
            freed: 0,
        }
    }

    /// Bytes queued for one connection.
    #[inline]
    pub(crate) fn len(&self, ob: Outbox) -> usize {
        if ob.is_empty() {
            0
        } else {
            self.queues[ob.key()].len
        }
    }

    /// Bytes queued for all connections together.
    pub(crate) fn total(&self) -> usize {
        self.queued
    }

    /// Bytes held in chunks, queued or spare: the memory this pool holds.
    pub(crate) fn held(&self) -> usize {
        (self
            .queues
            .iter()
            .map(|(_, q)| q.chunks.len())
            .sum::<usize>()
            + self.spare.len())
            * CHUNK
    }

    /// Bytes of chunks freed since the last call: what the allocator could hand back.
    pub(crate) fn take_freed(&mut self) -> usize {
        if self.queues.is_empty() && self.queues.capacity() > 64 {
            // The table of queues grew for a burst; an idle loop does not need it.
            self.queues = Slab::new();
        }
        std::mem::take(&mut self.freed)
    }

    /// Queues `bytes` behind what `ob` already holds.
    pub(crate) fn push(&mut self, ob: &mut Outbox, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if ob.is_empty() {
            let key = self.queues.insert(Queue {
                chunks: VecDeque::new(),
                head: 0,
                tail: CHUNK,
                len: 0,
            });
            *ob = Outbox(key as u32 + 1);
        }
        let q = &mut self.queues[ob.key()];
        q.len += bytes.len();
        self.queued += bytes.len();
        let mut rest = bytes;
        while !rest.is_empty() {
            if q.tail == CHUNK {
                q.chunks
                    .push_back(self.spare.pop().unwrap_or_else(|| Box::new([0; CHUNK])));
                q.tail = 0;
            }
            let last = q.chunks.back_mut().expect("a chunk was just ensured");
            let n = rest.len().min(CHUNK - q.tail);
            last[q.tail..q.tail + n].copy_from_slice(&rest[..n]);
            q.tail += n;
            rest = &rest[n..];
        }
    }

    /// Writes what `ob` holds, oldest first, until it is empty or the socket is full: a
    /// `writev` of up to [`WRITEV_CHUNKS`] chunks at a time. A short write is not
    /// retried (the retry would only say `WouldBlock`: the send buffer filled at that
    /// instant, and the kernel raises a writable edge once space frees up).
    pub(crate) fn write_to(&mut self, ob: &mut Outbox, transport: &mut Transport) -> Io {
        let mut done = Io::idle();
        if ob.is_empty() {
            return done;
        }
        loop {
            let q = &mut self.queues[ob.key()];
            let io = {
                let mut parts: [&[u8]; WRITEV_CHUNKS] = [&[]; WRITEV_CHUNKS];
                let last = q.chunks.len() - 1;
                let (mut n, mut len) = (0, 0);
                for (i, c) in q.chunks.iter().take(WRITEV_CHUNKS).enumerate() {
                    let from = if i == 0 { q.head } else { 0 };
                    let to = if i == last { q.tail } else { CHUNK };
                    parts[n] = &c[from..to];
                    len += to - from;
                    n += 1;
                }
                transport.write(&parts[..n], len)
            };
            done.bytes += io.bytes;
            done.reads += io.reads;
            done.writes += io.writes;
            self.consume(ob, io.bytes);
            if !matches!(io.status, Status::Continue) || ob.is_empty() {
                done.status = io.status;
                return done;
            }
        }
    }

    /// Marks the first `n` queued bytes of `ob` as written; an emptied queue gives its
    /// chunks back and its ticket up.
    fn consume(&mut self, ob: &mut Outbox, mut n: usize) {
        let q = &mut self.queues[ob.key()];
        q.len -= n;
        self.queued -= n;
        while n > 0 {
            let end = if q.chunks.len() == 1 { q.tail } else { CHUNK };
            let in_first = end - q.head;
            if n < in_first {
                q.head += n;
                break;
            }
            n -= in_first;
            let chunk = q.chunks.pop_front().expect("consumed bytes were queued");
            q.head = 0;
            if self.spare.len() < self.keep {
                self.spare.push(chunk);
            } else {
                self.freed += CHUNK;
            }
        }
        if q.len == 0 {
            self.release(ob);
        }
    }

    /// Drops everything `ob` holds (the peer is gone, or it was closed as a slow
    /// consumer).
    pub(crate) fn clear(&mut self, ob: &mut Outbox) {
        if ob.is_empty() {
            return;
        }
        let q = &mut self.queues[ob.key()];
        self.queued -= q.len;
        q.len = 0;
        self.release(ob);
    }

    fn release(&mut self, ob: &mut Outbox) {
        let q = self.queues.remove(ob.key());
        *ob = Outbox::default();
        for chunk in q.chunks {
            if self.spare.len() < self.keep {
                self.spare.push(chunk);
            } else {
                self.freed += CHUNK;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Takes everything queued out of `ob`, as a writer that accepts all would.
    fn drain(o: &mut Outboxes, ob: &mut Outbox) -> Vec<u8> {
        let mut out = Vec::new();
        while !ob.is_empty() {
            let q = &o.queues[ob.key()];
            let last = q.chunks.len() - 1;
            let to = if last == 0 { q.tail } else { CHUNK };
            let n = to - q.head;
            out.extend_from_slice(&q.chunks[0][q.head..to]);
            o.consume(ob, n);
        }
        out
    }

    #[test]
    fn bytes_come_out_in_order_across_chunks_and_the_ticket_is_given_up() {
        let mut o = Outboxes::new(4 * CHUNK);
        let mut ob = Outbox::default();
        let data: Vec<u8> = (0..3 * CHUNK + 100).map(|i| (i % 251) as u8).collect();
        o.push(&mut ob, &data[..10]);
        o.push(&mut ob, &data[10..]);
        assert_eq!(o.len(ob), data.len());
        assert_eq!(o.total(), data.len());
        assert_eq!(drain(&mut o, &mut ob), data);
        assert!(ob.is_empty());
        assert_eq!(o.total(), 0);
        assert_eq!(
            o.spare.len(),
            4,
            "the emptied chunks are kept for the next burst"
        );
    }

    #[test]
    fn spare_chunks_beyond_the_cap_are_freed() {
        let mut o = Outboxes::new(2 * CHUNK);
        let mut obs = [Outbox::default(); 3];
        for ob in &mut obs {
            o.push(ob, &[1; 3 * CHUNK]);
        }
        assert_eq!(o.held(), 9 * CHUNK);
        for ob in &mut obs {
            o.clear(ob);
        }
        assert_eq!(o.total(), 0);
        assert_eq!(o.held(), 2 * CHUNK, "only the cap's worth is kept");
        assert_eq!(o.take_freed(), 7 * CHUNK);
        assert_eq!(o.take_freed(), 0);
    }

    proptest! {
        /// Whatever mix of pushes and partial writes happens, the bytes that come out
        /// are exactly the bytes pushed, in order, and the count stays right.
        #[test]
        fn bytes_arrive_exactly_once_in_order(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40_000), 1..12),
            takes in proptest::collection::vec(0usize..50_000, 1..24),
        ) {
            let mut o = Outboxes::new(CHUNK);
            let mut ob = Outbox::default();
            let mut expect = Vec::new();
            let mut got = Vec::new();
            let mut takes = takes.into_iter().cycle();
            for c in &chunks {
                o.push(&mut ob, c);
                expect.extend_from_slice(c);
                let want = takes.next().unwrap_or(0).min(o.len(ob));
                let mut taken = 0;
                while taken < want {
                    let q = &o.queues[ob.key()];
                    let to = if q.chunks.len() == 1 { q.tail } else { CHUNK };
                    let n = (to - q.head).min(want - taken);
                    got.extend_from_slice(&q.chunks[0][q.head..q.head + n]);
                    o.consume(&mut ob, n);
                    taken += n;
                }
                prop_assert_eq!(o.len(ob) + got.len(), expect.len());
                prop_assert_eq!(o.total(), o.len(ob));
            }
            got.extend(drain(&mut o, &mut ob));
            prop_assert_eq!(got, expect);
            prop_assert!(ob.is_empty());
        }
    }
}
