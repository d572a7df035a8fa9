//! The PROXY protocol against the balancers that speak it: HAProxy (versions 1 and 2,
//! its health checks, TLS passed through) and nginx's stream module (version 1) in
//! front of the binary, plus a client that skips the balancer. Everything runs on
//! loopback; HAProxy and nginx must be installed (`.ci/run` installs them), and a test
//! fails, saying so, when one is missing.

pub mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sockloop::proxy::ProxyVersion;
use util::balancer::{HaProxy, Nginx, frontend};
use util::child::{Proc, send_ok};
use util::fs::TempDir;
use util::net::{connect, pattern, read_n, read_to_eof, wait_for, write_in_background};
use util::pki::Pki;

/// `sockloop serve --listen URL ARGS...` with the debug log, which names each
/// connection's client and balancer.
fn server(url: &str, args: &[&str]) -> Proc {
    Proc::serve_debug(&[&["--listen", url], args].concat())
}

/// A server on `tls://127.0.0.1:0?proxy=v2` with the certificates of `pki`.
fn tls_server(pki: &Pki, args: &[&str]) -> Proc {
    let (cert, key) = (
        pki.server_cert.to_str().unwrap(),
        pki.server_key.to_str().unwrap(),
    );
    let mut all = vec!["--tls-cert", cert, "--tls-key", key];
    all.extend_from_slice(args);
    server("tls://127.0.0.1:0?proxy=v2", &all)
}

/// Asks for the counters until `ok` holds. Each ask is a signal and a log line, so
/// the asking is spaced out more than [`util::net::wait_until`] would.
fn wait_stats(p: &Proc, what: &str, ok: impl Fn(&HashMap<String, u64>) -> bool) {
    wait_for(what, Duration::from_millis(100), || {
        let stats = p.stats();
        if ok(&stats) {
            return Ok(());
        }
        Err(format!("{stats:?}\n{}", p.stderr()))
    });
}

/// The server's log line for the PROXY header that named `client`, if it is there
/// yet: `conn N from CLIENT via BALANCER: PROXY vV header`. Returns the connection's
/// number and the balancer's address.
fn header_line(p: &Proc, client: SocketAddr, version: u8) -> Option<(u64, SocketAddr)> {
    let needle = format!(" from {client} via ");
    let suffix = format!(": PROXY v{version} header");
    p.stderr().lines().find_map(|l| {
        let (head, rest) = l.split_once(&needle)?;
        let via = rest.strip_suffix(&suffix)?;
        let n = head.rsplit_once("conn ")?.1.parse().ok()?;
        Some((n, via.parse().ok()?))
    })
}

/// Like [`header_line`], but waits for the line (a thread reads the log), which must
/// come within the deadline.
fn expect_header_line(p: &Proc, client: SocketAddr, version: u8) -> (u64, SocketAddr) {
    let what = format!("a 'from {client} via ...: PROXY v{version} header' line");
    wait_for(&what, Duration::from_millis(10), || {
        header_line(p, client, version).ok_or_else(|| format!("the server's log:\n{}", p.stderr()))
    })
}

/// Sends `data` through `addr` while reading the echo, and checks it byte for byte.
/// Returns the client's own address, which a PROXY header must name.
fn echo_through(addr: SocketAddr, data: Vec<u8>) -> SocketAddr {
    let mut s = connect(addr);
    let client = s.local_addr().unwrap();
    let len = data.len();
    let expected = data.clone();
    // The writes go on another thread: 8 MiB does not fit the socket buffers of the
    // three hops, so writing it all before reading would stall.
    let writer = write_in_background(&s, data, false);
    let back = read_n(&mut s, len);
    writer.join().unwrap().expect("write through the balancer");
    assert!(back == expected, "the echo of {len} bytes differs");
    client
}

/// The HAProxy configuration of the two-server tests: one TCP frontend, two servers
/// that get a PROXY header (`send-proxy` or `send-proxy-v2`) on every connection,
/// health checks included. A check that only connects is reset by HAProxy as soon as
/// it is established, often before its header has gone out, so the check sends a line
/// and expects the echo: that way every check carries its header, and an UP server
/// is one that really echoes behind the header.
fn two_server_config(port: u16, send_proxy: &str, s1: u16, s2: u16) -> String {
    frontend(port, "", "")
        + &format!(
            "backend be\n\
             \x20   balance roundrobin\n\
             \x20   option tcp-check\n\
             \x20   tcp-check send \"ping\\n\"\n\
             \x20   tcp-check expect string ping\n\
             \x20   server s1 127.0.0.1:{s1} {send_proxy} check inter 200ms\n\
             \x20   server s2 127.0.0.1:{s2} {send_proxy} check inter 200ms\n"
        )
}

