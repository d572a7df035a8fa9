//! # sockloop
//!
//! An event-loop server on raw readiness polling: one [`mio::Poll`] on one thread, a
//! [`slab`] of connection states, and partial reads and writes buffered by hand — the
//! guarantee of Python's `socket.sendall`, built on non-blocking sockets. TCP, UDP,
//! TLS and Unix-domain sockets, served side by side by one loop.
//!
//! This page is a guide as much as a reference: after a first server and a protocol of
//! your own, it explains how the loop works, in the names the code uses.
//!
//! ## A first server
//!
//! ```
//! use sockloop::{Builder, services::Echo};
//!
//! let mut server = Builder::new()
//!     .listen("tcp://127.0.0.1:0".parse()?) // port 0: any free port
//!     .listen("udp://127.0.0.1:0".parse()?)
//!     .build(Echo)?;
//! println!("listening {}", server.local_addrs()[0]);
//!
//! // A Send + Clone handle stops the loop from any thread (here, at once).
//! let handle = server.handle();
//! std::thread::spawn(move || handle.shutdown());
//! let stats = server.run()?; // returns when the shutdown has finished
//! assert_eq!(stats.active, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`EventLoop::run`] serves until a shutdown; [`EventLoop::turn`] runs one step, for a
//! program with a loop of its own. [`Builder::build_workers`] makes one loop per
//! thread ([`Workers`]); [`Builder::listen_socket`] serves sockets you bound yourself.
//!
//! ## A protocol of your own
//!
//! A protocol is a [`Service`]: callbacks the loop makes when something happens to a
//! connection, with a [`Context`] to answer through. It never sees a socket, so the
//! same service runs over TCP, TLS and Unix sockets. Here is a complete one, which
//! answers every line with its length:
//!
//! ```
//! use sockloop::{Builder, Context, Service};
//!
//! struct Measure;
//!
//! impl Service for Measure {
//!     /// Per connection: the line begun but not yet ended.
//!     type State = Vec<u8>;
//!
//!     fn open(&mut self, _ctx: &mut Context<'_>) -> Vec<u8> {
//!         Vec::new() // allocates nothing until needed
//!     }
//!
//!     fn data(&mut self, partial: &mut Vec<u8>, data: &[u8], ctx: &mut Context<'_>) {
//!         // Bytes come in chunks of any size: a line may be split over two calls.
//!         for &b in data {
//!             if b == b'\n' {
//!                 ctx.write(format!("{}\n", partial.len()).as_bytes());
//!                 partial.clear();
//!             } else if partial.len() < 1024 {
//!                 partial.push(b);
//!             }
//!         }
//!     }
//! }
//!
//! # use std::io::{Read, Write};
//! let mut server = Builder::new().listen("tcp://127.0.0.1:0".parse()?).build(Measure)?;
//! let addr = server.local_addrs()[0].host_port().unwrap().resolve()?[0];
//! let handle = server.handle();
//! let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
//!     let mut s = std::net::TcpStream::connect(addr)?;
//!     s.write_all(b"hello\nsockloop\n")?;
//!     s.shutdown(std::net::Shutdown::Write)?;
//!     let mut answer = Vec::new();
//!     s.read_to_end(&mut answer)?;
//!     handle.shutdown()?;
//!     Ok(answer)
//! });
//! server.run()?;
//! assert_eq!(client.join().unwrap()?, b"5\n8\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The built-in modes in [`services`] are written the same way, with no special access:
//! echo and line answer what they read, chat writes to *other* connections with
//! [`Context::write_to`], and chargen produces output on its own through
//! [`Service::writable`].
//!
//! ## How a readiness loop works
//!
//! If you know Python's socket API, you know the blocking model: `s.recv(4096)` waits
//! until bytes arrive, `s.sendall(data)` waits until the kernel has taken all of it,
//! and a server serves many clients with a thread per client. A readiness loop serves
//! them all from one thread, and for that it must never wait on any one socket. Every
//! socket is non-blocking: where a blocking call would wait, the call fails at once
//! with `EAGAIN`, which Rust reports as [`std::io::ErrorKind::WouldBlock`]. The loop
//! asks the kernel which sockets are *ready* — have bytes to read, or room to write —
//! and only then calls them. The rest of this section is what that takes to get right;
//! it is the one explanation of these rules, and the code links here.
//!
//! ### One turn
//!
//! [`EventLoop::turn`] is one step: `poll` (Linux `epoll_wait`) sleeps until a socket is
//! ready or the next deadline (an idle timeout) is due, then each readiness event is
//! dispatched — accept on a listener, receive on a datagram socket, or read and write
//! on a connection — then deadlines are acted on. [`EventLoop::run`] is turns until a
//! shutdown has finished.
//!
//! Each socket is registered *once*, when it is bound or accepted, with a `mio::Token`:
//! one machine word the kernel hands back with every event. Connections and datagram
//! sockets register for readable and writable interest together; stream listeners,
//! which are only ever read from (accepted), for readable alone. A connection's token
//! holds its slot in the loop's table and its accept sequence number. Registering once
//! means there is no `epoll_ctl` call per message; the price is that the loop must
//! keep track itself of what each socket is ready for, and what it still wants.
//!
//! ### Edge-triggered readiness, kept as flags
//!
//! mio's readiness is *edge-triggered*: an event says "this socket became readable",
//! once, not "this socket is readable" at every poll while it stays so. If the loop
//! read only part of what was waiting and went back to `poll`, it would never hear of
//! the rest. So the loop keeps what events said as *flags* (readable, writable, and
//! "the peer's FIN is queued"), and clears a flag only when a call shows it is no
//! longer true: a read or write that returns `WouldBlock`, or comes back short — on a
//! stream socket, a short read means the kernel's queue was just emptied, and data
//! arriving later raises a new edge, so the extra read that would only say
//! `WouldBlock` is skipped. (Unless the FIN flag is set: then the end-of-file is
//! waiting behind the data, no edge will announce it, and the loop reads on.)
//!
//! What a connection *wants* — to read, to write what it owes, to shut down, to
//! produce — is worked out from its state each time (`Conns::next_step` in
//! `conn/mod.rs`), and the loop does the next thing the flags allow, until they allow
//! nothing more. That one rule covers the cases a readiness loop otherwise handles one
//! by one:
//!
//! - **Budgets.** Reading until drained lets one fast sender starve everyone else, so
//!   each connection gets a budget per turn ([`Config::read_budget`] reads; listeners
//!   [`Config::accept_budget`] accepts). One stopped by its budget still has its
//!   readable flag: it goes on the list of sockets to serve next turn, and `poll` does
//!   not sleep while that list is non-empty. [`Stats::budget_yields`] counts these.
//! - **Resume after backpressure** (below): a paused connection was not read, so its
//!   readable flag is still set, and it is read the moment it resumes.
//! - **Output held back by a TLS handshake**: the socket was writable all along, the
//!   flag says so, and the queued bytes go as soon as the handshake completes.
//!
//! Reads land in one 64 KiB buffer that belongs to the loop, not to a connection
//! ([`READ_BUFFER`]). The service sees a slice of it in [`Service::data`] and keeps only
//! what it cannot use yet (a line without its end). A connection with nothing owed
//! owns no buffer at all, which is how 19,000 idle connections cost 64 bytes each: a
//! 48-byte table entry (the socket, a ticket to its output queue, its readiness, its
//! sequence number, its phase, and its place in a deadline list) and the service's
//! 16 bytes of state.
//!
//! ### `sendall` without blocking
//!
//! A non-blocking `write` may take everything, part (a *short write*), or nothing
//! (`WouldBlock`, the send buffer is full). [`Context::write`] gives `sendall`'s
//! guarantee — every byte, in order — without waiting: it writes straight from the
//! caller's bytes when nothing is queued (no copy on the common path), and only the
//! remainder the socket did not take is copied into the connection's queue. When
//! output is already queued, new bytes go behind it without a system call, since the
//! peer must receive them in order. The queue is written out, oldest first, when the
//! socket reports writable. Queued bytes live in 16 KiB chunks from a pool shared by
//! the loop's connections, written with one `writev` for many chunks; chunks come back
//! to the pool as they are written, and beyond a spare amount
//! ([`Config::spare_output`]) they are freed and the memory handed back to the system.
//! The counters [`Stats::short_writes`] and [`Stats::write_would_block`] show how often
//! this happens.
//!
//! ### Backpressure and resume
//!
//! An echo server whose client sends but does not read would queue without bound.
//! So when a connection's queued output reaches [`Config::high_water`] the loop stops
//! reading from it ([`Stats::backpressure_pauses`]): the client's bytes wait in the
//! kernel, its window closes, and TCP itself slows the client down. When a writable
//! event drains the queue to [`Config::low_water`] reading resumes
//! ([`Stats::backpressure_resumes`]) — at once, because the readable flag was kept.
//!
//! Output that does not answer input needs another rule. A producer (chargen) asks
//! with [`Context::want_writable`] and writes one chunk per [`Service::writable`] call;
//! the loop makes that call only when the connection's queue is empty, so a client that
//! stops reading stops the producer — and never during a TLS handshake, so a service
//! that reports the session (who) can wait for it the same way. Output written to *other* connections (chat's
//! fan-out) cannot pause anyone's reading, so it is capped instead: a receiver whose
//! queue passes [`Config::max_outbuf`] is closed as a slow consumer
//! ([`Stats::slow_consumers`]), and when the queues of all connections together pass
//! [`Config::max_outbuf_total`] the ones that owe the most are closed first
//! ([`Stats::outbuf_evictions`]).
//!
//! ### Half-close and closing
//!
//! A TCP connection has two directions, and either can end alone: a client that calls
//! `shutdown(SHUT_WR)` still expects its answer. When a read returns 0 (end-of-file) the
//! loop calls [`Service::eof`], stops reading, writes everything still owed, and only
//! then shuts down its own sending side. Closing has a trap of its own: a socket closed
//! while unread input is waiting makes the kernel send a reset, which can destroy the
//! last bytes still on their way to the peer. So after its `shutdown(Write)` a
//! connection whose peer has not finished *lingers* — input is read and discarded
//! ([`Stats::bytes_discarded`]) until the peer's end-of-file or [`Config::linger`] —
//! and is closed then. The lifecycle is Open → Closing → Lingering → closed, with a
//! reset, an error, a timeout or a slow consumer closing it at once; `conn/entry.rs`
//! draws it.
//!
//! A connection that must end while a service callback is running — a chat receiver
//! found to be a slow consumer in the middle of a fan-out — is not removed there: it is
//! marked closed, its output dropped, and removed as soon as the callback returns (the
//! mechanism Redis calls `CLIENT_CLOSE_ASAP`). Every close goes through that list, so
//! one function logs and counts every close with its reason.
//!
//! ### Token reuse
//!
//! When a connection closes, its slot is free, and the next accepted connection may
//! take it — possibly in the middle of a batch of events that still holds an event for
//! the old one. Acting on that event would read the new connection's data on the old
//! one's behalf. The sequence number in each token prevents this: an event whose
//! sequence number does not match the slot's current connection is stale and ignored.
//! [`ConnId`] carries the same pair, so a service that keeps an id after its connection
//! closed ([`Context::write_to`] to a departed chat member) is refused, never
//! misdirected.
//!
//! ### Everything else, in the same style
//!
//! Idle and handshake timeouts are deadline lists ordered by construction, O(1) per
//! connection. `accept` failing with `EMFILE` (out of descriptors) would wake the loop
//! forever, since the pending connection stays pending: the loop sheds it with a
//! reserve descriptor and backs off. Datagram sockets have no connections: one socket
//! serves every peer, received and answered in batches (`recvmmsg`/`sendmmsg`), and no
//! reply is larger than its request. TLS is a layer under the connection, so the loop
//! above it is unchanged. A PROXY protocol header from a load balancer is a phase of
//! the connection before it is served: read beneath TLS, taken off, and its client
//! made the connection's peer before the service is opened ([`proxy`]). SIGINT/SIGTERM (with [`Config::handle_signals`]) and
//! [`Handle::shutdown`] start the same graceful shutdown.
//!
//! To watch all of it happen, run the binary with `RUST_LOG=trace`: it logs every
//! readiness event, every read and write, every `WouldBlock` and every short write.
//! [`Stats`] counts the same things, in system calls.
//!
//! ## Where things are
//!
//! Layers, each owned by one module, from the kernel up; `ARCHITECTURE.md` in the
//! repository walks one byte through them. Each file opens with what it holds and
//! why.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | socket | `socket/` | binding (TCP, UDP, Unix, IPv6), accepting, connecting, Unix socket files, `recvmmsg` batches |
//! | transport | `transport/` | the byte stream under a connection — TCP, Unix or TLS — and the one vocabulary its reads and writes answer in |
//! | connection | `conn/` | a connection's output queue, readiness, deadlines and lifecycle, in one table per loop; the stream machinery the clients share |
//! | loop | [`event_loop`] | `poll`, dispatch, budgets, accepting, datagram sockets, shutdown |
//! | service | [`service`], [`services`] | the [`Service`] trait and its [`Context`]; echo, line, chat, discard, chargen, who; banner and prefix templates |
//!
//! Beside them: [`Builder`] and [`Config`] make a loop, [`Workers`] runs one per
//! thread, [`stats`] counts, [`endpoint`] parses URLs, [`tls`] loads certificates,
//! [`proxy`] is the PROXY protocol's format,
//! [`client`] holds `sockloop send` and the load generator, `token.rs` and
//! `readiness.rs` are the two small vocabularies every layer shares, and [`sys`] is the
//! platform edge.

#![warn(missing_docs)]

mod builder;
pub mod client;
mod config;
mod conn;
pub mod endpoint;
pub mod event_loop;
pub mod lifecycle;
pub mod proxy;
mod readiness;
pub mod service;
pub mod services;
mod socket;
pub mod stats;
pub mod sys;
pub mod systemd;
pub mod tls;
mod token;
mod transport;
mod workers;

pub use builder::{Builder, ListenOptions};
pub use config::{Config, READ_BUFFER};
pub use endpoint::{Endpoint, Url};
pub use event_loop::{EventLoop, Handle};
pub use lifecycle::Observer;
pub use proxy::{ProxyHeader, ProxyProtocol};
pub use service::{ConnId, Context, DatagramContext, Service};
pub use socket::StdSocket;
pub use stats::Stats;
pub use transport::PeerAddr;
pub use workers::Workers;
