//! The built-in services, and [`Modes`], which picks one per listener.
//!
//! Each service is an ordinary [`Service`] implementation with no access to the loop
//! beyond its [`Context`]: the same trait a program embedding the loop implements.
//! [`Template`] is what `--banner` and `--prefix` are made of, for programs that want
//! to greet their own connections the same way.

mod chargen;
mod chat;
mod discard;
mod echo;
mod line;
mod metrics;
mod template;
mod who;

use std::fmt;
use std::str::FromStr;

pub use chargen::Chargen;
pub use chat::Chat;
pub use discard::Discard;
pub use echo::Echo;
pub use line::{Line, Partial, SERVER_FULL, TOO_LONG};
pub use metrics::{MAX_REQUEST, Metrics, MetricsState, Request};
pub use template::{Template, TemplateError, Vars};
pub use who::{Who, percent_encode};

use crate::service::{ConnId, Context, DatagramContext, Service};

/// The line length limit used when none is given (`--max-line`), terminator included.
pub const DEFAULT_MAX_LINE: usize = 8192;

/// A built-in service, as named on the command line (`--mode`, `?mode=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// RFC 862 echo.
    Echo,
    /// Line echo with a length limit.
    Line,
    /// Each line relayed to every other chat client.
    Chat,
    /// RFC 863 discard.
    Discard,
    /// RFC 864 character generator.
    Chargen,
    /// One line saying who the client is and which server answered, then a close.
    Who,
}

impl Mode {
    /// Every mode, in the order the command line lists them.
    pub const ALL: &'static [Mode] = &[
        Mode::Echo,
        Mode::Line,
        Mode::Chat,
        Mode::Discard,
        Mode::Chargen,
        Mode::Who,
    ];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Line => "line",
            Mode::Chat => "chat",
            Mode::Discard => "discard",
            Mode::Chargen => "chargen",
            Mode::Who => "who",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode '{s}' (expected {})", names.join(", "))
            })
    }
}

/// Serves each bound socket — listener or datagram socket, numbered in the order they
/// were given — with its own built-in mode: what `sockloop serve` runs.
///
/// A [`banner`](Self::banner) is sent to every new stream connection before anything
/// else, whatever its mode.
#[derive(Clone, Debug)]
pub struct Modes {
    default: Mode,
    per_socket: Vec<Option<Mode>>,
    line: Line,
    chat: Chat,
    chargen: Chargen,
    who: Who,
    banner: Option<Template>,
    /// The socket that serves metrics and health over HTTP, if any.
    metrics: Option<(usize, Metrics)>,
}

/// The state of one connection under [`Modes`].
#[derive(Debug)]
pub enum ModeConn {
    /// An echo connection (no state).
    Echo,
    /// A line connection and its unterminated line.
    Line(Partial),
    /// A chat connection and its unterminated line.
    Chat(Partial),
    /// A discard connection (no state).
    Discard,
    /// A chargen connection (no state).
    Chargen,
    /// A who connection (no state).
    Who,
    /// A request to the metrics listener, while it is incomplete.
    Http(Request),
}

impl Modes {
    /// Every socket runs `default` unless [`set`](Self::set) says otherwise.
    pub fn new(default: Mode) -> Self {
        Modes {
            default,
            per_socket: Vec::new(),
            line: Line::new(DEFAULT_MAX_LINE),
            chat: Chat::new(DEFAULT_MAX_LINE),
            chargen: Chargen::new(),
            who: Who::new(),
            banner: None,
            metrics: None,
        }
    }

    /// Runs `mode` on bound socket `socket`.
    pub fn set(mut self, socket: usize, mode: Mode) -> Self {
        if self.per_socket.len() <= socket {
            self.per_socket.resize(socket + 1, None);
        }
        self.per_socket[socket] = Some(mode);
        self
    }

    /// Serves metrics and health over HTTP ([`Metrics`]) on bound socket `socket`, a
    /// stream listener, instead of a mode; no banner is sent there.
    pub fn metrics(mut self, socket: usize, metrics: Metrics) -> Self {
        self.metrics = Some((socket, metrics));
        self
    }

    /// The line limit for line and chat mode, terminator included.
    pub fn max_line(mut self, max_line: usize) -> Self {
        self.line.set_max_line(max_line);
        self.chat = Chat::new(max_line);
        self
    }

    /// Sends `template`, expanded for each connection and followed by `\n`, to every
    /// new stream connection before anything else, whatever its mode (echo stays
    /// byte-exact after it). An empty template sends an empty line.
    pub fn banner(mut self, template: Template) -> Self {
        self.banner = Some(template);
        self
    }

