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
//!     type Conn = Vec<u8>;
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
//! and only then calls them. The rest of this section is what that takes to get right.
//!
//! ### One turn
//!
//! [`EventLoop::turn`] is one step: `poll` (Linux `epoll_wait`) sleeps until a socket is
//! ready or the next deadline (an idle timeout) is due, then each readiness event is
//! dispatched — accept on a listener, read or write on a connection, receive on a
//! datagram socket — then deadlines are acted on. [`EventLoop::run`] is turns until a
//! shutdown has finished.
//!
//! Each socket is registered *once*, when it is bound or accepted, for readable and
//! writable interest together, with a `mio::Token`: one machine word the kernel hands
//! back with every event. The token holds the connection's slot in the loop's slab
//! (its key) and its accept sequence number. Registering once means there is no
//! `epoll_ctl` call per message; the price is that the loop must keep track itself of
//! what it still wants to write.
//!
//! ### Edge-triggered readiness
//!
//! mio's readiness is *edge-triggered*: an event says "this socket became readable",
//! once, not "this socket is readable" at every poll while it stays so. If the loop
//! read only part of what was waiting and went back to `poll`, it would never hear of
//! the rest. So after a readable event the loop reads until the socket is drained:
//! until a read returns `WouldBlock`, or returns fewer bytes than the buffer holds — on
//! a stream socket, a short read means the kernel's queue was just emptied, and data
//! arriving later raises a new edge, so the extra read that would only say `WouldBlock`
//! is skipped. (Unless the same event reported the peer's FIN: then the loop reads on
//! to the end-of-file, or it would never see it.)
//!
//! Reading until drained lets one fast sender starve everyone else, so each connection
//! gets a budget per turn ([`Config::read_budget`] reads; listeners
//! [`Config::accept_budget`] accepts). A connection that stops on its budget has been
//! promised an edge that will never come — its data is still waiting — so it goes on a
//! *pending* list, served next turn without an event, and `poll` does not sleep while
//! that list is non-empty. [`Stats::budget_yields`] counts these.
//!
//! Reads land in one 64 KiB buffer that belongs to the loop, not to a connection. The
//! service sees a slice of it in [`Service::data`] and keeps only what it cannot use
//! yet (a line without its end). A connection with nothing pending owns no buffer
//! at all, which is how 19,000 idle connections cost about 100 bytes each.
//!
//! ### `sendall` without blocking
//!
//! A non-blocking `write` may take everything, part (a *short write*), or nothing
//! (`WouldBlock`, the send buffer is full). [`Context::write`] gives `sendall`'s
//! guarantee — every byte, in order — without waiting: it writes straight from the
//! caller's bytes when nothing is queued (no copy on the common path), and only the
//! remainder the socket did not take is copied into the connection's queue, a
//! [`buffer::SendBuf`]. When output is already queued, new bytes go behind it without a
//! system call, since the peer must receive them in order. The queue is written out,
//! oldest first, when the socket reports writable; when it empties, its memory is
//! released. The counters [`Stats::short_writes`] and [`Stats::write_would_block`] show
//! how often this happens.
//!
//! ### Backpressure and resume
//!
//! An echo server whose client sends but does not read would queue without bound.
//! So when a connection's queued output reaches [`Config::high_water`] the loop stops
//! reading from it ([`Stats::backpressure_pauses`]): the client's bytes wait in the
//! kernel, its window closes, and TCP itself slows the client down. When a writable
//! event drains the queue to [`Config::low_water`] reading resumes
//! ([`Stats::backpressure_resumes`]) — and the loop reads *at once*, because the
//! readable edge came and went while it was paused and will not come again.
//!
//! Output that does not answer input needs another rule. A producer (chargen) asks
//! with [`Context::want_writable`] and writes one chunk per [`Service::writable`] call;
//! the loop makes that call only when the connection's queue is empty, so a client that
//! stops reading stops the producer. Output written to *other* connections (chat's
//! fan-out) cannot pause anyone's reading, so it is capped instead: a receiver whose
//! queue passes [`Config::max_outbuf`] is closed as a slow consumer
//! ([`Stats::slow_consumers`]).
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
//! reset, an error or a timeout closing it at once.
//!
//! ### Token reuse
//!
//! When a connection closes, its slab slot is free, and the next accepted connection
//! may take it — possibly in the middle of a batch of events that still holds an event
//! for the old one. Acting on that event would read the new connection's data on the
//! old one's behalf. The sequence number in each token prevents this: an event whose
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
//! above it is unchanged. SIGINT/SIGTERM (with [`Config::handle_signals`]) and
//! [`Handle::shutdown`] start the same graceful shutdown.
//!
//! To watch all of it happen, run the binary with `RUST_LOG=trace`: it logs every
//! readiness event, every read and write, every `WouldBlock` and every short write.
//! [`Stats`] counts the same things.
//!
//! ## Where things are
//!
//! Each file opens with what it holds and why; read them in this order.
//!
//! | module | holds |
//! |---|---|
//! | [`event_loop`] | the loop: `poll`, dispatch, budgets, backpressure, accept, deadlines, shutdown |
//! | `conn` | one connection's state and lifecycle, and the `sendall` write path |
//! | [`buffer`] | [`SendBuf`](buffer::SendBuf), the bytes a connection still owes its peer |
//! | `token` | what a `mio::Token` holds, and how stale events are recognised |
//! | `listener`, `transport` | binding (TCP, UDP, Unix, IPv6) and accepting; the stream under every connection |
//! | `datagram` | datagram sockets: batched receive and reply, the bounded reply queue, the safety rules |
//! | [`tls`] | TLS as a non-blocking stream, for servers and clients |
//! | [`service`] | the [`Service`] trait and the [`Context`] it writes through |
//! | [`services`] | echo, line, chat, discard, chargen, and [`Modes`](services::Modes), which picks one per listener |
//! | `timer` | idle, linger and handshake deadlines in O(1) per connection |
//! | `workers` | [`Workers`]: one loop per thread, `SO_REUSEPORT` |
//! | [`stats`] | the counters |
//! | [`endpoint`] | `tcp://`, `udp://`, `tls://`, `unix:` and `unixgram:` URLs |
//! | [`client`], [`bench`](mod@bench) | the one-shot client and the load generator, on the same non-blocking model |
//! | [`sys`] | the platform edge: descriptor limits, errno classes |

#![warn(missing_docs)]

mod builder;
pub mod client;
mod config;
mod conn;
pub mod endpoint;
pub mod event_loop;
mod readiness;
pub mod service;
pub mod services;
mod socket;
pub mod stats;
pub mod sys;
pub mod tls;
mod token;
mod transport;
mod workers;

pub use builder::{Builder, ListenOptions};
pub use config::{Config, READ_BUFFER};
pub use endpoint::{Endpoint, Url};
pub use event_loop::{EventLoop, Handle};
pub use service::{ConnId, Context, DatagramContext, Service};
pub use socket::StdSocket;
pub use stats::Stats;
pub use transport::PeerAddr;
pub use workers::Workers;
