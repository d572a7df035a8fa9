//! Datagram sockets (UDP and Unix datagram) as the loop drives them.
//!
//! A datagram socket has no connections: one socket receives from every peer, and each
//! datagram is a whole message. Receiving reads one datagram per `recv_from` — or, on
//! Linux, up to [`BATCH`] per `recvmmsg` — and the answers go out with `send_to`, or all
//! of a batch's answers in one `sendmmsg`.
//!
//! A datagram socket's send buffer can fill up too. Then replies wait in a small
//! bounded queue, flushed when the socket turns writable; when that queue is full,
//! further replies are dropped and counted. Dropping is the right answer for
//! datagrams: the protocol already tolerates loss, and memory must not grow because
//! one peer sends faster than the network drains.
//!
//! # Safety rules (never an amplifier)
//! - A reply is never larger than its request, and there is at most one per request.
//! - Datagrams from source port 0 or from the ports of the classic built-in services
//!   (7 echo, 13 daytime, 19 chargen, 37 time) are dropped: two echo services pointed at
//!   each other by one spoofed datagram would otherwise bounce it forever.
//! - Errors the kernel reports on a datagram socket because of an earlier datagram
//!   (ICMP port unreachable turned into `ECONNREFUSED`, and the like) are counted and
//!   never stop the loop.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

use crate::listener::DgramSocket;
use crate::transport::PeerAddr;

/// Datagrams received (and answered) per `recvmmsg` / `sendmmsg` call.
pub(crate) const BATCH: usize = 32;

/// Room for any UDP datagram: the largest payload is 65,507 bytes over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 64 * 1024;

/// Source ports whose datagrams are dropped unless explicitly allowed.
pub const UNSAFE_SOURCE_PORTS: [u16; 5] = [0, 7, 13, 19, 37];

/// True when a datagram from `peer` must not be answered (see the module docs).
pub(crate) fn is_unsafe_source(peer: &PeerAddr) -> bool {
    matches!(peer, PeerAddr::Inet(a) if UNSAFE_SOURCE_PORTS.contains(&a.port()))
}

/// Replies the socket could not take at once, oldest first.
#[derive(Debug, Default)]
pub(crate) struct ReplyQueue {
    items: VecDeque<(PeerAddr, Box<[u8]>)>,
    bytes: usize,
}

impl ReplyQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues a reply unless the queue already holds `max_count` replies or
    /// `max_bytes` bytes; returns false (the reply is dropped) when it does.
    pub(crate) fn push(
        &mut self,
        to: PeerAddr,
        data: &[u8],
        max_count: usize,
        max_bytes: usize,
    ) -> bool {
        if self.items.len() >= max_count || self.bytes + data.len() > max_bytes {
            return false;
        }
        self.bytes += data.len();
        self.items.push_back((to, data.into()));
        true
    }

    pub(crate) fn front(&self) -> Option<&(PeerAddr, Box<[u8]>)> {
        self.items.front()
    }

    pub(crate) fn pop(&mut self) {
        if let Some((_, d)) = self.items.pop_front() {
            self.bytes -= d.len();
        }
        if self.items.is_empty() {
            // Give the ring's memory back: an idle socket owns nothing.
            self.items = VecDeque::new();
        }
    }
}

/// A datagram socket and what the loop keeps for it.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub(crate) sock: DgramSocket,
    pub(crate) replies: ReplyQueue,
    /// Buffers for `recvmmsg`/`sendmmsg`, for UDP sockets when batching is on.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(crate) batch: Option<Box<Batch>>,
}

impl Datagram {
    pub(crate) fn new(sock: DgramSocket, batched: bool) -> Self {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let batch = (batched && sock.is_udp()).then(|| Box::new(Batch::new()));
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = batched;
        Datagram {
            sock,
            replies: ReplyQueue::default(),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            batch,
        }
    }

    /// The descriptor, for the batch calls.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        match &self.sock {
            DgramSocket::Udp(s) => s.as_raw_fd(),
            DgramSocket::Unix { sock, .. } => sock.as_raw_fd(),
        }
    }
}

/// One receive's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A datagram of this many bytes from this peer (the bytes are in the buffer).
    Datagram(usize, PeerAddr),
    /// Longer than the buffer (possible on Unix datagram sockets): dropped.
    Truncated(PeerAddr),
}

impl DgramSocket {
    /// Receives one datagram into `buf`.
    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<Received> {
        match self {
            DgramSocket::Udp(s) => {
                let (n, peer) = s.recv_from(buf)?;
                Ok(Received::Datagram(n, PeerAddr::Inet(peer)))
            }
            DgramSocket::Unix { sock, .. } => {
                // std's recv_from cannot tell a cut datagram from a whole one. With
                // MSG_TRUNC, Linux returns a Unix datagram's real length even when it
                // did not fit — and a Unix datagram can be longer than any UDP one.
                let flags = nix::sys::socket::MsgFlags::MSG_TRUNC.bits();
                let uninit: &mut [std::mem::MaybeUninit<u8>] =
                    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and socket2
                    // documents that `recv_from*` never writes uninitialised bytes into
                    // the buffer (it hands it straight to the system call), so the
                    // initialised bytes stay initialised.
                    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
                let (n, addr) = socket2::SockRef::from(sock).recv_from_with_flags(uninit, flags)?;
                let peer = PeerAddr::Unix(addr.as_pathname().map(Into::into));
                if n > buf.len() {
                    return Ok(Received::Truncated(peer));
                }
                Ok(Received::Datagram(n, peer))
            }
        }
    }

