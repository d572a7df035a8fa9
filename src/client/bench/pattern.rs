//! The bytes the load generator sends, so that every echoed byte can be checked.
//!
//! Message `seq` of connection `conn` is a window of a fixed pseudo-random table whose
//! start depends on both, with `seq` and `conn` mixed into its first 12 bytes. Bytes
//! delivered to the wrong connection, out of order, duplicated or changed differ from
//! what is expected at that point of the stream — and checking is mostly a `memcmp`
//! against the table, cheap enough for bulk rates.

/// Length of the table; a power of two, so the window start is a mask.
const TABLE_LEN: usize = 1 << 16;
/// The first bytes of a message that carry its sequence number and connection.
pub(crate) const HEADER: usize = 12;

/// The pattern table.
pub(crate) struct Pattern {
    table: Box<[u8]>,
}

impl Pattern {
    pub(crate) fn new() -> Self {
        // xorshift: fixed seed, so a capture can be checked against a later run.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut table: Vec<u8> = (0..TABLE_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        // The first header's worth again at the end, so that the bytes under any
        // message's header are one slice, however close to the end it starts.
        table.extend_from_within(..HEADER);
        Pattern {
            table: table.into_boxed_slice(),
        }
    }

    fn start(conn: u32, seq: u64) -> usize {
        (u64::from(conn).wrapping_mul(1_000_003) ^ seq.wrapping_mul(7_919)) as usize
            & (TABLE_LEN - 1)
    }

    /// The first [`HEADER`] bytes of message `seq` of connection `conn`: the table's
    /// bytes there, with the sequence number and the connection mixed in.
    fn header(&self, conn: u32, seq: u64) -> [u8; HEADER] {
        let start = Self::start(conn, seq);
        let under = &self.table[start..start + HEADER];
        let mut h = [0u8; HEADER];
        let seq_part = u64::from_le_bytes(under[..8].try_into().expect("8 bytes")) ^ seq;
        let conn_part = u32::from_le_bytes(under[8..].try_into().expect("4 bytes")) ^ conn;
        h[..8].copy_from_slice(&seq_part.to_le_bytes());
        h[8..].copy_from_slice(&conn_part.to_le_bytes());
        h
    }

    /// Writes message `seq` of connection `conn` (its length is `out.len()`).
    pub(crate) fn fill(&self, conn: u32, seq: u64, out: &mut [u8]) {
        let start = Self::start(conn, seq);
        // Runs of the table (a memcpy each), then the header over the front.
        let mut i = 0;
        while i < out.len() {
            let pos = (start + i) & (TABLE_LEN - 1);
            let run = (out.len() - i).min(TABLE_LEN - pos);
            out[i..i + run].copy_from_slice(&self.table[pos..pos + run]);
            i += run;
        }
        let n = out.len().min(HEADER);
        out[..n].copy_from_slice(&self.header(conn, seq)[..n]);
    }

    /// Checks `data` against bytes `offset..` of message `seq` of connection `conn`.
    pub(crate) fn check(&self, conn: u32, seq: u64, offset: usize, data: &[u8]) -> bool {
        let start = Self::start(conn, seq);
        let mut i = offset;
        let mut rest = data;
        if i < HEADER {
            let n = (HEADER - i).min(rest.len());
            if rest[..n] != self.header(conn, seq)[i..i + n] {
                return false;
            }
            i += n;
            rest = &rest[n..];
        }
        // Then whole runs of the table, a memcmp each.
        while !rest.is_empty() {
            let pos = (start + i) & (TABLE_LEN - 1);
            let run = rest.len().min(TABLE_LEN - pos);
            if rest[..run] != self.table[pos..pos + run] {
                return false;
            }
            i += run;
            rest = &rest[run..];
        }
        true
    }

    /// Checks `data`, found at byte `offset` of a stream of `size`-byte messages.
    pub(crate) fn check_stream(&self, conn: u32, size: usize, offset: u64, data: &[u8]) -> bool {
        let mut off = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let seq = off / size as u64;
            let within = (off % size as u64) as usize;
            let n = rest.len().min(size - within);
            if !self.check(conn, seq, within, &rest[..n]) {
                return false;
            }
            off += n as u64;
            rest = &rest[n..];
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_checks_in_any_split_and_differs_from_its_neighbours() {
        let p = Pattern::new();
        let mut m = vec![0u8; 100];
        p.fill(3, 9, &mut m);
        assert!(p.check(3, 9, 0, &m));
        assert!(p.check(3, 9, 5, &m[5..40]));
        assert!(!p.check(3, 10, 0, &m), "another sequence number");
        assert!(!p.check(4, 9, 0, &m), "another connection");
        let mut bad = m.clone();
        bad[70] ^= 1;
        assert!(!p.check(3, 9, 0, &bad));
    }

    #[test]
    fn a_stream_checks_across_message_boundaries() {
        let p = Pattern::new();
        let size = 7;
        let mut stream = Vec::new();
        for seq in 0..50 {
            let mut m = vec![0u8; size];
            p.fill(1, seq, &mut m);
            stream.extend_from_slice(&m);
        }
        assert!(p.check_stream(1, size, 0, &stream));
        assert!(p.check_stream(1, size, 10, &stream[10..333]));
        assert!(
            !p.check_stream(1, size, 11, &stream[10..333]),
            "shifted by one"
        );
    }

    #[test]
    fn large_messages_wrap_around_the_table() {
        let p = Pattern::new();
        let mut m = vec![0u8; 3 * TABLE_LEN + 5];
        p.fill(2, 1, &mut m);
        assert!(p.check(2, 1, 0, &m));
        assert!(p.check(2, 1, TABLE_LEN - 3, &m[TABLE_LEN - 3..]));
    }
}
