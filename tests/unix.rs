//! Unix-domain stream sockets, and the socket file's life.

pub mod util;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};

use nix::sys::signal::Signal;
use sockloop::Builder;
use sockloop::services::{Echo, Mode, Modes};
use util::child::{Proc, expect_failure};
use util::fs::TempDir;
use util::net::{DEADLINE, pattern, read_to_eof};
use util::server::LibServer;

fn unix_client(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

#[test]
fn unix_stream_echo_with_half_close() {
    let dir = TempDir::new();
    let path = dir.join("echo.sock");
    let server = LibServer::start(
        Builder::new().listen(format!("unix:{}", path.display()).parse().unwrap()),
        Echo,
    );
    // Large enough that the server has to queue and pause: the same stream machinery
    // as TCP.
    let data = pattern(8 << 20, 11);
    let mut s = unix_client(&path);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let d = data.clone();
        std::thread::spawn(move || {
            w.write_all(&d).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data, "echoed bytes differ");
    let stats = server.stop();
    assert_eq!(stats.closed, 1);
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn the_socket_file_is_created_with_its_permissions_and_gone_after_sigterm() {
    let dir = TempDir::new();
    let path = dir.join("s.sock");
    let url = format!("unix:{}?perm=0600", path.display());
    let mut server = Proc::serve(&["--listen", &url]);
    assert_eq!(
        server.ready[0],
        format!("listening unix:{}", path.display())
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut s = unix_client(&path);
    s.write_all(b"over unix").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"over unix");
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
    assert!(
        !path.exists(),
        "the socket file is still there after shutdown"
    );
}

#[test]
fn a_regular_file_or_directory_at_the_path_is_refused_and_kept() {
    let dir = TempDir::new();
    let file = dir.join("precious.txt");
    std::fs::write(&file, b"do not delete").unwrap();
    let sub = dir.join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    for (path, scheme) in [(&file, "unix"), (&sub, "unixgram")] {
        let url = format!("{scheme}:{}", path.display());
        let err = expect_failure(&["serve", "--listen", &url], 1, "not a socket");
        assert!(err.contains(&url), "the error names the address: {err}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"do not delete");
    assert!(sub.is_dir());
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_one_is_not() {
    let dir = TempDir::new();
    let path = dir.join("stale.sock");
    // A server that died leaves its socket file behind.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let url = format!("unix:{}", path.display());
    let server = Proc::serve(&["--listen", &url]);
    assert_eq!(
        read_to_eof(&mut {
            let mut s = unix_client(&path);
            s.write_all(b"fresh").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            s
        }),
        b"fresh"
    );
    // While it runs, a second server must not steal the path.
    expect_failure(&["serve", "--listen", &url], 1, "another process");
    assert!(path.exists(), "the live server's socket file was removed");
    drop(server);
}

#[test]
fn limits_apply_to_unix_connections_too() {
    let dir = TempDir::new();
    let path = dir.join("full.sock");
    let b = Builder::new()
        .listen(format!("unix:{}", path.display()).parse().unwrap())
        .max_conns(1);
    let server = LibServer::start(b, Modes::new(Mode::Line));
    let mut first = unix_client(&path);
    first.write_all(b"one\n").unwrap();
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut first, &mut buf).unwrap();
    assert_eq!(&buf, b"one\n");
    let mut second = unix_client(&path);
    assert_eq!(read_to_eof(&mut second), b"ERR server full\n");
    drop(first);
    let stats = server.stop();
    assert_eq!(stats.rejected, 1);
}