    /// Puts `template`, expanded for each connection, before every line echoed in line
    /// mode (see [`Line::prefix`]).
    pub fn prefix(mut self, template: Template) -> Self {
        self.line = self.line.prefix(template);
        self
    }

    /// This service runs as worker `i` of several (`--workers`): what `{worker}` and
    /// who's `worker=` say. Worker 0 by default.
    pub fn worker(mut self, i: usize) -> Self {
        self.who = self.who.worker(i);
        self.line = self.line.worker(i);
        self.banner = self.banner.map(|t| t.worker(i));
        self.metrics = self.metrics.map(|(s, m)| (s, m.worker(i)));
        self
    }

    /// True when any socket runs `mode`; `sockets` is how many there are.
    pub fn uses(&self, mode: Mode, sockets: usize) -> bool {
        (0..sockets.max(1)).any(|i| self.mode(i) == mode)
    }

    /// The mode that serves bound socket `socket`.
    pub fn mode(&self, socket: usize) -> Mode {
        self.per_socket
            .get(socket)
            .copied()
            .flatten()
            .unwrap_or(self.default)
    }
}

impl Service for Modes {
    type State = ModeConn;

    fn open(&mut self, ctx: &mut Context<'_>) -> ModeConn {
        if let Some((socket, m)) = &mut self.metrics {
            if *socket == ctx.listener() {
                return ModeConn::Http(m.open(ctx));
            }
        }
        if let Some(banner) = &self.banner {
            let mut line = Vec::new();
            banner.expand_for(ctx, &mut line);
            line.push(b'\n');
            ctx.write(&line);
        }
        match self.mode(ctx.listener()) {
            Mode::Echo => ModeConn::Echo,
            Mode::Line => ModeConn::Line(self.line.open(ctx)),
            Mode::Chat => ModeConn::Chat(self.chat.open(ctx)),
            Mode::Discard => ModeConn::Discard,
            Mode::Chargen => {
                self.chargen.open(ctx);
                ModeConn::Chargen
            }
            Mode::Who => {
                self.who.open(ctx);
                ModeConn::Who
            }
        }
    }

    fn data(&mut self, conn: &mut ModeConn, data: &[u8], ctx: &mut Context<'_>) {
        match conn {
            ModeConn::Echo => Echo.data(&mut (), data, ctx),
            ModeConn::Line(p) => self.line.data(p, data, ctx),
            ModeConn::Chat(p) => self.chat.data(p, data, ctx),
            ModeConn::Http(r) => {
                if let Some((_, m)) = &mut self.metrics {
                    m.data(r, data, ctx);
                }
            }
            ModeConn::Discard | ModeConn::Chargen | ModeConn::Who => {}
        }
    }

    fn eof(&mut self, conn: &mut ModeConn, ctx: &mut Context<'_>) {
        match conn {
            ModeConn::Line(p) => self.line.eof(p, ctx),
            ModeConn::Who => self.who.eof(&mut (), ctx),
            ModeConn::Http(r) => {
                if let Some((_, m)) = &mut self.metrics {
                    m.eof(r, ctx);
                }
            }
            _ => {}
        }
    }

    fn writable(&mut self, conn: &mut ModeConn, ctx: &mut Context<'_>) {
        match conn {
            ModeConn::Chargen => self.chargen.writable(&mut (), ctx),
            ModeConn::Who => self.who.writable(&mut (), ctx),
            _ => {}
        }
    }

    fn close(&mut self, conn: ModeConn, id: ConnId) {
        match conn {
            ModeConn::Chat(p) => self.chat.close(p, id),
            ModeConn::Line(p) => self.line.close(p, id),
            _ => {}
        }
    }

    fn reject_message(&self, listener: usize) -> &[u8] {
        match self.mode(listener) {
            Mode::Echo | Mode::Discard | Mode::Chargen | Mode::Who => &[],
            Mode::Line => self.line.reject_message(listener),
            Mode::Chat => self.chat.reject_message(listener),
        }
    }

    fn datagram(&mut self, data: &[u8], ctx: &mut DatagramContext<'_>) {
        match self.mode(ctx.socket()) {
            Mode::Echo => Echo.datagram(data, ctx),
            Mode::Line => self.line.datagram(data, ctx),
            Mode::Chargen => self.chargen.datagram(data, ctx),
            Mode::Who => self.who.datagram(data, ctx),
            Mode::Chat | Mode::Discard => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state `sockloop serve` keeps per connection, beside the loop's own entry:
    /// two words, whatever the mode (see the memory figures in the crate guide).
    #[test]
    fn a_connection_state_is_two_words() {
        assert_eq!(std::mem::size_of::<Option<ModeConn>>(), 16);
    }
}
