//! Chat: each complete line from one stream connection goes to every *other* chat
//! connection of the loop as `<ID> LINE`, ID being the sender's [`ConnId`] (`<7> hi\n`).
//!
//! Fan-out is where a relay runs out of memory: one client that stops reading while
//! the others talk would hold a copy of every line. Here the lines of one read are
//! written to each receiver with `sendall` semantics through [`Context::write_to`], so
//! a receiver that keeps up holds nothing, and one that does not is closed as a slow
//! consumer once its unsent output passes [`Config::max_outbuf`](crate::Config) — memory
//! stays below receivers × that limit whatever the senders do.
//!
//! Lines are limited like line mode's: one longer than the limit gets
//! `ERR line too long\n` and the sender is closed. An unterminated tail at EOF is not a
//! line and is not relayed. Datagrams are dropped: a datagram socket has no clients to
//! relay to.

use std::io::Write as _;

use super::line::{Partial, SERVER_FULL, find_newline, too_long};
use crate::service::{ConnId, Context, Service};

/// The chat relay. Its state is the list of connections to relay to.
#[derive(Clone, Debug)]
pub struct Chat {
    max_line: usize,
    members: Vec<ConnId>,
    /// The prefixed lines of one read, relayed to each member in one write: a read
    /// holding many short lines costs one system call per receiver, not one per line.
    batch: Vec<u8>,
}

impl Chat {
    /// Lines longer than `max_line` bytes, terminator included, are refused.
    pub fn new(max_line: usize) -> Self {
        Chat {
            max_line: max_line.max(1),
            members: Vec::new(),
            batch: Vec::new(),
        }
    }

    /// Connections currently in the chat.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Sends the batch to everyone but its sender, and empties it.
    fn relay(&mut self, from: ConnId, ctx: &mut Context<'_>) {
        if self.batch.is_empty() {
            return;
        }
        for &to in &self.members {
            if to != from {
                ctx.write_to(to, &self.batch);
            }
        }
        self.batch.clear();
        // A burst must not leave a large buffer behind.
        if self.batch.capacity() > BATCH_KEEP {
            self.batch = Vec::new();
        }
    }
}

/// Capacity of the relay batch kept between reads.
const BATCH_KEEP: usize = 128 * 1024;

impl Service for Chat {
    type State = Partial;

    fn open(&mut self, ctx: &mut Context<'_>) -> Partial {
        self.members.push(ctx.id());
        Partial::new()
    }

    fn data(&mut self, partial: &mut Partial, data: &[u8], ctx: &mut Context<'_>) {
        let from = ctx.id();
        let mut prefix = [0u8; 16];
        let prefix_len = {
            let mut w = &mut prefix[..];
            // "<4294967295> " is 13 bytes: it always fits.
            let _ = write!(w, "<{from}> ");
            16 - w.len()
        };
        let prefix = &prefix[..prefix_len];
        let mut rest = data;
        while !rest.is_empty() {
            let Some(i) = find_newline(rest) else {
                if partial.len() + rest.len() > self.max_line {
                    self.relay(from, ctx);
                    return too_long(partial, ctx);
                }
                partial.push(rest);
                break;
            };
            let (piece, tail) = rest.split_at(i + 1);
            rest = tail;
            if partial.len() + piece.len() > self.max_line {
                // The lines before it still go out.
                self.relay(from, ctx);
                return too_long(partial, ctx);
            }
            self.batch.extend_from_slice(prefix);
            if !partial.is_empty() {
                self.batch.extend_from_slice(partial.as_slice());
                partial.clear();
            }
            self.batch.extend_from_slice(piece);
        }
        self.relay(from, ctx);
    }

    fn close(&mut self, _partial: Partial, id: ConnId) {
        if let Some(i) = self.members.iter().position(|&m| m == id) {
            self.members.swap_remove(i);
        }
    }

    fn reject_message(&self, _listener: usize) -> &[u8] {
        SERVER_FULL
    }
}
