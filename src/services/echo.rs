//! Echo (RFC 862): every byte read is written back, in order, nothing added; every
//! datagram is sent back to its sender unchanged.

use crate::service::{Context, DatagramContext, Service};

/// The echo service. It keeps no per-connection state: bytes go from the loop's read
/// buffer straight back to the socket, and only what the socket cannot take at once is
/// copied (into the connection's send queue).
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Service for Echo {
    type State = ();

    fn open(&mut self, _ctx: &mut Context<'_>) {}

    fn data(&mut self, _conn: &mut (), data: &[u8], ctx: &mut Context<'_>) {
        ctx.write(data);
    }

    fn datagram(&mut self, data: &[u8], ctx: &mut DatagramContext<'_>) {
        ctx.reply(data);
    }
}
