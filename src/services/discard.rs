//! Discard (RFC 863): everything read is dropped and nothing is ever sent, on stream
//! and datagram sockets alike. The loop still counts the bytes (`bytes_in`), which makes
//! this the mode for measuring how fast a client can send.

use crate::service::{Context, DatagramContext, Service};

/// The discard service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Service for Discard {
    type State = ();

    fn open(&mut self, _ctx: &mut Context<'_>) {}

    fn data(&mut self, _conn: &mut (), _data: &[u8], _ctx: &mut Context<'_>) {}

    fn datagram(&mut self, _data: &[u8], _ctx: &mut DatagramContext<'_>) {}
}
