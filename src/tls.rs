//! TLS as a layer between the socket and the service, on rustls.
//!
//! rustls does no I/O of its own: it is a state machine fed with bytes read from the
//! socket (`read_tls`), told to decrypt them (`process_new_packets`), and drained of
//! the records it wants sent (`write_tls`). That makes it fit a readiness loop exactly:
//! `TlsStream` does those steps inside `read` and `write`, so that to the loop and to
//! every service a TLS connection is one more `Stream` that
//! reads and writes plaintext, and returns `WouldBlock` when the socket does.
//!
//! # The steps, non-blocking
//! - **Reading.** One `read` of the socket into the thread's ciphertext buffer (one per
//!   thread, shared by every connection, like the loop's plaintext buffer), fed to
//!   rustls a record's worth at a time; each feed is followed by
//!   `process_new_packets`, whose plaintext is copied out to the caller. It stops when
//!   the caller's buffer is full or the socket has no more (a short read or
//!   `WouldBlock`, as for plain TCP); ciphertext not yet fed when the caller's buffer
//!   filled stays with the connection for its next read. Whatever the handshake wants
//!   to say in return is written at once.
//! - **A bad record or a failed handshake.** `process_new_packets` fails and queues an
//!   alert that says why; the alert is written (best effort) and the read fails, so
//!   the loop closes that one connection.
//! - **Writing.** Until the handshake is over a write is `WouldBlock`: the loop queues
//!   the bytes and writes them once the handshake completes. After it, plaintext is
//!   encrypted through `writer()` and the records written with `write_tls` until the
//!   socket is full. rustls holds at most [`TLS_BUFFER_LIMIT`] bytes of records; past
//!   that a write is short and the loop's own queue — with its backpressure and its
//!   slow-consumer limit — takes the rest, so a slow reader cannot grow memory here.
//! - **Closing.** `TlsStream::shutdown_write` sends `close_notify` before the TCP
//!   FIN, on an orderly close and on a half-close alike; a peer's `close_notify` reads
//!   as end of file.
//!
//! The provider is *ring*: it builds with a C compiler alone (aws-lc-rs needs cmake),
//! and its AES-GCM and ChaCha20 are as fast on x86-64 and aarch64.

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::sync::Arc;

use log::debug;
use mio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub use rustls;

/// Most bytes of encrypted records rustls may hold for one connection before a write
/// is cut short (its `set_buffer_limit`); the rest waits in the loop's own queue.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// The ciphertext read buffer: room for a few maximum-size records (16 KiB + 325 B
/// each), so one `read` call usually takes all the socket holds.
const RX_SIZE: usize = 64 * 1024;

thread_local! {
    /// Where ciphertext lands when it is read from a socket, before rustls takes it:
    /// one buffer per thread, shared by every TLS connection on it, as the loop's
    /// plaintext buffer is (a loop reads one connection at a time). A connection keeps
    /// ciphertext of its own only when the reader's buffer filled before all of it
    /// was decrypted.
    static CIPHERTEXT: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; RX_SIZE].into_boxed_slice());
}

/// The crypto provider every configuration here is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// Reads a PEM certificate chain (one or more `CERTIFICATE` blocks).
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read certificate {}: {e}", path.display()),
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad certificate file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "no certificate in {} (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1: the first one in the file).
pub fn load_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    let pem = fs::read(path).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot read key {}: {e}", path.display()))
    })?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(format!("no usable private key in {}: {e}", path.display())))
}