/// Two servers behind HAProxy with PROXY protocol `version`: both come up, their
/// checks' headers are taken, 8 MiB come back byte for byte, and each server names
/// the client that roundrobin sent to it.
fn haproxy_in_front_of_two_servers(version: u8) {
    let url = format!("tcp://127.0.0.1:0?proxy=v{version}");
    let servers = [server(&url, &[]), server(&url, &[])];
    let send_proxy = if version == 1 {
        "send-proxy"
    } else {
        "send-proxy-v2"
    };
    let (p1, p2) = (servers[0].addr(0).port(), servers[1].addr(0).port());
    let haproxy = HaProxy::start(1, |ports| two_server_config(ports[0], send_proxy, p1, p2));
    haproxy.wait_backend_up("be", 2);

    // The checks. Version 2 checks send LOCAL: no client, counted apart, never an
    // error. Version 1 checks are not pinned down either way: HAProxy 2.6 sends a
    // TCP4 line naming the check's own connection (an ordinary header), and a
    // `PROXY UNKNOWN` would be as right.
    for (i, s) in servers.iter().enumerate() {
        wait_stats(s, &format!("server {} to take 3 checks", i + 1), |st| {
            st["proxy_headers"] >= 3
        });
        let st = s.stats();
        assert_eq!(st["proxy_errors"], 0, "server {}: {st:?}", i + 1);
        assert_eq!(st["proxy_timeouts"], 0, "server {}: {st:?}", i + 1);
        if version == 2 {
            assert!(st["proxy_local"] >= 3, "server {}: {st:?}", i + 1);
        }
    }

    // Two clients: roundrobin sends one to each server.
    let first = echo_through(haproxy.addr(0), pattern(8 << 20, 1));
    let second = echo_through(haproxy.addr(0), b"the second client\n".to_vec());
    let mut served = [0; 2];
    for client in [first, second] {
        let what = format!("a server to log a v{version} header naming {client}");
        let on = wait_for(&what, Duration::from_millis(10), || {
            let on: Vec<(usize, SocketAddr)> = servers
                .iter()
                .enumerate()
                .filter_map(|(i, s)| header_line(s, client, version).map(|(_, via)| (i, via)))
                .collect();
            if !on.is_empty() {
                return Ok(on);
            }
            Err(format!(
                "neither did:\n{}\n{}",
                servers[0].stderr(),
                servers[1].stderr()
            ))
        });
        assert_eq!(on.len(), 1, "both servers logged {client}");
        let (i, via) = on[0];
        served[i] += 1;
        assert_eq!(via.ip(), client.ip(), "HAProxy is on loopback too");
        assert_ne!(via, client, "the balancer's connection is not the client's");
    }
    assert_eq!(served, [1, 1], "roundrobin sent both clients to one server");
    for s in &servers {
        let st = s.stats();
        assert_eq!(st["proxy_errors"], 0, "{st:?}");
    }
    let bytes_in: u64 = servers.iter().map(|s| s.stats()["bytes_in"]).sum();
    assert!(bytes_in >= 8 << 20, "the servers read {bytes_in} bytes");
}

#[test]
fn haproxy_send_proxy_v2_checks_are_local_and_echo_is_exact() {
    haproxy_in_front_of_two_servers(2);
}

#[test]
fn haproxy_send_proxy_v1_names_the_client_and_echo_is_exact() {
    haproxy_in_front_of_two_servers(1);
}

