//! Character generator (RFC 864): lines of 72 printable characters and `\r\n`, taken
//! from the ring of the 95 printable ASCII characters (space to `~`), each line starting
//! one character further along the ring than the one before.
//!
//! A stream connection gets the pattern for as long as it stays open, but only as fast
//! as it reads: chargen writes one chunk per [`Service::writable`] call and asks for the
//! next, and the loop makes that call only once the socket has taken the last chunk. A
//! client that stops reading stops the writes; at most one chunk waits for it. What the
//! client sends is read and thrown away; its EOF ends the connection.
//!
//! A datagram is answered with `min(request length, 512)` bytes of the pattern: never
//! more than the request, so chargen cannot be used as an amplifier.

use crate::service::{Context, DatagramContext, Service};

/// Characters per line, before `\r\n`.
pub const LINE_CHARS: usize = 72;

/// Longest datagram reply (RFC 864 suggests at most 512 characters).
pub const DATAGRAM_MAX: usize = 512;

/// Printable ASCII: space (0x20) to `~` (0x7e).
const RING: usize = 95;
const LINE_LEN: usize = LINE_CHARS + 2;

/// Copies of the pattern's whole cycle written per call: about 28 KB, enough to keep
/// a fast reader's socket busy without a syscall per line.
const CYCLES_PER_WRITE: usize = 4;

/// The chargen service.
#[derive(Clone, Debug)]
pub struct Chargen {
    /// The whole cycle: 95 lines, after which the pattern repeats exactly.
    cycle: Box<[u8]>,
}

impl Default for Chargen {
    fn default() -> Self {
        Chargen::new()
    }
}

impl Chargen {
    /// Builds the pattern once; connections share it.
    pub fn new() -> Self {
        let mut cycle = Vec::with_capacity(RING * LINE_LEN);
        for line in 0..RING {
            cycle.extend((0..LINE_CHARS).map(|i| b' ' + ((line + i) % RING) as u8));
            cycle.extend_from_slice(b"\r\n");
        }
        Chargen {
            cycle: cycle.into_boxed_slice(),
        }
    }

    /// One full cycle of the pattern (95 lines of 74 bytes); the stream is this,
    /// repeated.
    pub fn pattern(&self) -> &[u8] {
        &self.cycle
    }
}

impl Service for Chargen {
    type State = ();

    fn open(&mut self, ctx: &mut Context<'_>) {
        ctx.want_writable();
    }

    fn data(&mut self, _conn: &mut (), _data: &[u8], _ctx: &mut Context<'_>) {}

    fn writable(&mut self, _conn: &mut (), ctx: &mut Context<'_>) {
        // Whole cycles, so the next call starts again at the first line.
        ctx.write_vectored(&[&self.cycle[..]; CYCLES_PER_WRITE]);
        ctx.want_writable();
    }

    fn datagram(&mut self, data: &[u8], ctx: &mut DatagramContext<'_>) {
        let n = data.len().min(DATAGRAM_MAX);
        ctx.reply(&self.cycle[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_rfc_864() {
        let c = Chargen::new();
        let p = c.pattern();
        assert_eq!(p.len(), 95 * 74);
        assert_eq!(
            &p[..148],
            &b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n\
               !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh\r\n"[..]
        );
        // Each line starts one character further along the ring.
        for (i, line) in p.chunks(74).enumerate() {
            assert_eq!(line[0], b' ' + i as u8);
            assert_eq!(&line[72..], b"\r\n");
            assert!(line[..72].iter().all(|b| (b' '..=b'~').contains(b)));
        }
        // The line after the last wraps around to the first.
        assert_eq!(p[94 * 74], b'~');
        assert_eq!(p[94 * 74 + 1], b' ');
    }
}
