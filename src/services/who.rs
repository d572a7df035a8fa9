//! Who mode: one line saying who the client is and which server answered (see [`Who`]).

use std::fmt::{self, Write as _};

use crate::service::{Context, DatagramContext, Service};

/// Who mode: the server says who it is and who it thinks the client is, in one line,
/// then closes. Behind load balancers, proxies and TLS terminators this is the
/// question that matters: which server answered, through which listener, and did the
/// client's address (PROXY protocol) and certificate (mutual TLS) arrive intact.
///
/// # The line
/// `key=value` pairs separated by single spaces, ending in `\n`, keys always in this
/// order, each present only when it applies:
///
/// | key | value |
/// |---|---|
/// | `peer` | the client: the one a PROXY header named, else the socket's peer |
/// | `via` | the load balancer, when a PROXY header named the client |
/// | `local` | this end's address (a datagram socket: its bound address) |
/// | `listener` | the listener, as the ready line prints it (`tcp://127.0.0.1:5001`) |
/// | `host` | this machine's host name |
/// | `worker` | the worker's index, 0 without `--workers` |
/// | `conn` | the connection's id (streams only) |
/// | `tls` | `VERSION/CIPHER` (`TLSv1.3/TLS13_AES_256_GCM_SHA384`), TLS only |
/// | `tls_client` | the client certificate's subject (`CN=alice,O=Example`), when it presented one |
///
/// ```text
/// peer=203.0.113.9:41000 via=10.0.0.2:55012 local=10.0.0.5:5001 listener=tcp://0.0.0.0:5001 host=web-1 worker=0 conn=7
/// ```
///
/// A value never contains a space: a space, `%` and every byte that is not printable
/// ASCII are written `%XX`, so `for kv in $line; do echo "${kv%%=*} -> ${kv#*=}"; done`
/// splits the line in a shell. A key may appear in a later version but never moves.
///
/// # On a stream, on a datagram socket
/// A stream connection gets the line once the server knows everything in it — over
/// TLS, once the handshake is over — and is then closed as usual: what was written is
/// delivered, then the server shuts down its side. A datagram is answered with the
/// line only if the datagram is at least as long (a datagram server never answers
/// with more than it was sent): a client pads its request, `printf '%512s' |
/// sockloop send udp://HOST:PORT`; a shorter one is dropped and counted.
#[derive(Clone, Debug)]
pub struct Who {
    /// Already percent-encoded: it goes into every line as it is.
    host: String,
    worker: usize,
}

/// This machine's host name (`gethostname`), or `localhost` when it cannot be read.
pub(crate) fn hostname() -> String {
    crate::sys::hostname().unwrap_or_else(|| "localhost".into())
}

impl Default for Who {
    fn default() -> Self {
        Who::new()
    }
}

impl Who {
    /// Reports this machine's host name (read now, once) and worker 0.
    pub fn new() -> Self {
        Who {
            host: String::new(),
            worker: 0,
        }
        .host(&hostname())
    }

    /// Reports `host` as the host name: a name the program knows better than the
    /// kernel (a pod's or a service's name).
    pub fn host(mut self, host: &str) -> Self {
        self.host.clear();
        percent_encode(host.as_bytes(), &mut self.host);
        self
    }

    /// Reports worker `i`: each worker's service gets its own copy.
    pub fn worker(mut self, i: usize) -> Self {
        self.worker = i;
        self
    }

    /// The line for the connection of `ctx`, `\n` included.
    pub fn line(&self, ctx: &Context<'_>) -> String {
        let mut line = Line::default();
        if let Ok(peer) = ctx.peer_addr() {
            line.kv("peer", peer);
        }
        if let Some(Ok(via)) = ctx.proxied_by() {
            line.kv("via", via);
        }
        if let Ok(local) = ctx.local_addr() {
            line.kv("local", local);
        }
        line.kv("listener", ctx.listener_addr());
        line.raw("host", &self.host);
        line.kv("worker", self.worker);
        line.kv("conn", ctx.id());
        if let Some(tls) = ctx.tls() {
            line.kv("tls", format_args!("{}/{}", tls.version, tls.cipher));
            if let Some(subject) = &tls.client_subject {
                line.kv("tls_client", subject);
            }
        }
        line.finish()
    }

