//! Line mode: input is split on `\n` and each complete line is written back unchanged,
//! terminator included (`\r\n` stays `\r\n`).
//!
//! On a datagram socket each datagram is one message, echoed if it is at most the limit.
//!
//! A line longer than the limit (terminator included) gets `ERR line too long\n` and the
//! connection is closed once that is sent; an unterminated tail at EOF is written back
//! as it is. The only memory a connection holds is its unterminated line, at most the
//! limit, and none at all between lines.
//!
//! # A prefix
//! With a [`Template`] as prefix ([`Line::prefix`], `--prefix`), every line a stream
//! connection gets back starts with the template's expansion for that connection —
//! exactly the expansion, nothing added between it and the line. It is expanded once,
//! when the connection opens, and kept beside the connections (in a map by
//! [`ConnId`]), not in their state: without a prefix a connection's state stays one
//! word. Datagrams are echoed without it, since a reply must not be longer than its
//! request.

use std::collections::HashMap;

use super::template::Template;
use crate::service::{ConnId, Context, DatagramContext, Service};

/// The reply to a line over the limit, before the connection is closed.
pub const TOO_LONG: &[u8] = b"ERR line too long\n";

/// The reply to a connection refused because the server is full.
pub const SERVER_FULL: &[u8] = b"ERR server full\n";

/// Most slices handed to one `writev` for prefixed lines: the kernel takes at most
/// `IOV_MAX` (1024) at once, and a run of more lines goes out in several writes.
const MAX_PARTS: usize = 1024;

/// The line service.
#[derive(Clone, Debug)]
pub struct Line {
    max_line: usize,
    prefix: Option<Template>,
    /// Each open stream connection's expanded prefix, when there is a prefix.
    prefixes: HashMap<ConnId, Box<[u8]>>,
}

impl Line {
    /// Lines longer than `max_line` bytes, terminator included, are refused.
    pub fn new(max_line: usize) -> Self {
        Line {
            max_line: max_line.max(1),
            prefix: None,
            prefixes: HashMap::new(),
        }
    }

    /// Puts `template`, expanded for each connection, before every line it gets back:
    /// exactly the expansion, nothing added between it and the line. It is expanded
    /// once, when the connection opens, and kept beside the connections (in a map by
    /// [`ConnId`]), not in their state, so that without a prefix a connection's state
    /// stays one word. Stream connections only: a datagram is echoed without it, since
    /// a reply must not be longer than its request. An empty template is no prefix.
    pub fn prefix(mut self, template: Template) -> Self {
        self.prefix = (!template.is_empty()).then_some(template);
        self
    }

    /// The same service for worker `i` (the prefix's `{worker}`).
    pub fn worker(mut self, i: usize) -> Self {
        self.prefix = self.prefix.map(|t| t.worker(i));
        self
    }

    /// The longest line accepted, terminator included.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Changes the limit, keeping the prefix.
    pub(crate) fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line.max(1);
    }

    /// The prefix of the connection of `ctx`, if there is one. Without a prefix this
    /// is one test on the data path: no id, no lookup.
    fn prefix_of(&self, ctx: &Context<'_>) -> Option<&[u8]> {
        if self.prefixes.is_empty() {
            return None;
        }
        self.prefixes.get(&ctx.id()).map(|p| &**p)
    }
}

/// A line's worth of bytes waiting for its `\n`.
///
/// Between lines it holds nothing at all — not even an empty buffer's pointer, length
/// and capacity — so that the state of an idle line or chat connection is one word
/// (see the memory figures in the crate guide).
#[derive(Debug, Default)]
// The box is the point: `Option<Box<_>>` is one word and `None` between lines, where a
// bare `Vec` is three words on every connection, idle or not.
#[allow(clippy::box_collection)]
pub struct Partial(Option<Box<Vec<u8>>>);

impl Partial {
    /// No line begun.
    pub fn new() -> Self {
        Partial(None)
    }