/// Reads CA certificates into a trust store.
fn load_roots(path: &Path) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("bad CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The server side of `tls://` listeners, from PEM files: the certificate chain and its
/// key, and, for mutual TLS, the CA that client certificates must be signed by (a
/// client without one is refused during the handshake).
///
/// Fails, naming the file, when a file is missing or unreadable, holds no certificate
/// or key, or when the key does not belong to the certificate.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> io::Result<Arc<ServerConfig>> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key_der).map_err(|e| {
        invalid(format!(
            "certificate {} and key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// The client side: which servers to trust and, for mutual TLS, the certificate to
/// show. `ca: None` trusts the system's roots.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> io::Result<Arc<ClientConfig>> {
    let roots = match ca {
        Some(path) => load_roots(path)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                invalid(format!(
                    "certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
    };
    Ok(Arc::new(config))
}

fn system_roots() -> io::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no system root certificates found{why}; give --ca FILE"),
        ));
    }
    Ok(roots)
}

/// What a client needs to open TLS connections: the configuration and the name the
/// server's certificate must carry.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// A client that checks the server's certificate against `server_name` (a DNS name
    /// or an IP address).
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> io::Result<TlsClient> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| invalid(format!("server name '{server_name}': {e}")))?;
        Ok(TlsClient {
            config,
            server_name,
        })
    }

    /// The same client with session resumption turned off, so that every connection
    /// makes a full handshake (certificate checks and key exchange included). By
    /// default a client resumes the session it had, as most TLS clients do.
    pub fn without_resumption(mut self) -> TlsClient {
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::disabled();
        self.config = Arc::new(config);
        self
    }

    /// Starts the client side of a handshake over a connecting (or connected) socket.
    pub(crate) fn wrap(&self, tcp: TcpStream) -> io::Result<TlsStream> {
        let conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| io::Error::other(format!("TLS client: {e}")))?;
        Ok(TlsStream::new(tcp, conn.into()))
    }
}

/// A TCP socket with a rustls session on it, read and written as plaintext.
pub(crate) struct TlsStream {
    pub(crate) tcp: TcpStream,
    tls: Connection,
    /// Ciphertext read from the socket and not yet fed to rustls, left over when the
    /// reader's buffer filled first. Usually empty and unallocated.
    rx: Vec<u8>,
    /// The peer's end of input was seen (`close_notify`, or a FIN): the next read
    /// returns 0 without touching the socket.
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

