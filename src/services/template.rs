//! Templates for `--banner` and `--prefix` (see [`Template`]).

use std::error::Error;
use std::fmt;
use std::str::FromStr;

use super::who::hostname;
use crate::service::{ConnId, Context};
use crate::transport::PeerAddr;

/// Templates for what a server says about a connection: the `--banner` line sent to
/// every new connection, and the `--prefix` put before every line echoed in line
/// mode.
///
/// A template is text with placeholders in braces:
///
/// | placeholder | becomes |
/// |---|---|
/// | `{host}` | this machine's host name |
/// | `{peer}` | the client's address (after a PROXY header: the client it named) |
/// | `{via}` | the load balancer that sent a PROXY header naming the client; empty without one |
/// | `{local}` | this end's address |
/// | `{conn}` | the connection's id (the number chat prints as `<7>`) |
/// | `{worker}` | the worker's index, 0 without `--workers` |
/// | `{env:NAME}` | the environment variable `NAME`, read once at start; empty when unset |
///
/// `{{` and `}}` stand for literal braces. An unknown placeholder or a `{` without
/// its `}` is an error when the template is parsed, so a typo is caught before the
/// server starts rather than sent to every client.
///
/// What is the same for every connection — the host name, the environment — is read
/// once, when the template is parsed (a pod's name in `{env:POD_NAME}` does not change
/// under a running process); what differs per connection is filled in by
/// [`Template::expand`], which asks the kernel only for the addresses the template
/// names. A placeholder's value never breaks the line: control characters in it are
/// written as `%XX`.
///
/// ```
/// use sockloop::services::{Template, Vars};
///
/// let t = Template::parse_with("{env:POD} says hello to {peer}", "box", |name| {
///     (name == "POD").then(|| "web-1".to_string())
/// })?;
/// let peer = "203.0.113.9:41000".parse().map(sockloop::PeerAddr::Inet)?;
/// let mut line = Vec::new();
/// t.expand(&Vars { peer: Some(peer), ..Vars::default() }, &mut line);
/// assert_eq!(line, b"web-1 says hello to 203.0.113.9:41000");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    worker: usize,
}

/// A piece of a template: text fixed at parse time, or a per-connection value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Literal text, environment variables and the host name already in it.
    Text(String),
    Peer,
    Via,
    Local,
    Conn,
    Worker,
}

/// The per-connection values a template's placeholders stand for. [`Template::expand_for`]
/// fills them from a [`Context`]; a library user may fill them by hand. A value that is
/// `None` expands to nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars {
    /// The connection, for `{conn}`.
    pub conn: Option<ConnId>,
    /// The client, for `{peer}`.
    pub peer: Option<PeerAddr>,
    /// The load balancer, for `{via}`.
    pub via: Option<PeerAddr>,
    /// This end, for `{local}`.
    pub local: Option<PeerAddr>,
}

/// Why a template was refused: names the template and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError(String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for TemplateError {}

/// The placeholders, as the error for an unknown one lists them.
const KNOWN: &str = "{host}, {peer}, {via}, {local}, {conn}, {worker}, {env:NAME}";

impl Template {
    /// Parses `s`, reading the host name (if `{host}` is used) and the environment
    /// variables it names now, once.
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let host = if s.contains("{host}") {
            hostname()
        } else {
            String::new()
        };
        Self::parse_with(s, &host, |name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// [`parse`](Self::parse) with the host name and the environment given: for tests,
    /// and for programs that keep their settings elsewhere.
    pub fn parse_with(
        s: &str,
        host: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if rest[i..].starts_with("{{") || rest[i..].starts_with("}}") {
                text.push_str(&rest[i..=i]);
                rest = &after[1..];
                continue;
            }
            if rest[i..].starts_with('}') {
                // A lone `}` cannot be misread: it is text.
                text.push('}');
                rest = after;
                continue;
            }
            let Some(end) = after.find('}') else {
                return Err(TemplateError(format!(
                    "template '{s}': '{{' at byte {} is not closed by '}}' (write '{{{{' for a brace)",
                    s.len() - rest.len() + i
                )));
            };
            let name = &after[..end];
            let part = match name {
                "host" => Part::Text(one_line(host)),
                "peer" => Part::Peer,
                "via" => Part::Via,
                "local" => Part::Local,
                "conn" => Part::Conn,
                "worker" => Part::Worker,
                _ => match name.strip_prefix("env:") {
                    Some(var) if !var.is_empty() && !var.contains('{') => {
                        Part::Text(one_line(&env(var).unwrap_or_default()))
                    }
                    _ => {
                        return Err(TemplateError(format!(
                            "template '{s}': unknown placeholder '{{{name}}}' (known: {KNOWN})"
                        )));
                    }
                },
            };
            match part {
                Part::Text(t) => text.push_str(&t),
                other => {
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(other);
                }
            }
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts, worker: 0 })
    }

    /// The same template for worker `i` (`{worker}`): each worker's service gets its
    /// own copy.
    pub fn worker(mut self, i: usize) -> Self {
        self.worker = i;
        self
    }

    /// True when the template says nothing at all (`--banner ''`).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// True when expanding needs something of the connection beyond its id: an
    /// address, which costs a system call to learn.
    fn needs(&self, what: &Part) -> bool {
        self.parts.contains(what)
    }

    /// Appends the expansion to `out`: the text, with each placeholder replaced by its
    /// value in `vars`.
    pub fn expand(&self, vars: &Vars, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Worker => out.extend_from_slice(self.worker.to_string().as_bytes()),
                Part::Conn => {
                    if let Some(id) = vars.conn {
                        out.extend_from_slice(id.to_string().as_bytes());
                    }
                }
                Part::Peer => push_addr(vars.peer.as_ref(), out),
                Part::Via => push_addr(vars.via.as_ref(), out),
                Part::Local => push_addr(vars.local.as_ref(), out),
            }
        }
    }

    /// Appends the expansion for the connection of `ctx` to `out`. Only the addresses
    /// the template names are asked for (each is a system call); one that cannot be
    /// had (the peer already gone) expands to nothing.
    pub fn expand_for(&self, ctx: &Context<'_>, out: &mut Vec<u8>) {
        let vars = Vars {
            conn: Some(ctx.id()),
            peer: self
                .needs(&Part::Peer)
                .then(|| ctx.peer_addr().ok())
                .flatten(),
            via: self
                .needs(&Part::Via)
                .then(|| ctx.proxied_by().and_then(Result::ok))
                .flatten(),
            local: self
                .needs(&Part::Local)
                .then(|| ctx.local_addr().ok())
                .flatten(),
        };
        self.expand(&vars, out);
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::parse(s)
    }
}

