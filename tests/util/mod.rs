//! Helpers shared by the integration tests, one module per concern:
//!
//! - [`net`]: blocking clients that never hang a test forever (HTTP `GET` among
//!   them), byte patterns, and [`net::wait_until`] and [`net::wait_for`] with their
//!   [`net::DEADLINE`].
//! - [`fs`]: a temporary directory for socket files and certificates.
//! - [`server`]: the library's loop running on a thread of the test.
//! - [`child`]: the `sockloop` binary as a child process, and its `stats` lines; the
//!   other programs a test needs ([`child::require`]), and feeding a child's stdin.
//! - [`procfs`]: readers of `/proc` (memory, CPU time, socket tables) that fail the
//!   test when they cannot measure.
//! - [`pki`]: certificates made at run time for the TLS tests.
//! - [`bench`]: reading `sockloop bench` reports, and misbehaving servers for it.
//! - [`balancer`]: HAProxy and nginx as child processes, in front of the binary.
//!
//! Every test file declares `pub mod util;`: a public module at the root of the test
//! crate is what keeps the helpers that one file does not use from being dead code.

pub mod balancer;
pub mod bench;
pub mod child;
pub mod fs;
pub mod net;
pub mod pki;
pub mod procfs;
pub mod server;
pub mod svg;