    /// Sends one datagram to `to`.
    pub(crate) fn send_to(&self, data: &[u8], to: &PeerAddr) -> io::Result<usize> {
        match (self, to) {
            (DgramSocket::Udp(s), PeerAddr::Inet(a)) => s.send_to(data, *a),
            (DgramSocket::Unix { sock, .. }, PeerAddr::Unix(Some(p))) => sock.send_to(data, p),
            (_, to) => Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("cannot send to {to}"),
            )),
        }
    }

    /// True for UDP, which the batch path serves on Linux.
    pub(crate) fn is_udp(&self) -> bool {
        matches!(self, DgramSocket::Udp(_))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use batch::Batch;

/// `recvmmsg` / `sendmmsg`: many datagrams per system call (Linux).
#[cfg(any(target_os = "linux", target_os = "android"))]
mod batch {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::RawFd;

    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

    use super::{BATCH, MAX_DATAGRAM};
    use crate::transport::PeerAddr;

    /// The headers and buffers for one batch in each direction, allocated once per
    /// socket. The receive buffers are [`BATCH`] × 64 KiB of address space, but pages are
    /// only touched by the datagrams that arrive, so small datagrams cost little memory.
    pub(crate) struct Batch {
        recv_headers: Headers,
        send_headers: Headers,
        bufs: Vec<u8>,
        /// What [`recv`](Self::recv) got: length and sender of each datagram.
        pub(crate) got: Vec<(usize, SockaddrStorage)>,
    }

    struct Headers(MultiHeaders<SockaddrStorage>);

    // SAFETY: `MultiHeaders` is not `Send` only because it holds raw pointers. They
    // point into allocations it owns (its address array) and move with it, or into
    // buffers that a single `recvmmsg`/`sendmmsg` call borrows and that are not used
    // after the call returns. Nothing is shared, so moving it to another thread is sound.
    unsafe impl Send for Headers {}

    impl std::fmt::Debug for Batch {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Batch")
                .field("got", &self.got.len())
                .finish()
        }
    }

    impl Batch {
        pub(crate) fn new() -> Self {
            Batch {
                recv_headers: Headers(MultiHeaders::preallocate(BATCH, None)),
                send_headers: Headers(MultiHeaders::preallocate(BATCH, None)),
                bufs: vec![0u8; BATCH * MAX_DATAGRAM],
                got: Vec::with_capacity(BATCH),
            }
        }

        /// Receives up to [`BATCH`] datagrams in one call; returns how many.
        pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
            self.got.clear();
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
                .bufs
                .chunks_mut(MAX_DATAGRAM)
                .map(|c| [IoSliceMut::new(c)])
                .collect();
            let results = recvmmsg(
                fd,
                &mut self.recv_headers.0,
                iovs.iter_mut(),
                MsgFlags::empty(),
                None,
            )
            .map_err(io::Error::from)?;
            for msg in results {
                if let Some(addr) = msg.address {
                    self.got.push((msg.bytes, addr));
                }
            }
            Ok(self.got.len())
        }

        /// The bytes of datagram `i` of the last [`recv`](Self::recv).
        pub(crate) fn datagram(&self, i: usize) -> &[u8] {
            let start = i * MAX_DATAGRAM;
            &self.bufs[start..start + self.got[i].0]
        }

        /// Sends `replies` (ranges of `arena`, with their destinations) in one call;
        /// returns how many the kernel took, in order.
        pub(crate) fn send(
            &mut self,
            fd: RawFd,
            arena: &[u8],
            replies: &[(usize, usize, SockaddrStorage)],
        ) -> io::Result<usize> {
            let slices: Vec<[IoSlice<'_>; 1]> = replies
                .iter()
                .map(|&(start, len, _)| [IoSlice::new(&arena[start..start + len])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = replies.iter().map(|r| Some(r.2)).collect();
            let sent = sendmmsg(
                fd,
                &mut self.send_headers.0,
                slices.iter(),
                addrs,
                [],
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            Ok(sent.count())
        }
    }

    /// The std form of a sender's address.
    pub(crate) fn peer(addr: &SockaddrStorage) -> PeerAddr {
        if let Some(a) = addr.as_sockaddr_in() {
            PeerAddr::Inet(SocketAddr::V4(SocketAddrV4::from(*a)))
        } else if let Some(a) = addr.as_sockaddr_in6() {
            PeerAddr::Inet(SocketAddr::V6(SocketAddrV6::from(*a)))
        } else {
            PeerAddr::Unix(addr.as_unix_addr().and_then(|u| u.path().map(Into::into)))
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use batch::peer as peer_of;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_queue_is_bounded_by_count_and_bytes() {
        let mut q = ReplyQueue::default();
        let to = PeerAddr::Inet("127.0.0.1:9".parse().unwrap());
        assert!(q.push(to.clone(), &[1; 10], 2, 100));
        assert!(q.push(to.clone(), &[2; 10], 2, 100));
        assert!(!q.push(to.clone(), &[3; 10], 2, 100), "count limit");
        q.pop();
        assert!(!q.push(to.clone(), &[3; 95], 2, 100), "byte limit");
        assert!(q.push(to.clone(), &[3; 90], 2, 100));
        assert_eq!(q.front().unwrap().1[0], 2);
        q.pop();
        q.pop();
        assert!(q.is_empty());
    }

    #[test]
    fn service_ports_are_unsafe_sources() {
        for port in [0, 7, 13, 19, 37] {
            assert!(is_unsafe_source(&PeerAddr::Inet(
                format!("127.0.0.1:{port}").parse().unwrap()
            )));
        }
        assert!(!is_unsafe_source(&PeerAddr::Inet(
            "127.0.0.1:40000".parse().unwrap()
        )));
        assert!(!is_unsafe_source(&PeerAddr::Unix(None)));
    }
}
