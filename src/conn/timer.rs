//! Deadlines for many connections at a cost that does not grow with their number.
//!
//! Every connection in one [`Deadlines`] list has the same timeout (the idle timeout,
//! the linger time or the TLS handshake timeout), so the list needs no sorting: a
//! connection that is stamped goes to the tail, and the head is always the one whose
//! deadline comes first. Each turn the
//! loop looks at the head only, and pops while the head has expired. Links live inside
//! the connections themselves (an intrusive doubly-linked list over slab keys), so
//! adding, moving and removing are O(1) and allocate nothing.
//!
//! A connection is in at most one list at a time (which one is kept by its owner, the
//! connection table); closing it unlinks it, so a slot that is reused later never
//! inherits a stale deadline.

use slab::Slab;

/// Marks "no neighbour" in a link.
const NIL: u32 = u32::MAX;

/// Which deadline list a connection is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Closed after `--idle-timeout` without traffic.
    Idle = 0,
    /// Write side shut: closed when the peer closes or the linger time passes.
    Linger = 1,
    /// A TLS handshake under way: closed if it has not completed in time.
    Handshake = 2,
}

/// The number of [`Timer`] kinds, for arrays indexed by them.
pub(crate) const TIMER_KINDS: usize = 3;

/// A connection's place in a deadline list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Links {
    prev: u32,
    next: u32,
    /// When the connection was last stamped, in milliseconds of the loop's clock.
    pub(crate) stamp: u64,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            prev: NIL,
            next: NIL,
            stamp: 0,
        }
    }
}

/// Anything stored in the slab that carries [`Links`].
pub(crate) trait Linked {
    fn links(&self) -> &Links;
    fn links_mut(&mut self) -> &mut Links;
}

/// The head and tail of one deadline list, and its timeout in milliseconds.
#[derive(Debug)]
pub(crate) struct Deadlines {
    head: u32,
    tail: u32,
    timeout_ms: u64,
}

impl Deadlines {
    /// An empty list whose entries expire `timeout_ms` after their stamp.
    pub(crate) fn new(timeout_ms: u64) -> Self {
        Deadlines {
            head: NIL,
            tail: NIL,
            timeout_ms,
        }
    }

    /// Appends `key` with the stamp `now`; it must not be on any list.
    pub(crate) fn push<T: Linked>(&mut self, key: usize, now: u64, slab: &mut Slab<T>) {
        let k = key as u32;
        let old_tail = self.tail;
        *slab[key].links_mut() = Links {
            prev: old_tail,
            next: NIL,
            stamp: now,
        };
        if old_tail == NIL {
            self.head = k;
        } else {
            slab[old_tail as usize].links_mut().next = k;
        }
        self.tail = k;
    }

    /// Removes `key` from this list; it must be on it.
    pub(crate) fn unlink<T: Linked>(&mut self, key: usize, slab: &mut Slab<T>) {
        let Links { prev, next, .. } = *slab[key].links();
        if prev == NIL {
            self.head = next;
        } else {
            slab[prev as usize].links_mut().next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slab[next as usize].links_mut().prev = prev;
        }
        *slab[key].links_mut() = Links::default();
    }

    /// The key whose deadline comes first, if it has passed at `now`.
    pub(crate) fn expired<T: Linked>(&self, now: u64, slab: &Slab<T>) -> Option<usize> {
        if self.head == NIL {
            return None;
        }
        let key = self.head as usize;
        let stamp = slab[key].links().stamp;
        (now >= stamp + self.timeout_ms).then_some(key)
    }

    /// The earliest deadline on this list, in loop milliseconds.
    pub(crate) fn next_deadline<T: Linked>(&self, slab: &Slab<T>) -> Option<u64> {
        if self.head == NIL {
            return None;
        }
        Some(slab[self.head as usize].links().stamp + self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Item(Links);
    impl Linked for Item {
        fn links(&self) -> &Links {
            &self.0
        }
        fn links_mut(&mut self) -> &mut Links {
            &mut self.0
        }
    }

    #[test]
    fn expires_in_stamp_order_and_unlinks_anywhere() {
        let mut slab: Slab<Item> = Slab::new();
        let keys: Vec<usize> = (0..4).map(|_| slab.insert(Item::default())).collect();
        let mut d = Deadlines::new(100);
        for (i, &k) in keys.iter().enumerate() {
            d.push(k, i as u64 * 10, &mut slab);
        }
        assert_eq!(d.next_deadline(&slab), Some(100));
        assert_eq!(d.expired(99, &slab), None);
        // Remove the middle and the head: the rest stays linked in order.
        d.unlink(keys[1], &mut slab);
        d.unlink(keys[0], &mut slab);
        assert_eq!(d.expired(1000, &slab), Some(keys[2]));
        d.unlink(keys[2], &mut slab);
        assert_eq!(d.expired(1000, &slab), Some(keys[3]));
        d.unlink(keys[3], &mut slab);
        assert_eq!(d.expired(1000, &slab), None);
        assert_eq!(d.next_deadline(&slab), None);
        // An emptied list accepts new entries at both ends correctly.
        d.push(keys[0], 5, &mut slab);
        d.push(keys[1], 6, &mut slab);
        d.unlink(keys[1], &mut slab);
        assert_eq!(d.expired(105, &slab), Some(keys[0]));
    }
}
