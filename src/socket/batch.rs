//! `recvmmsg` / `sendmmsg`: many datagrams per system call (Linux), for UDP sockets.
//!
//! A batch is [`BATCH`] buffers of [`MAX_DATAGRAM`] bytes and the message headers the
//! kernel fills in, allocated once per socket. Result `k` of a receive always belongs
//! to buffer `k`, whether or not it came with an address that can be answered: the
//! caller drops what it cannot answer, but the positions never shift.
//!
//! Only internet addresses are reported. A Unix datagram socket's sender may have no
//! address at all, and `nix` does not say how long the address the kernel wrote was,
//! so the loop receives Unix datagrams one at a time with `recv_from` instead.

#![cfg(any(target_os = "linux", target_os = "android"))]

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::sys::socket::{
    AddressFamily, MsgFlags, MultiHeaders, SockaddrLike, SockaddrStorage, recvmmsg, sendmmsg,
};

use crate::transport::PeerAddr;

/// Datagrams received (and answered) per `recvmmsg` / `sendmmsg` call.
pub(crate) const BATCH: usize = 32;

/// Room for any UDP datagram: the largest payload is 65,507 bytes over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 64 * 1024;

/// The headers and buffers for one batch in each direction. The receive buffers are
/// [`BATCH`] × 64 KiB of address space, but pages are only touched by the datagrams
/// that arrive, so small datagrams cost little memory.
pub(crate) struct Batch {
    recv_headers: Headers,
    send_headers: Headers,
    bufs: Vec<u8>,
    /// What [`recv`](Self::recv) got, one entry per datagram in buffer order: its
    /// length and its sender, if the kernel named one.
    got: Vec<(usize, Option<SockaddrStorage>)>,
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
        // An address the kernel did not write (a sender without one) keeps whatever the
        // header held before: only an internet address is taken as real.
        self.got.extend(results.map(|msg| {
            let addr = msg
                .address
                .filter(|a| matches!(a.family(), Some(AddressFamily::Inet | AddressFamily::Inet6)));
            (msg.bytes, addr)
        }));
        Ok(self.got.len())
    }

    /// Datagram `i` of the last [`recv`](Self::recv): its bytes, and its sender (`None`
    /// when it has no address to answer).
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], Option<SockaddrStorage>) {
        let (len, addr) = self.got[i];
        let start = i * MAX_DATAGRAM;
        (&self.bufs[start..start + len], addr)
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
pub(crate) fn peer_of(addr: &SockaddrStorage) -> PeerAddr {
    if let Some(a) = addr.as_sockaddr_in() {
        PeerAddr::Inet(SocketAddr::V4(SocketAddrV4::from(*a)))
    } else if let Some(a) = addr.as_sockaddr_in6() {
        PeerAddr::Inet(SocketAddr::V6(SocketAddrV6::from(*a)))
    } else {
        PeerAddr::Unix(addr.as_unix_addr().and_then(|u| u.path().map(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    /// A datagram without an address must not shift the results: the one after it is
    /// still found in its own buffer. (Unix datagram sockets are the only way to send
    /// one: a socket that never bound a path has no address. The batch reports no
    /// address for either, as it reports only internet addresses.)
    #[test]
    fn a_datagram_without_an_address_keeps_its_place() {
        let dir = std::env::temp_dir().join(format!("sockloop-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (server_path, named_path) = (dir.join("server"), dir.join("named"));
        let _ = std::fs::remove_file(&server_path);
        let _ = std::fs::remove_file(&named_path);
        let server = UnixDatagram::bind(&server_path).unwrap();
        server.set_nonblocking(true).unwrap();
        let unnamed = UnixDatagram::unbound().unwrap();
        let named = UnixDatagram::bind(&named_path).unwrap();
        unnamed.send_to(b"from nobody", &server_path).unwrap();
        named.send_to(b"from named", &server_path).unwrap();

        let mut batch = Batch::new();
        let n = batch.recv(server.as_raw_fd()).unwrap();
        assert_eq!(n, 2, "both datagrams are results, addressed or not");
        let (first, from) = batch.datagram(0);
        assert_eq!(first, b"from nobody");
        assert!(
            from.is_none(),
            "no address was written for an unnamed sender"
        );
        let (second, from) = batch.datagram(1);
        assert_eq!(second, b"from named");
        assert!(from.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// UDP datagrams come with their sender, each in its own place.
    #[test]
    fn udp_datagrams_come_with_their_senders() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let to = server.local_addr().unwrap();
        let clients: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(format!("datagram {i}").as_bytes(), to).unwrap();
        }
        let mut batch = Batch::new();
        assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 3);
        for (i, c) in clients.iter().enumerate() {
            let (data, from) = batch.datagram(i);
            assert_eq!(data, format!("datagram {i}").as_bytes());
            assert_eq!(
                peer_of(&from.expect("a UDP sender has an address")),
                PeerAddr::Inet(c.local_addr().unwrap())
            );
        }
    }
}
