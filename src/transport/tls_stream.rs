//! TLS as a non-blocking stream, on rustls: the TLS variant of [`Transport`](super::Transport).
//!
//! rustls does no I/O of its own: it is a state machine fed with bytes read from the
//! socket (`read_tls`), told to decrypt them (`process_new_packets`), and drained of
//! the records it wants sent (`write_tls`). That makes it fit a readiness loop exactly:
//! `TlsStream` does those steps inside `read` and `write`, so that to the connection
//! above it a TLS connection reads and writes plaintext and answers in the same
//! [`Io`] as a plain socket. (Configuration — certificates, keys, trust — is in
//! [`crate::tls`].)
//!
//! # The steps, non-blocking
//! - **Reading.** One `read` of the socket into the thread's ciphertext buffer (one per
//!   thread, shared by every connection, like the loop's plaintext buffer), fed to
//!   rustls a record's worth at a time; each feed is followed by
//!   `process_new_packets`, whose plaintext is copied out to the caller. It stops when
//!   the caller's buffer is full or the socket has no more (a short read or
//!   `WouldBlock`, as for plain TCP); ciphertext not yet fed when the caller's buffer
//!   filled stays with the connection for its next read, and the read then says
//!   [`Status::Continue`] — more is there without the socket. Whatever the handshake
//!   wants to say in return is written at once.
//! - **A bad record or a failed handshake.** `process_new_packets` fails and queues an
//!   alert that says why; the alert is written (best effort) and the read says
//!   [`Fault::Tls`], so the loop closes that one connection and counts it as a TLS
//!   error, not a socket error.
//! - **Writing.** Until the handshake is over a write says [`Status::Handshaking`]: no
//!   system call is made, and the connection queues the bytes until the handshake
//!   completes. After it, plaintext is encrypted through `writer()` and the records
//!   written with `write_tls` until the socket is full. rustls holds at most
//!   [`TLS_BUFFER_LIMIT`](crate::tls::TLS_BUFFER_LIMIT) bytes of records; past that a
//!   write is cut short and the connection's own queue — with its backpressure and its
//!   slow-consumer limit — takes the rest, so a slow reader cannot grow memory here.
//! - **Closing.** `shutdown_write` sends `close_notify` before the TCP FIN, on an
//!   orderly close and on a half-close alike; a peer's `close_notify` reads as end of
//!   file.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use log::debug;
use mio::net::TcpStream;
use rustls::{Connection, ServerConfig};

use super::{Fault, Io, Status};
use crate::sys::retry;
use crate::tls::{TLS_BUFFER_LIMIT, TlsInfo};

/// The ciphertext read buffer: room for a few maximum-size records (16 KiB + 325 B
/// each), so one `read` call usually takes all the socket holds.
const RX_SIZE: usize = 64 * 1024;

thread_local! {
    /// Where ciphertext lands when it is read from a socket, before rustls takes it:
    /// one buffer per thread, shared by every TLS connection on it, as the loop's
    /// plaintext buffer is (a loop reads one connection at a time). A connection keeps
    /// ciphertext of its own only when the reader's buffer filled before all of it
    /// was decrypted.
    static CIPHERTEXT: RefCell<Box<[u8]>> = RefCell::new(vec![0; RX_SIZE].into_boxed_slice());
}

/// A TCP socket with a rustls session on it, read and written as plaintext.
pub(crate) struct TlsStream {
    pub(crate) tcp: TcpStream,
    tls: Connection,
    /// Ciphertext read from the socket and not yet fed to rustls, left over when the
    /// reader's buffer filled first. Usually empty and unallocated.
    rx: Vec<u8>,
    /// The peer's end of input was seen (`close_notify`, or a FIN): the next read
    /// returns [`Status::Closed`] without touching the socket.
    eof: bool,
    /// `close_notify` queued.
    close_sent: bool,
    /// The handshake completed and nobody has asked yet (see [`Self::take_established`]).
    newly_established: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("handshaking", &self.tls.is_handshaking())
            .finish_non_exhaustive()
    }
}

/// What [`TlsStream::drain_plaintext`] left: the reader's buffer full, the input at its
/// end, or rustls wanting more ciphertext.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plain {
    Full,
    Eof,
    More,
}

fn tls_fault(what: impl std::fmt::Display) -> Fault {
    Fault::Tls(format!("TLS error: {what}"))
}

impl TlsStream {
    /// A stream over `tcp` speaking through `tls`.
    pub(crate) fn new(tcp: TcpStream, mut tls: Connection) -> TlsStream {
        tls.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        TlsStream {
            tcp,
            tls,
            rx: Vec::new(),
            eof: false,
            close_sent: false,
            newly_established: false,
        }
    }

    /// The server side of a handshake over an accepted socket.
    pub(crate) fn accept(tcp: TcpStream, config: &Arc<ServerConfig>) -> io::Result<TlsStream> {
        // A failure concerns this connection only: the accept loop goes on.
        let conn = rustls::ServerConnection::new(config.clone()).map_err(|e| {
            io::Error::new(io::ErrorKind::ConnectionAborted, format!("TLS server: {e}"))
        })?;
        Ok(TlsStream::new(tcp, conn.into()))
    }

