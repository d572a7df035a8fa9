//! # sockloop
//!
//! An event-loop server on raw readiness polling: one [`mio::Poll`] on one thread, a
//! [`slab`] of connection states, and partial reads and writes buffered by hand — the
//! guarantee of Python's `socket.sendall`, built on non-blocking sockets.
//!
//! ## Where things are
//!
//! | module | holds |
//! |---|---|
//! | [`event_loop`] | the loop: `poll`, dispatch, budgets, backpressure, accept, deadlines, shutdown |
//! | `conn` | one connection's state and lifecycle, and the `sendall` write path |
//! | [`buffer`] | [`SendBuf`](buffer::SendBuf), the bytes a connection still owes its peer |
//! | `listener`, `transport` | binding (TCP, UDP, Unix, IPv6) and accepting; the stream enum under every connection |
//! | `datagram` | datagram sockets: batched receive and reply, the bounded reply queue, the safety rules |
//! | [`service`] | the [`Service`] trait and the [`Context`] it writes through |
//! | [`services`] | echo and line, and [`Modes`](services::Modes), which picks one per listener |
//! | `timer` | idle and linger deadlines in O(1) per connection |
//! | [`stats`] | the counters |
//! | [`endpoint`] | `tcp://`, `udp://`, `tls://`, `unix:` and `unixgram:` URLs |
//! | [`sys`] | the platform edge: descriptor limits, errno classes |
//!
//! ## A first server
//!
//! ```no_run
//! use sockloop::{Builder, services::Echo};
//!
//! let mut server = Builder::new()
//!     .listen("tcp://127.0.0.1:5001".parse()?)
//!     .handle_signals(true)
//!     .build(Echo)?;
//! let stats = server.run()?; // until SIGINT/SIGTERM
//! eprintln!("stats {stats}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod bench;
pub mod buffer;
mod builder;
pub mod client;
mod conn;
mod datagram;
pub mod endpoint;
pub mod event_loop;
mod listener;
pub mod service;
pub mod services;
pub mod stats;
pub mod sys;
mod timer;
pub mod tls;
mod token;
mod transport;
mod workers;

pub use builder::{Builder, Config, ListenOptions};
pub use endpoint::{Endpoint, Url};
pub use event_loop::{EventLoop, Handle};
pub use listener::StdSocket;
pub use service::{ConnId, Context, DatagramContext, Service};
pub use stats::Stats;
pub use transport::PeerAddr;
pub use workers::Workers;
