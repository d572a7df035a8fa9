//! The loop's counters: what happened inside it, in numbers.
//!
//! They are plain integers incremented on the loop's own thread (no atomics on the hot
//! path). The binary logs them as one `stats key=value ...` line at shutdown and on
//! SIGUSR1; a program embedding the loop reads them with
//! [`EventLoop::stats`](crate::EventLoop::stats).

use std::fmt;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// Counters of one event loop. Every field is a running total except the gauges
        /// `active`, `queued_bytes`, `paused` and `handshaking`.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Stats {
            /// Every counter's name and its description (its doc comment), in the
            /// order of [`fields`](Self::fields): the help text of the metrics.
            pub fn descriptions() -> &'static [(&'static str, &'static str)] {
                &[$( (stringify!($name), concat!($($doc),*)), )*]
            }

            /// Every counter as `(name, value)`, in a fixed order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }

            /// Adds another loop's counters to these (for `--workers`).
            pub fn add(&mut self, other: &Stats) {
                $( self.$name += other.$name; )*
            }
        }
    };
}

counters! {
    /// Stream connections accepted and served.
    accepted,
    /// Stream connections accepted and closed at once (`--max-conns`, descriptor exhaustion).
    rejected,
    /// Stream connections closed, for any reason.
    closed,
    /// Stream connections open now.
    active,
    /// Bytes written by services and not yet taken by the sockets, now.
    queued_bytes,
    /// Connections not read because their unsent output reached the high-water mark,
    /// now.
    paused,
    /// Connections waiting for their PROXY header or TLS handshake, now.
    handshaking,
    /// TLS handshakes completed.
    tls_handshakes,
    /// TLS connections closed on a protocol error: a failed handshake (no or a bad
    /// client certificate, not TLS at all) or a bad record later.
    tls_errors,
    /// TLS connections closed because the handshake did not complete in time.
    handshake_timeouts,
    /// PROXY protocol headers received and taken off (`LOCAL` and `UNKNOWN` ones too).
    proxy_headers,
    /// PROXY protocol headers that named no client: version 2 `LOCAL` (a balancer's
    /// health check) or version 1 `UNKNOWN`. The connection keeps the socket's addresses.
    proxy_local,
    /// Connections closed because what came where a PROXY header was expected was not
    /// one: garbage, a wrong signature, a header cut short by the peer, or one too long.
    proxy_errors,
    /// Connections closed because their PROXY header was not complete within
    /// `--handshake-timeout` of the accept.
    proxy_timeouts,
    /// Bytes read from stream sockets and datagrams received.
    bytes_in,
    /// Bytes written to stream sockets and datagrams sent.
    bytes_out,
    /// Bytes read and dropped unseen by the service: input that arrived after the
    /// connection started closing (while it lingered).
    bytes_discarded,
    /// `read`/`recv` calls on stream sockets.
    reads,
    /// `write`/`send` calls on stream sockets.
    writes,
    /// Reads that returned `WouldBlock` (the kernel queue was empty).
    read_would_block,
    /// Writes that returned `WouldBlock` (the kernel send buffer was full).
    write_would_block,
    /// Writes that took only part of what they were given.
    short_writes,
    /// Times a connection stopped being read because its unsent output passed the high-water mark.
    backpressure_pauses,
    /// Times a paused connection drained below the low-water mark and was read again.
    backpressure_resumes,
    /// Times a connection used its whole read budget in one turn and was put back for the next.
    budget_yields,
    /// `poll` calls (turns of the loop).
    polls,
    /// Readiness events delivered by `poll`.
    events,
    /// Connections closed because they were idle for `--idle-timeout`.
    idle_timeouts,
    /// Connections of a short-lived listener (the metrics listener: one request each)
    /// closed because they had not finished within `--handshake-timeout`.
    request_timeouts,
    /// Connections closed as slow consumers: their unsent output passed `--max-outbuf`,
    /// or they owed the most when the output of all connections passed
    /// `--max-outbuf-total` (those are also counted in `outbuf_evictions`).
    slow_consumers,
    /// Connections closed because the unsent output of all connections together passed
    /// `--max-outbuf-total` and they owed the most.
    outbuf_evictions,
    /// Connections ended by a reset, broken pipe or other socket error.
    conn_errors,
    /// `accept` calls that failed because the process or system ran out of descriptors.
    accept_fd_exhausted,
    /// Datagrams received.
    datagrams_in,
    /// Datagrams sent.
    datagrams_out,
    /// Receive calls on datagram sockets (`recv_from`, or `recvmmsg` taking up to 32).
    datagram_recv_calls,
    /// Send calls on datagram sockets (`send_to`, or `sendmmsg` sending a whole batch).
    datagram_send_calls,
    /// Datagrams dropped: unsafe source port, full reply queue, or unanswerable sender.
    datagrams_dropped,
    /// Errors reported by datagram sockets (ICMP-induced and the like), never fatal.
    datagram_errors,
}

impl fmt::Display for Stats {
    /// `key=value` pairs separated by spaces, the body of the binary's `stats` log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.fields().into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_snake_case_key_value() {
        let s = Stats {
            accepted: 12,
            datagrams_dropped: 3,
            ..Stats::default()
        };
        let line = s.to_string();
        assert!(line.starts_with("accepted=12 rejected=0 "), "{line}");
        assert!(line.contains(" datagrams_dropped=3 "), "{line}");
        assert!(line.split(' ').all(|kv| kv.split_once('=').is_some()));
    }

    #[test]
    fn add_sums_every_field() {
        let mut a = Stats {
            reads: 2,
            ..Stats::default()
        };
        a.add(&Stats {
            reads: 3,
            writes: 1,
            ..Stats::default()
        });
        assert_eq!((a.reads, a.writes), (5, 1));
    }
}