    /// True until the handshake has completed.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// True once, right after a read completed the handshake.
    pub(crate) fn take_established(&mut self) -> bool {
        std::mem::take(&mut self.newly_established)
    }

    /// What the handshake settled and the client's certificate, for a service that
    /// asks (see [`TlsInfo`]); `None` while the handshake is under way.
    pub(crate) fn info(&self) -> Option<TlsInfo> {
        TlsInfo::of(&self.tls)
    }

    /// The negotiated protocol version and cipher suite, for the log.
    pub(crate) fn describe(&self) -> String {
        let version = self
            .tls
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "no version".into());
        let suite = self
            .tls
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "no cipher suite".into());
        format!("{version}, {suite}")
    }

    /// Ciphertext read from the socket by someone else (the PROXY header reader, whose
    /// read took the start of the handshake with the header): the next read feeds it
    /// to rustls before reading the socket.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
    }

    /// True while rustls holds records that did not fit the socket.
    pub(crate) fn holds_output(&self) -> bool {
        self.tls.wants_write()
    }

    /// Writes held records until none are left (`Ok(true)`) or the socket is full
    /// (`Ok(false)`), counting the system calls.
    fn write_records(&mut self, writes: &mut u32) -> io::Result<bool> {
        while self.tls.wants_write() {
            *writes += 1;
            match retry(|| self.tls.write_tls(&mut self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes held records: [`Status::Continue`] once none are left, `WouldBlock`
    /// while the socket is full.
    pub(crate) fn flush_records(&mut self) -> Io {
        let mut io = Io::idle();
        io.status = match self.write_records(&mut io.writes) {
            Ok(true) => Status::Continue,
            Ok(false) => Status::WouldBlock,
            Err(e) => Status::Failed(self.explain(e, &mut io.reads)),
        };
        io
    }

    /// A write failed (the peer reset or closed the connection): if the peer sent an
    /// alert before it went, that alert is the reason to report, not "broken pipe".
    /// In TLS 1.3 this is how a client learns that the server refused its certificate:
    /// its own handshake finished before the server's verdict arrived.
    fn explain(&mut self, e: io::Error, reads: &mut u32) -> Fault {
        let mut buf = [0u8; 4096];
        loop {
            *reads += 1;
            match self.tcp.read(&mut buf) {
                Ok(0) | Err(_) => return Fault::Socket(e),
                Ok(n) => {
                    let mut input = &buf[..n];
                    while !input.is_empty() {
                        if !matches!(self.tls.read_tls(&mut input), Ok(k) if k > 0) {
                            return Fault::Socket(e);
                        }
                        if let Err(alert) = self.tls.process_new_packets() {
                            return tls_fault(alert);
                        }
                    }
                }
            }
        }
    }

    /// Sends `close_notify` (once), writes every held record, then shuts down the TCP
    /// write side. `WouldBlock` while records still wait for the socket: call again
    /// when it is writable.
    pub(crate) fn shutdown_write(&mut self) -> Io {
        if !self.close_sent {
            self.close_sent = true;
            self.tls.send_close_notify();
        }
        let mut io = self.flush_records();
        if matches!(io.status, Status::Continue) {
            if let Err(e) = self.tcp.shutdown(Shutdown::Write) {
                io.status = Status::Failed(Fault::Socket(e));
            }
        }
        io
    }

    /// Lets rustls decrypt what it was fed and answer it. On failure the alert rustls
    /// queued is sent, best effort, so the peer learns why.
    fn process(&mut self, writes: &mut u32) -> Result<(), Fault> {
        let handshaking = self.tls.is_handshaking();
        match self.tls.process_new_packets() {
            Ok(_) => {
                if handshaking && !self.tls.is_handshaking() {
                    self.newly_established = true;
                }
                self.write_records(writes).map_err(Fault::Socket)?;
                Ok(())
            }
            Err(e) => {
                let _ = self.write_records(writes);
                Err(if handshaking {
                    Fault::Tls(format!("TLS handshake failed: {e}"))
                } else {
                    tls_fault(e)
                })
            }
        }
    }

    /// Hands decrypted plaintext to `buf[*filled..]`.
    fn drain_plaintext(&mut self, buf: &mut [u8], filled: &mut usize) -> Result<Plain, Fault> {
        while *filled < buf.len() {
            match self.tls.reader().read(&mut buf[*filled..]) {
                // The peer's close_notify: end of input.
                Ok(0) => {
                    self.eof = true;
                    return Ok(Plain::Eof);
                }
                Ok(n) => *filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Plain::More),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // A FIN without close_notify. For an echo server that is still end
                    // of input (many clients close that way); a truncation attack has
                    // nothing to gain against a server that only sends back.
                    if !self.eof {
                        debug!("TLS peer closed without close_notify");
                    }
                    self.eof = true;
                    return Ok(Plain::Eof);
                }
                Err(e) => return Err(tls_fault(e)),
            }
        }
        Ok(Plain::Full)
    }

    /// Feeds `input` to rustls, a record's worth at a time, handing the plaintext to
    /// `buf`. Returns how much of `input` was taken, and whether the reader must stop
    /// (its buffer is full, or the input ended).
    fn feed(
        &mut self,
        input: &[u8],
        buf: &mut [u8],
        filled: &mut usize,
        writes: &mut u32,
    ) -> Result<(usize, bool), Fault> {
        let mut taken = 0;
        loop {
            if self.drain_plaintext(buf, filled)? != Plain::More {
                return Ok((taken, true));
            }
            if taken == input.len() {
                return Ok((taken, false));
            }
            let mut rest = &input[taken..];
            let n = self.tls.read_tls(&mut rest).map_err(tls_fault)?;
            if n == 0 {
                return Err(tls_fault("undecodable record"));
            }
            taken += n;
            self.process(writes)?;
        }
    }

    /// Plaintext, as much as fits in `buf` or the socket has.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Io {
        let mut io = Io::idle();
        if buf.is_empty() {
            return io;
        }
        match self.read_into(buf, &mut io) {
            Ok(socket) => {
                // Decrypted bytes already waiting (a full buffer, leftover ciphertext,
                // or the end of input behind the data) mean another read has something
                // without the socket: say Continue, whatever the socket said.
                io.status = if io.bytes > 0 && (socket.is_none() || self.eof || !self.rx.is_empty())
                {
                    Status::Continue
                } else if io.bytes == 0 && self.eof {
                    Status::Closed
                } else {
                    socket.unwrap_or(Status::Continue)
                };
            }
            Err(f) => io.status = Status::Failed(f),
        }
        io
    }

    /// Fills `buf` from leftover ciphertext, then from the socket. Returns how the last
    /// socket read ended (`Drained` or `WouldBlock`), or `None` when it stopped because
    /// the buffer filled or the input ended.
    fn read_into(&mut self, buf: &mut [u8], io: &mut Io) -> Result<Option<Status>, Fault> {
        let mut filled = 0;
        // What is left from last time first: plaintext rustls holds, then ciphertext.
        let rx = std::mem::take(&mut self.rx);
        let fed = self.feed(&rx, buf, &mut filled, &mut io.writes);
        io.bytes = filled;
        let (taken, stop) = fed?;
        if stop {
            if taken < rx.len() {
                self.rx = rx[taken..].to_vec();
            }
            return Ok(None);
        }
        CIPHERTEXT.with_borrow_mut(|scratch| {
            loop {
                io.reads += 1;
                let n = match retry(|| self.tcp.read(scratch)) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Some(Status::WouldBlock));
                    }
                    Err(e) => return Err(Fault::Socket(e)),
                };
                if n == 0 {
                    // Tell rustls about the FIN: it then reports a close without
                    // close_notify as UnexpectedEof, not WouldBlock.
                    let _ = self.tls.read_tls(&mut io::empty());
                    self.process(&mut io.writes)?;
                    self.drain_plaintext(buf, &mut filled)?;
                    io.bytes = filled;
                    self.eof = true;
                    return Ok(None);
                }
                let fed = self.feed(&scratch[..n], buf, &mut filled, &mut io.writes);
                io.bytes = filled;
                let (taken, stop) = fed?;
                if taken < n {
                    self.rx = scratch[taken..n].to_vec();
                }
                if stop {
                    return Ok(None);
                }
                if n < scratch.len() {
                    // A short read: the socket is drained, as for plain TCP.
                    return Ok(Some(Status::Drained));
                }
            }
        })
    }

    /// Encrypts and sends as much of `parts` as the socket takes now, in order.
    pub(crate) fn write(&mut self, parts: &[&[u8]]) -> Io {
        if self.tls.is_handshaking() {
            let mut io = Io::idle();
            io.status = Status::Handshaking;
            return io;
        }
        // Records held back from an earlier write are older: they go first, and while
        // some still wait the socket is full.
        let mut io = self.flush_records();
        if !matches!(io.status, Status::Continue) {
            return io;
        }
        for part in parts {
            let mut taken = 0;
            while taken < part.len() {
                let n = match self.tls.writer().write(&part[taken..]) {
                    Ok(n) => n,
                    Err(e) => {
                        io.status = Status::Failed(tls_fault(e));
                        return io;
                    }
                };
                taken += n;
                io.bytes += n;
                // Records that do not fit the socket stay with rustls (at most
                // TLS_BUFFER_LIMIT): the write ends here, and the next writable event
                // sends them.
                let flushed = self.flush_records();
                io.reads += flushed.reads;
                io.writes += flushed.writes;
                match flushed.status {
                    Status::Continue if n > 0 => {}
                    Status::Continue => {
                        io.status = Status::WouldBlock;
                        return io;
                    }
                    other => {
                        io.status = other;
                        return io;
                    }
                }
            }
        }
        io
    }
}
