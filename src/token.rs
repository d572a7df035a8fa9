//! What a `mio::Token` stands for.
//!
//! A token is one machine word handed to the kernel with each registration and handed
//! back with each event. Its top two bits say what kind of source it is; a connection's
//! token also carries the connection's accept sequence number beside its slab key, so
//! an event that was already queued for a connection that has since closed is
//! recognised as stale even if a new connection took the same slab slot in the meantime.

use mio::Token;

const KIND_SHIFT: u32 = usize::BITS - 2;
const KIND_CONN: usize = 0;
const KIND_LISTENER: usize = 1;
const KIND_CONTROL: usize = 2;

/// Bits for the slab key: 32 on 64-bit targets (16 on 32-bit).
const KEY_BITS: u32 = usize::BITS / 2;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
/// Bits of the sequence number kept in the token.
const SEQ_MASK: usize = (1 << (KIND_SHIFT - KEY_BITS)) - 1;

/// The largest slab key a connection token can carry.
pub(crate) const MAX_KEY: usize = KEY_MASK;

/// The waker a [`Handle`](crate::Handle) uses.
pub(crate) const WAKER: Token = Token((KIND_CONTROL << KIND_SHIFT) | 1);
/// The signal pipe.
pub(crate) const SIGNALS: Token = Token((KIND_CONTROL << KIND_SHIFT) | 2);

/// A decoded token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A stream connection: slab key and (truncated) sequence number.
    Conn { key: usize, seq: usize },
    /// A listener, by index.
    Listener(usize),
    /// The waker.
    Waker,
    /// The signal pipe.
    Signals,
    /// Nothing the loop registered.
    Unknown,
}

/// The token of a connection.
pub(crate) fn conn(key: usize, seq: u32) -> Token {
    debug_assert!(key <= MAX_KEY);
    Token((KIND_CONN << KIND_SHIFT) | ((seq as usize & SEQ_MASK) << KEY_BITS) | key)
}

/// The token of a listener.
pub(crate) fn listener(index: usize) -> Token {
    Token((KIND_LISTENER << KIND_SHIFT) | index)
}

/// The sequence number as it is kept in a token, for comparison with a decoded one.
pub(crate) fn seq_bits(seq: u32) -> usize {
    seq as usize & SEQ_MASK
}

/// What a token stands for.
pub(crate) fn decode(t: Token) -> Target {
    let kind = t.0 >> KIND_SHIFT;
    let low = t.0 & ((1 << KIND_SHIFT) - 1);
    match kind {
        KIND_CONN => Target::Conn {
            key: low & KEY_MASK,
            seq: low >> KEY_BITS,
        },
        KIND_LISTENER => Target::Listener(low),
        _ if t == WAKER => Target::Waker,
        _ if t == SIGNALS => Target::Signals,
        _ => Target::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let t = conn(12345, 7);
        assert_eq!(
            decode(t),
            Target::Conn {
                key: 12345,
                seq: seq_bits(7)
            }
        );
        assert_eq!(
            decode(conn(MAX_KEY, u32::MAX)),
            Target::Conn {
                key: MAX_KEY,
                seq: seq_bits(u32::MAX)
            }
        );
        assert_eq!(decode(listener(3)), Target::Listener(3));
        assert_eq!(decode(WAKER), Target::Waker);
        assert_eq!(decode(SIGNALS), Target::Signals);
    }

    #[test]
    fn a_reused_key_gets_a_different_token() {
        assert_ne!(conn(5, 1), conn(5, 2));
    }
}
