//! Sticky readiness: what the kernel last said about a socket, kept until a system call
//! says otherwise.
//!
//! mio is edge-triggered (see [the guide](crate#edge-triggered-readiness)): an event says
//! "this socket *became* readable", once. So the loop does not act on events directly;
//! it records them here, as flags, and clears a flag only when a call shows the
//! condition is over — a read or write that returned `WouldBlock`, or came back short.
//! Whatever is still set is still true, whether or not a new event comes.
//!
//! That one rule covers every case that would otherwise need its own: a connection
//! stopped by its read budget still has its readable flag, so it is served next turn
//! without an event; one paused by backpressure keeps its flag while paused and reads at
//! once when it resumes; a TLS connection whose first output waited for the handshake
//! still has its writable flag when the handshake completes. The same type serves the
//! server's connections and sockets and the clients' connections, modelled on sozu's
//! `Readiness { event, interest }`; what a socket is *interested* in is not kept here
//! but derived from its state each time (see `conn::Conns::next_step`).

use mio::event::Event;

/// The readiness flags of one socket.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Readiness(u8);

const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
/// The peer's FIN is queued behind whatever data is waiting (EPOLLRDHUP).
const READ_CLOSED: u8 = 4;

impl Readiness {
    /// Nothing known yet: a socket still connecting.
    pub(crate) const NONE: Readiness = Readiness(0);
    /// A socket known to be writable and not (yet) readable: one just accepted, whose
    /// send buffer is empty. Its first readable event comes from the registration.
    pub(crate) const WRITABLE: Readiness = Readiness(WRITABLE);

    /// Adds what an event reports. Flags are only ever added here: an event never
    /// says that something stopped being true. A read-closed event means readable
    /// too: the end of file is there to be read.
    #[inline]
    pub(crate) fn add(&mut self, ev: &Event) {
        if ev.is_readable() {
            self.0 |= READABLE;
        }
        if ev.is_read_closed() {
            self.0 |= READABLE | READ_CLOSED;
        }
        if ev.is_writable() {
            self.0 |= WRITABLE;
        }
    }

    /// Marks the socket readable: a listener or datagram socket that an event said is
    /// readable, or a connection whose transport holds input read on its behalf.
    pub(crate) fn set_readable(&mut self) {
        self.0 |= READABLE;
    }

    /// True until a read shows there is nothing more to read.
    #[inline]
    pub(crate) fn readable(self) -> bool {
        self.0 & READABLE != 0
    }

    /// True until a write shows the send buffer is full.
    #[inline]
    pub(crate) fn writable(self) -> bool {
        self.0 & WRITABLE != 0
    }

    /// True once an event reported the peer's FIN as queued: a short read does not mean
    /// the socket is drained, because the end of file is still waiting to be read.
    #[inline]
    pub(crate) fn read_closed(self) -> bool {
        self.0 & READ_CLOSED != 0
    }

    /// A read returned `WouldBlock` or came back short: wait for the next edge.
    #[inline]
    pub(crate) fn clear_readable(&mut self) {
        self.0 &= !READABLE;
    }

    /// A write returned `WouldBlock` or came back short: wait for the next edge.
    #[inline]
    pub(crate) fn clear_writable(&mut self) {
        self.0 &= !WRITABLE;
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (bit, name) in [
            (READABLE, "readable"),
            (WRITABLE, "writable"),
            (READ_CLOSED, "read-closed"),
        ] {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}