#[test]
fn tls_passes_through_haproxy_behind_a_v2_header() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let s = tls_server(&pki, &[]);
    let port = s.addr(0).port();
    // HAProxy does not decrypt: TCP mode passes the client's TLS through. Its checks
    // do their own handshake (check-ssl), after the header as any connection.
    let haproxy = HaProxy::start(1, |ports| {
        frontend(ports[0], "", "")
            + &format!(
                "backend be\n\
                 \x20   option tcp-check\n\
                 \x20   tcp-check send \"ping\\n\"\n\
                 \x20   tcp-check expect string ping\n\
                 \x20   server s1 127.0.0.1:{port} send-proxy-v2 check check-ssl verify none inter 200ms\n"
            )
    });
    haproxy.wait_backend_up("be", 1);

    let tcp = connect(haproxy.addr(0));
    let client = tcp.local_addr().unwrap();
    let mut tls = pki.client_stream(false, tcp);
    let data = pattern(256 << 10, 3);
    for chunk in data.chunks(16 << 10) {
        tls.write_all(chunk)
            .expect("write over TLS through HAProxy");
        let mut back = vec![0u8; chunk.len()];
        tls.read_exact(&mut back).expect("read the echo");
        assert!(back == chunk, "the echo differs");
    }
    assert!(tls.conn.protocol_version().is_some(), "no handshake");

    // The checks make handshakes and headers too, so the counters alone cannot tell
    // the client's apart: the log ties the header naming it to a handshake.
    let (n, via) = expect_header_line(&s, client, 2);
    assert_ne!(via, client);
    let established = format!("conn {n}: TLS established");
    util::net::wait_until("the client's handshake in the log", || {
        s.stderr().contains(&established)
    });
    let st = s.stats();
    assert!(st["tls_handshakes"] >= 1, "{st:?}");
    assert!(st["proxy_headers"] >= 1, "{st:?}");
    assert!(st["proxy_local"] >= 1, "the checks' LOCAL headers: {st:?}");
    assert_eq!(st["proxy_errors"], 0, "{st:?}");
}

#[test]
fn nginx_stream_proxy_protocol_names_the_client() {
    let s = server("tcp://127.0.0.1:0?proxy=v1", &[]);
    let port = s.addr(0).port();
    let nginx = Nginx::stream(1, |ports| {
        format!(
            "    server {{\n\
             \x20       listen 127.0.0.1:{};\n\
             \x20       proxy_pass 127.0.0.1:{port};\n\
             \x20       proxy_protocol on;\n\
             \x20   }}\n",
            ports[0]
        )
    });
    let client = echo_through(nginx.addr(0), pattern(1 << 20, 4));
    let (_, via) = expect_header_line(&s, client, 1);
    assert_eq!(via.ip(), client.ip());
    assert_ne!(via, client, "nginx's connection is not the client's");
    let st = s.stats();
    assert_eq!(st["proxy_headers"], 1, "{st:?}\nnginx: {}", nginx.output());
    assert_eq!(st["proxy_errors"], 0, "{st:?}");
    assert_eq!(st["proxy_local"], 0, "{st:?}");
    assert!(st["bytes_in"] >= 1 << 20, "{st:?}");
}

#[test]
fn a_client_that_skips_the_balancer_is_closed_and_the_next_one_served() {
    let s = server("tcp://127.0.0.1:0?proxy=v2", &[]);
    let mut direct = connect(s.addr(0));
    direct
        .write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        .unwrap();
    let got = read_to_eof(&mut direct);
    assert!(
        got.is_empty(),
        "a connection without a header was served: {got:?}"
    );
    let st = s.stats();
    assert_eq!(st["proxy_errors"], 1, "{st:?}");
    assert_eq!(st["proxy_headers"], 0, "{st:?}");

    // The same server, a client that sends its header: served, under the header's name.
    let named: SocketAddr = "203.0.113.9:41000".parse().unwrap();
    let mut ok = connect(s.addr(0));
    let mut msg = sockloop::proxy::encode(ProxyVersion::V2, named, s.addr(0));
    msg.extend_from_slice(b"hello");
    ok.write_all(&msg).unwrap();
    assert_eq!(read_n(&mut ok, 5), b"hello");
    let (_, via) = expect_header_line(&s, named, 2);
    assert_eq!(via, ok.local_addr().unwrap());
    let st = s.stats();
    assert_eq!((st["proxy_headers"], st["proxy_errors"]), (1, 1), "{st:?}");
}

/// The HAProxy configuration of one backend server with no health checks;
/// `frontend_lines` go in the frontend section.
fn one_server(port: u16, bind_options: &str, frontend_lines: &str, server: &str) -> String {
    frontend(port, bind_options, frontend_lines) + &format!("backend be\n    server s1 {server}\n")
}

/// HAProxy with `accept-proxy` on its frontend, logging the client each header names,
/// in front of a plain echo server.
fn haproxy_accepting_proxy(echo_port: u16) -> HaProxy {
    HaProxy::start(1, |ports| {
        one_server(
            ports[0],
            "accept-proxy",
            "    log-format \"client=%ci:%cp\"\n",
            &format!("127.0.0.1:{echo_port}"),
        )
    })
}

