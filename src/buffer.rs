//! The bytes a connection still owes its peer.
//!
//! A non-blocking `write` may take only part of what it is given (a *short write*) or
//! nothing at all (`WouldBlock`) when the kernel's send buffer is full. Python's
//! `socket.sendall` hides this by blocking; a readiness loop cannot block, so it keeps the
//! unsent remainder here and writes it when the socket reports writable again.
//!
//! The buffer is a `Vec<u8>` with a read position (`head`): writing from the front only
//! advances `head`, so a short write costs no copy. Appending compacts the vector only
//! when it would otherwise have to grow, which keeps the total copying linear in the
//! bytes that pass through. When the last byte is written the allocation is released:
//! an idle connection owns no buffer.

use std::io::{self, Write};

/// Unsent output, oldest byte first.
#[derive(Debug, Default)]
pub struct SendBuf {
    buf: Vec<u8>,
    head: usize,
}

/// What a [`SendBuf::write_to`] call achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// Bytes the writer accepted.
    pub written: usize,
    /// `write` calls made.
    pub calls: u32,
    /// Calls that wrote fewer bytes than offered.
    pub short: u32,
    /// Whether the last call returned `WouldBlock`.
    pub would_block: bool,
}

impl SendBuf {
    /// An empty buffer; it allocates nothing until bytes are queued.
    pub const fn new() -> Self {
        SendBuf {
            buf: Vec::new(),
            head: 0,
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// True when nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// The unsent bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// Bytes of heap memory held (for memory accounting in tests and counters).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Queues bytes behind those already waiting.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.head > 0 && self.buf.len() + bytes.len() > self.buf.capacity() {
            // Reclaim the written prefix before growing: one memmove instead of a
            // larger allocation that would also carry the dead prefix along.
            self.buf.drain(..self.head);
            self.head = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the first `n` unsent bytes as written.
    ///
    /// # Panics
    /// If `n` is larger than [`len`](Self::len): that would mean a writer claimed to
    /// have written bytes it was never given.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed {n} of {} bytes", self.len());
        self.head += n;
        if self.head == self.buf.len() {
            // Fully flushed: give the memory back so an idle connection owns nothing.
            self.buf = Vec::new();
            self.head = 0;
        }
    }

    /// Drops everything queued (the peer is gone) and releases the memory.
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.head = 0;
    }

    /// Writes queued bytes, oldest first, until the buffer is empty, the writer returns
    /// `WouldBlock`, or a write is short.
    ///
    /// A short write means the kernel's send buffer filled up at that instant; the next
    /// attempt would only return `WouldBlock`, so it is not made: the caller waits for
    /// the socket's next writable event instead. `Interrupted` is retried. Any other
    /// error is returned and the bytes stay queued.
    pub fn write_to<W: Write + ?Sized>(&mut self, w: &mut W) -> io::Result<Flush> {
        let mut f = Flush::default();
        while !self.is_empty() {
            let want = self.len();
            match w.write(self.as_slice()) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "socket accepted no bytes",
                    ));
                }
                Ok(n) => {
                    f.calls += 1;
                    f.written += n;
                    self.consume(n);
                    if n < want {
                        f.short += 1;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    f.calls += 1;
                    f.would_block = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A writer that accepts at most the next scripted number of bytes per call
    /// (`None` = WouldBlock), recording everything it accepted.
    struct Scripted {
        limits: Vec<Option<usize>>,
        next: usize,
        got: Vec<u8>,
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let limit = self
                .limits
                .get(self.next)
                .copied()
                .unwrap_or(Some(usize::MAX));
            self.next += 1;
            match limit {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(n) => {
                    let n = n.min(buf.len());
                    self.got.extend_from_slice(&buf[..n]);
                    Ok(n)
                }
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_write_keeps_the_remainder_in_order() {
        let mut b = SendBuf::new();
        b.push(b"hello ");
        b.push(b"world");
        let mut w = Scripted {
            limits: vec![Some(4)],
            next: 0,
            got: vec![],
        };
        let f = b.write_to(&mut w).unwrap();
        assert_eq!(
            f,
            Flush {
                written: 4,
                calls: 1,
                short: 1,
                would_block: false
            }
        );
        assert_eq!(b.as_slice(), b"o world");
        b.push(b"!");
        let f = b.write_to(&mut w).unwrap();
        assert_eq!(f.written, 8);
        assert!(b.is_empty());
        assert_eq!(w.got, b"hello world!");
    }

    #[test]
    fn would_block_leaves_everything_queued() {
        let mut b = SendBuf::new();
        b.push(b"abc");
        let mut w = Scripted {
            limits: vec![None],
            next: 0,
            got: vec![],
        };
        let f = b.write_to(&mut w).unwrap();
        assert!(f.would_block);
        assert_eq!(f.written, 0);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn drained_buffer_releases_its_memory() {
        let mut b = SendBuf::new();
        b.push(&[7u8; 10_000]);
        assert!(b.capacity() >= 10_000);
        b.consume(9_999);
        assert!(b.capacity() >= 10_000, "partially drained keeps its memory");
        b.consume(1);
        assert_eq!(b.capacity(), 0);
        assert!(b.is_empty());
    }

    #[test]
    fn push_compacts_instead_of_growing() {
        let mut b = SendBuf::new();
        b.push(&[1u8; 1000]);
        let cap = b.capacity();
        b.consume(900);
        b.push(&[2u8; 800]);
        assert_eq!(b.capacity(), cap, "the written prefix was reused");
        assert_eq!(b.len(), 900);
        assert!(b.as_slice()[..100].iter().all(|&x| x == 1));
        assert!(b.as_slice()[100..].iter().all(|&x| x == 2));
    }

    #[test]
    #[should_panic]
    fn consuming_more_than_queued_panics() {
        let mut b = SendBuf::new();
        b.push(b"ab");
        b.consume(3);
    }

    proptest! {
        /// Whatever mix of pushes, short writes and WouldBlock happens, the bytes that
        /// reach the writer are exactly the bytes pushed, in order.
        #[test]
        fn bytes_arrive_exactly_once_in_order(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..40),
            limits in proptest::collection::vec(proptest::option::of(0usize..200), 1..80),
        ) {
            let mut b = SendBuf::new();
            let mut w = Scripted { limits, next: 0, got: vec![] };
            let mut expect = Vec::new();
            for c in &chunks {
                b.push(c);
                expect.extend_from_slice(c);
                // A zero limit would be a writer accepting nothing, which is an error here.
                match b.write_to(&mut w) {
                    Ok(_) => {}
                    Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::WriteZero),
                }
                prop_assert_eq!(b.len() + w.got.len(), expect.len());
            }
            w.limits.clear();
            b.write_to(&mut w).unwrap();
            prop_assert!(b.is_empty());
            prop_assert_eq!(b.capacity(), 0);
            prop_assert_eq!(w.got, expect);
        }
    }
}