fn push_addr(addr: Option<&PeerAddr>, out: &mut Vec<u8>) {
    if let Some(a) = addr {
        out.extend_from_slice(one_line(&a.to_string()).as_bytes());
    }
}

/// `value` with its control characters written as `%XX`, so that no value can end the
/// line early or start another.
fn one_line(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_ascii_control() {
            s.push_str(&format!("%{:02X}", c as u32));
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "POD_NAME" => Some("web-7".into()),
            "EVIL" => Some("a\r\nb".into()),
            _ => None,
        }
    }

    fn expand(template: &str, vars: &Vars) -> String {
        let t = Template::parse_with(template, "box", env).expect("parses");
        let mut out = Vec::new();
        t.expand(vars, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    fn inet(s: &str) -> Option<PeerAddr> {
        Some(PeerAddr::Inet(s.parse::<SocketAddr>().expect("an address")))
    }

    #[test]
    fn every_placeholder_is_filled_in() {
        let vars = Vars {
            conn: Some(ConnId { seq: 7, key: 3 }),
            peer: inet("203.0.113.9:41000"),
            via: inet("10.0.0.2:55012"),
            local: inet("[::1]:5001"),
        };
        let t = Template::parse_with(
            "{host} {peer} {via} {local} {conn} {worker} {env:POD_NAME}",
            "box",
            env,
        )
        .expect("parses")
        .worker(3);
        let mut out = Vec::new();
        t.expand(&vars, &mut out);
        assert_eq!(
            out,
            b"box 203.0.113.9:41000 10.0.0.2:55012 [::1]:5001 7 3 web-7"
        );
    }

    #[test]
    fn missing_values_are_empty() {
        assert_eq!(
            expand("[{via}] [{env:NOPE}] [{conn}]", &Vars::default()),
            "[] [] []"
        );
    }

    #[test]
    fn doubled_braces_are_literal_and_a_lone_closing_one_is_text() {
        assert_eq!(
            expand("{{host}} }} } {host}", &Vars::default()),
            "{host} } } box"
        );
    }

    #[test]
    fn a_value_cannot_break_the_line() {
        assert_eq!(expand("<{env:EVIL}>", &Vars::default()), "<a%0D%0Ab>");
    }

    #[test]
    fn unknown_placeholders_and_unclosed_braces_are_refused() {
        for (bad, needle) in [
            ("{nope}", "unknown placeholder '{nope}'"),
            ("{env:}", "unknown placeholder '{env:}'"),
            ("{Host}", "unknown placeholder"),
            ("hello {peer", "not closed"),
            ("{", "at byte 0"),
            ("ab{{c{", "at byte 5"),
        ] {
            let e = Template::parse_with(bad, "box", env).expect_err(bad);
            let e = e.to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: one line: {e}");
        }
    }

    #[test]
    fn text_only_templates_are_one_part() {
        let t = Template::parse_with("a {host} b {env:POD_NAME}", "h", env).expect("parses");
        assert_eq!(t.parts, vec![Part::Text("a h b web-7".into())]);
        assert!(
            Template::parse_with("", "h", env)
                .expect("parses")
                .is_empty()
        );
    }
}