    /// True between lines.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Bytes of the line so far.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    /// The line so far.
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Adds bytes to the line.
    pub fn push(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.0.get_or_insert_default().extend_from_slice(bytes);
        }
    }

    /// Starts over with `bytes` (nothing, if empty), releasing what was held.
    pub fn set(&mut self, bytes: &[u8]) {
        self.0 = (!bytes.is_empty()).then(|| Box::new(bytes.to_vec()));
    }

    /// Drops the line and its memory.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl Service for Line {
    type State = Partial;

    fn open(&mut self, ctx: &mut Context<'_>) -> Partial {
        if let Some(t) = &self.prefix {
            let mut p = Vec::new();
            t.expand_for(ctx, &mut p);
            self.prefixes.insert(ctx.id(), p.into_boxed_slice());
        }
        Partial::new()
    }

    fn data(&mut self, partial: &mut Partial, data: &[u8], ctx: &mut Context<'_>) {
        let max = self.max_line;
        let prefix = self.prefix_of(ctx);
        let mut rest = data;
        if !partial.is_empty() {
            // Complete the line begun in an earlier read.
            match find_newline(rest) {
                Some(i) if partial.len() + i < max => {
                    partial.push(&rest[..=i]);
                    rest = &rest[i + 1..];
                }
                None if partial.len() + rest.len() <= max => {
                    partial.push(rest);
                    return;
                }
                _ => return too_long(partial, ctx),
            }
        }
        let (complete, over) = complete_lines(rest, max);
        // The completed partial line and the run of whole lines after it go out in one
        // write (a writev when both are there).
        match prefix {
            None => ctx.write_vectored(&[partial.as_slice(), &rest[..complete]]),
            Some(prefix) => write_prefixed(prefix, partial.as_slice(), &rest[..complete], ctx),
        }
        if over {
            return too_long(partial, ctx);
        }
        partial.set(&rest[complete..]);
    }

    fn eof(&mut self, partial: &mut Partial, ctx: &mut Context<'_>) {
        if !partial.is_empty() {
            match self.prefix_of(ctx) {
                None => ctx.write(partial.as_slice()),
                Some(prefix) => ctx.write_vectored(&[prefix, partial.as_slice()]),
            }
            partial.clear();
        }
    }

    fn close(&mut self, _partial: Partial, id: ConnId) {
        if !self.prefixes.is_empty() {
            self.prefixes.remove(&id);
        }
    }

    fn reject_message(&self, _listener: usize) -> &[u8] {
        SERVER_FULL
    }

    /// A datagram is one message: echoed unchanged when it fits the limit, else
    /// answered with the error (which the loop drops if it is longer than the request).
    fn datagram(&mut self, data: &[u8], ctx: &mut DatagramContext<'_>) {
        if data.len() <= self.max_line {
            ctx.reply(data);
        } else {
            ctx.reply(TOO_LONG);
        }
    }
}

/// Writes the completed line `first` (empty if none) and the whole lines of `run`,
/// each after `prefix`: one `writev` for up to [`MAX_PARTS`] slices.
fn write_prefixed(prefix: &[u8], first: &[u8], run: &[u8], ctx: &mut Context<'_>) {
    let lines = run.iter().filter(|&&b| b == b'\n').count() + usize::from(!first.is_empty());
    if lines == 0 {
        return;
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity((2 * lines).min(MAX_PARTS));
    let first = (!first.is_empty()).then_some(first);
    // `run` is whole lines: each piece ends with its `\n`.
    for line in first
        .into_iter()
        .chain(run.split_inclusive(|&b| b == b'\n'))
    {
        if parts.len() == MAX_PARTS {
            ctx.write_vectored(&parts);
            parts.clear();
        }
        parts.push(prefix);
        parts.push(line);
    }
    ctx.write_vectored(&parts);
}

/// Refuses an over-long line: the error, then the connection closes once it is sent.
pub(crate) fn too_long(partial: &mut Partial, ctx: &mut Context<'_>) {
    partial.clear();
    ctx.write(TOO_LONG);
    ctx.close();
}

pub(crate) fn find_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The length of the longest prefix of `buf` made of whole lines of at most `max` bytes,
/// and whether what follows it is already over the limit (a longer line, or an
/// unterminated tail longer than `max`).
fn complete_lines(buf: &[u8], max: usize) -> (usize, bool) {
    let mut end = 0;
    while let Some(i) = find_newline(&buf[end..]) {
        if i + 1 > max {
            return (end, true);
        }
        end += i + 1;
    }
    (end, buf.len() - end > max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_stops_at_the_first_long_line() {
        assert_eq!(complete_lines(b"a\nbb\nc", 3), (5, false));
        assert_eq!(complete_lines(b"a\nbbbb\nc\n", 3), (2, true));
        assert_eq!(complete_lines(b"a\nbbbb", 3), (2, true));
        assert_eq!(complete_lines(b"abc", 3), (0, false));
        assert_eq!(complete_lines(b"ab\n", 3), (3, false));
        assert_eq!(complete_lines(b"abc\n", 3), (0, true));
    }
}