    /// True once, right after a read completed the handshake: the caller may now write
    /// what it queued meanwhile (no writable edge will come to say so).
    pub(crate) fn take_established(&mut self) -> bool {
        std::mem::take(&mut self.newly_established)
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

    /// True when a read would return at once without new input from the socket (the
    /// end of input is known): the loop must not take a short read as "drained".
    pub(crate) fn has_buffered_input(&self) -> bool {
        self.eof || !self.rx.is_empty()
    }

    /// Writes queued records until none are left (`Ok(true)`) or the socket is full
    /// (`Ok(false)`).
    pub(crate) fn flush_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.explain(e)),
            }
        }
        Ok(true)
    }

    /// A write failed (the peer reset or closed the connection): if the peer sent an
    /// alert before it went, that alert is the reason to report, not "broken pipe".
    /// In TLS 1.3 this is how a client learns that the server refused its certificate:
    /// its own handshake finished before the server's verdict arrived.
    fn explain(&mut self, e: io::Error) -> io::Error {
        let mut buf = [0u8; 4096];
        loop {
            match self.tcp.read(&mut buf) {
                Ok(0) | Err(_) => return e,
                Ok(n) => {
                    let mut input = &buf[..n];
                    while !input.is_empty() {
                        if !matches!(self.tls.read_tls(&mut input), Ok(k) if k > 0) {
                            return e;
                        }
                        if let Err(alert) = self.tls.process_new_packets() {
                            return io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("TLS error: {alert}"),
                            );
                        }
                    }
                }
            }
        }
    }

    /// Sends `close_notify` (once), writes every queued record, then shuts down the
    /// TCP write side. `WouldBlock` while records still wait for the socket: call again
    /// when it is writable.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.close_sent {
            self.close_sent = true;
            self.tls.send_close_notify();
        }
        if self.flush_records()? {
            self.tcp.shutdown(Shutdown::Write)
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Lets rustls decrypt what it was fed and answer it. On failure the alert rustls
    /// queued is sent, best effort, so the peer learns why.
    fn process(&mut self) -> io::Result<()> {
        let handshaking = self.tls.is_handshaking();
        match self.tls.process_new_packets() {
            Ok(_) => {
                if handshaking && !self.tls.is_handshaking() {
                    self.newly_established = true;
                }
                if self.tls.wants_write() {
                    self.flush_records()?;
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.flush_records();
                let what = if handshaking {
                    "TLS handshake failed"
                } else {
                    "TLS error"
                };
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{what}: {e}"),
                ))
            }
        }
    }

    /// Hands decrypted plaintext to `buf[*filled..]`.
    fn drain_plaintext(&mut self, buf: &mut [u8], filled: &mut usize) -> io::Result<Plain> {
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
                Err(e) => return Err(e),
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
    ) -> io::Result<(usize, bool)> {
        let mut taken = 0;
        loop {
            if self.drain_plaintext(buf, filled)? != Plain::More {
                return Ok((taken, true));
            }
            if taken == input.len() {
                return Ok((taken, false));
            }
            let mut rest = &input[taken..];
            let n = self.tls.read_tls(&mut rest)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS error: undecodable record",
                ));
            }
            taken += n;
            self.process()?;
        }
    }

    /// Reads the socket once into the thread's ciphertext buffer and feeds it to
    /// rustls. `Ok(true)` when the reader must stop: its buffer is full, the input
    /// ended, or the read was short (the socket is drained).
    fn read_socket(&mut self, buf: &mut [u8], filled: &mut usize) -> io::Result<bool> {
        CIPHERTEXT.with_borrow_mut(|scratch| {
            let n = loop {
                match self.tcp.read(scratch) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // Tell rustls about the FIN: it then reports a close without
                // close_notify as UnexpectedEof, not WouldBlock.
                let _ = self.tls.read_tls(&mut io::empty());
                self.process()?;
                self.drain_plaintext(buf, filled)?;
                self.eof = true;
                return Ok(true);
            }
            let (taken, stop) = self.feed(&scratch[..n], buf, filled)?;
            if taken < n {
                self.rx = scratch[taken..n].to_vec();
            }
            Ok(stop || n < scratch.len())
        })
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

impl Read for TlsStream {
    /// Plaintext, as much as fits in `buf` or the socket has. A short read means the
    /// socket is drained, as for TCP, unless [`TlsStream::has_buffered_input`] says
    /// otherwise.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        // What is left from last time first: plaintext rustls holds, then ciphertext.
        let rx = std::mem::take(&mut self.rx);
        let (taken, stop) = self.feed(&rx, buf, &mut filled)?;
        if stop {
            if taken < rx.len() {
                self.rx = rx[taken..].to_vec();
            }
            return Ok(filled);
        }
        loop {
            match self.read_socket(buf, &mut filled) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if filled == 0 && !self.eof {
            // Nothing for the caller (handshake records only, or nothing at all):
            // the socket is drained.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(filled)
    }
}

impl Write for TlsStream {
    /// Encrypts and sends as much of `buf` as the socket takes now. `WouldBlock` during
    /// the handshake and when the socket is full with nothing taken.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_handshaking() || !self.flush_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        while taken < buf.len() {
            let n = self.tls.writer().write(&buf[taken..])?;
            taken += n;
            // Records that do not fit the socket stay with rustls (at most
            // TLS_BUFFER_LIMIT): the write is reported short, and the next writable
            // event sends them.
            if !self.flush_records()? || n == 0 {
                break;
            }
        }
        Ok(taken)
    }

    /// Each slice in turn, stopping at the first the socket does not take whole: a
    /// short result then means the socket is full, as with `writev`.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            if b.is_empty() {
                continue;
            }
            match self.write(b) {
                Ok(n) => {
                    total += n;
                    if n < b.len() {
                        break;
                    }
                }
                Err(e) if total > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
