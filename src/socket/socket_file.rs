//! The life of a Unix socket file.
//!
//! A Unix socket lives at a path, as a file. Binding creates that file and closing the
//! socket does not remove it, so a server that died leaves a stale one behind. Before
//! binding, a socket file nobody answers on is removed; a live one is "address in
//! use"; anything that is not a socket is refused and left untouched. The file is
//! removed again when the socket closes — if it is still the one this process made,
//! and never when the socket was handed over already bound.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

/// A Unix socket file this process created. Dropping it removes the file, unless the
/// path now holds something else (another server took it over).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Binds a new non-blocking Unix socket of type `ty` at `path`, clearing a stale
    /// file first and setting the file's permission bits if asked.
    pub(crate) fn bind(
        path: &Path,
        ty: Type,
        perm: Option<u32>,
    ) -> io::Result<(Socket, SocketFile)> {
        clear_stale(path, ty)?;
        let sock = Socket::new(Domain::UNIX, ty, None)?;
        sock.set_nonblocking(true)?;
        sock.bind(&SockAddr::unix(path)?)?;
        let meta = fs::symlink_metadata(path)?;
        let file = SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if let Some(mode) = perm {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        Ok((sock, file))
    }

    /// A fresh path in the temporary directory, for a client's own datagram socket: a
    /// Unix datagram server can only answer a sender that has an address.
    pub(crate) fn temp_path() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("sockloop-client-{}-{n}.sock", std::process::id()))
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Makes way for a new socket at `path`: nothing there is fine; a socket file nobody
/// answers on is removed; a live socket or anything else is an error.
fn clear_stale(path: &Path, ty: Type) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; left untouched",
                path.display()
            ),
        ));
    }
    // A socket file: ask whether anyone is behind it.
    let probe = Socket::new(Domain::UNIX, ty, None)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is serving on this socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("removing stale socket file {}", path.display());
            fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}