    /// The line for a datagram: the same keys, less those a datagram does not have
    /// (`via`, `conn`, `tls`, `tls_client`).
    pub fn datagram_line(&self, ctx: &DatagramContext<'_>) -> String {
        let mut line = Line::default();
        line.kv("peer", ctx.peer());
        if let Ok(local) = ctx.local_addr() {
            line.kv("local", local);
        }
        line.kv("listener", ctx.socket_addr());
        line.raw("host", &self.host);
        line.kv("worker", self.worker);
        line.finish()
    }

    /// Says the line and closes: the first of `writable` and `eof` to come does it.
    fn answer(&self, ctx: &mut Context<'_>) {
        ctx.write(self.line(ctx).as_bytes());
        ctx.close();
    }
}

impl Service for Who {
    type State = ();

    /// The line waits for [`writable`](Service::writable): over TLS that comes after
    /// the handshake, when the session can be reported; on a plain stream, at once.
    fn open(&mut self, ctx: &mut Context<'_>) {
        ctx.want_writable();
    }

    /// What the client sends is not asked for, and dropped.
    fn data(&mut self, _: &mut (), _: &[u8], _: &mut Context<'_>) {}

    fn eof(&mut self, _: &mut (), ctx: &mut Context<'_>) {
        self.answer(ctx);
    }

    fn writable(&mut self, _: &mut (), ctx: &mut Context<'_>) {
        self.answer(ctx);
    }

    /// Answers with the line when the datagram is at least as long; the loop refuses
    /// (and counts) a longer reply.
    fn datagram(&mut self, _: &[u8], ctx: &mut DatagramContext<'_>) {
        let line = self.datagram_line(ctx);
        ctx.reply(line.as_bytes());
    }
}

/// A who line being written.
#[derive(Default)]
struct Line {
    out: String,
    /// Where a value is formatted before it is encoded.
    value: String,
}

impl Line {
    /// Adds `key=value`, the value percent-encoded.
    fn kv(&mut self, key: &str, value: impl fmt::Display) {
        self.value.clear();
        let _ = write!(self.value, "{value}");
        self.sep(key);
        percent_encode(self.value.as_bytes(), &mut self.out);
    }

    /// Adds `key=value` with a value already encoded.
    fn raw(&mut self, key: &str, value: &str) {
        self.sep(key);
        self.out.push_str(value);
    }

    fn sep(&mut self, key: &str) {
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        self.out.push_str(key);
        self.out.push('=');
    }

    fn finish(mut self) -> String {
        self.out.push('\n');
        self.out
    }
}

/// Appends `bytes` with a space, `%` and every byte that is not printable ASCII
/// written as `%XX` (uppercase hex): what is left splits on spaces and reads back with
/// any URL decoder.
pub fn percent_encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_hold_a_space() {
        let mut s = String::new();
        percent_encode("a b%c\td\u{e9}=,~".as_bytes(), &mut s);
        assert_eq!(s, "a%20b%25c%09d%C3%A9=,~");
    }

    #[test]
    fn keys_come_in_order_separated_by_one_space() {
        let mut l = Line::default();
        l.kv("peer", "1.2.3.4:5");
        l.raw("host", "h");
        l.kv("tls_client", "CN=a b,O=x");
        assert_eq!(
            l.finish(),
            "peer=1.2.3.4:5 host=h tls_client=CN=a%20b,O=x\n"
        );
    }

    #[test]
    fn a_host_name_given_is_encoded() {
        let w = Who::new().host("my host").worker(2);
        assert_eq!((w.host.as_str(), w.worker), ("my%20host", 2));
    }
}
