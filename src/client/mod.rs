//! The client side, on the server's own machinery: the same socket set-up
//! (`socket/`), the same transports (`transport/`), and the same stream-with-outbox
//! (`Connection` in `conn/connection.rs`) with its sticky readiness, its short-read rule and its
//! `sendall` — so a client pays per message what the server pays.
//!
//! [`send`] is `sockloop send`: write a message, half-close, print the answer.
//! [`bench`](mod@bench) is `sockloop bench`: a load generator that checks every echoed byte.
//! Either can start its connections with a PROXY protocol header, as a load balancer
//! would ([`ProxyVersion`]).

pub mod bench;
mod proxy;
mod send;

use std::io;

pub use proxy::ProxyVersion;
pub use send::{SendOptions, send};

use crate::endpoint::Endpoint;
use crate::tls::{ClientTlsOptions, TlsClient};

/// The TLS client to use for `endpoint`: the one given, or the default one (the
/// system's roots, the URL's host); `None` for a plain endpoint.
fn tls_for(endpoint: &Endpoint, given: Option<&TlsClient>) -> io::Result<Option<TlsClient>> {
    match (endpoint, given) {
        (Endpoint::Tls(_), Some(t)) => Ok(Some(t.clone())),
        _ => TlsClient::for_endpoint(endpoint, &ClientTlsOptions::default()),
    }
}