/// The headers the clients write (`sockloop::proxy::encode`) read by HAProxy's own
/// parser: it names the client they name, and the bytes behind the header are echoed.
#[test]
fn haproxy_accept_proxy_reads_the_headers_the_clients_write() {
    let s = server("tcp://127.0.0.1:0", &[]);
    let haproxy = haproxy_accepting_proxy(s.addr(0).port());
    for (version, source) in [
        (ProxyVersion::V2, "203.0.113.9:41000"),
        (ProxyVersion::V1, "198.51.100.7:42000"),
        (ProxyVersion::V2, "[2001:db8::9]:43000"),
        (ProxyVersion::V1, "[2001:db8::7]:44000"),
    ] {
        let source: SocketAddr = source.parse().unwrap();
        let mut c = connect(haproxy.addr(0));
        let mut msg = sockloop::proxy::encode(version, source, haproxy.addr(0));
        msg.extend_from_slice(b"hello");
        c.write_all(&msg).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut c), b"hello", "v{version} from {source}");
        // HAProxy logs a TCP session when it ends; %ci prints IPv6 without brackets.
        let logged = format!("client={}:{}", source.ip(), source.port());
        wait_for(
            &format!("HAProxy to log {logged}"),
            Duration::from_millis(10),
            || {
                if haproxy.stdout().contains(&logged) {
                    Ok(())
                } else {
                    Err(haproxy.output())
                }
            },
        );
    }
}

#[test]
fn who_mode_behind_haproxy_names_the_client_and_the_balancer() {
    let s = server("tcp://127.0.0.1:0?proxy=v2", &["--mode", "who"]);
    let port = s.addr(0).port();
    let haproxy = HaProxy::start(1, |ports| {
        one_server(ports[0], "", "", &format!("127.0.0.1:{port} send-proxy-v2"))
    });
    let mut c: TcpStream = connect(haproxy.addr(0));
    let client = c.local_addr().unwrap();
    let answer = String::from_utf8(read_to_eof(&mut c)).expect("a text answer");
    assert!(
        answer.ends_with('\n') && answer.lines().count() == 1,
        "{answer:?}"
    );
    let field = |name: &str| {
        answer
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {answer:?}"))
            .to_string()
    };
    let peer: SocketAddr = field("peer=").parse().expect("peer= an address");
    let via: SocketAddr = field("via=").parse().expect("via= an address");
    assert_eq!(peer, client, "{answer:?}");
    assert_eq!(via.ip(), client.ip(), "HAProxy is on loopback: {answer:?}");
    assert_ne!(via, client, "{answer:?}");
    field("local=");
}

#[test]
fn sockloop_send_proxy_is_understood_by_haproxy() {
    let s = server("tcp://127.0.0.1:0", &[]);
    let port = s.addr(0).port();
    let haproxy = haproxy_accepting_proxy(port);
    let url = format!("tcp://{}", haproxy.addr(0));
    for (version, source) in [("v2", "203.0.113.9:41000"), ("v1", "198.51.100.7:42000")] {
        let back = send_ok(&[&url, "hello", "--proxy", version, "--proxy-source", source]);
        assert_eq!(back, b"hello", "send --proxy {version}");
        let logged = format!("client={source}");
        util::net::wait_until(&format!("HAProxy to log {logged}"), || {
            haproxy.stdout().contains(&logged)
        });
    }
}

/// `who` on a `tls://` listener behind HAProxy (TLS passed through, a v2 header in
/// front): the handshake completes after the header, and the line names the client,
/// HAProxy and the TLS session.
#[test]
fn who_over_tls_behind_haproxy_reports_the_session() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path());
    let s = tls_server(&pki, &["--mode", "who"]);
    let port = s.addr(0).port();
    let haproxy = HaProxy::start(1, |ports| {
        one_server(ports[0], "", "", &format!("127.0.0.1:{port} send-proxy-v2"))
    });
    let tcp = connect(haproxy.addr(0));
    let client = tcp.local_addr().unwrap();
    let mut tls = pki.client_stream(false, tcp);
    let mut answer = String::new();
    // The server closes with close_notify after its line; a missing one reads as an
    // error here, which the test would report.
    tls.read_to_string(&mut answer)
        .expect("the who line over TLS through HAProxy");
    let version = match tls.conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        other => panic!("no handshake: {other:?}"),
    };
    assert!(answer.ends_with('\n'), "{answer:?}");
    assert!(
        answer.starts_with(&format!("peer={client} via=127.0.0.1:")),
        "{answer:?}"
    );
    assert!(answer.contains(&format!(" tls={version}/")), "{answer:?}");
}
