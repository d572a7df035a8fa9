//! What a `mio::Token` stands for, for the server's loop and the clients' loops alike.
//!
//! A token is one machine word handed to the kernel with each registration and handed
//! back with each event. Its top two bits say what kind of source it is; a connection's
//! token also carries the connection's sequence number beside its slot, so an event
//! that was already queued for a connection that has since closed is recognised as
//! stale even if a new connection took the same slot in the meantime (see [the
//! guide](crate#token-reuse)).

use mio::Token;

const KIND_SHIFT: u32 = usize::BITS - 2;
const KIND_CONN: usize = 0;
const KIND_SOCKET: usize = 1;
const KIND_CONTROL: usize = 2;

/// Bits for the slot: 32 on 64-bit targets (16 on 32-bit).
const KEY_BITS: u32 = usize::BITS / 2;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;
/// Bits of the sequence number kept in the token.
const SEQ_MASK: usize = (1 << (KIND_SHIFT - KEY_BITS)) - 1;

/// The largest slot a connection token can carry.
pub(crate) const MAX_KEY: usize = KEY_MASK;

/// The waker a [`Handle`](crate::Handle) uses.
pub(crate) const WAKER: Token = Token((KIND_CONTROL << KIND_SHIFT) | 1);
/// The signal pipe.
pub(crate) const SIGNALS: Token = Token((KIND_CONTROL << KIND_SHIFT) | 2);

/// A decoded token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A stream connection: its slot and (truncated) sequence number.
    Conn { key: usize, seq: usize },
    /// A bound socket (a listener or a datagram socket), by its index in `--listen` order.
    Socket(usize),
    /// The waker.
    Waker,
    /// The signal pipe.
    Signals,
    /// Nothing the loop registered.
    Unknown,
}

/// The token of a connection in slot `key` with sequence number `seq`.
pub(crate) fn conn(key: usize, seq: u32) -> Token {
    debug_assert!(key <= MAX_KEY);
    Token((KIND_CONN << KIND_SHIFT) | ((seq as usize & SEQ_MASK) << KEY_BITS) | key)
}

/// The token of bound socket `index`.
pub(crate) fn socket(index: usize) -> Token {
    Token((KIND_SOCKET << KIND_SHIFT) | index)
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
        KIND_SOCKET => Target::Socket(low),
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
        assert_eq!(decode(socket(3)), Target::Socket(3));
        assert_eq!(decode(WAKER), Target::Waker);
        assert_eq!(decode(SIGNALS), Target::Signals);
    }

    #[test]
    fn a_reused_key_gets_a_different_token() {
        assert_ne!(conn(5, 1), conn(5, 2));
    }
}
