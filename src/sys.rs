//! The platform edge: descriptor limits and the errno values the loop treats specially.

use std::io;

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open descriptors (`RLIMIT_NOFILE`) to the hard limit and
/// returns the soft limit now in force.
///
/// A server holding many connections needs one descriptor each; the soft limit is often
/// 1024 while the hard limit allows far more. If raising fails, the old limit stays and
/// is returned.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Ok(hard);
    }
    Ok(soft)
}

/// The current soft limit on open descriptors.
pub fn nofile_limit() -> io::Result<u64> {
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .map_err(io::Error::from)
}

/// Descriptors held back from `--max-conns` for listeners, the poll instance, the waker,
/// the signal pipe, the reserve descriptor, stdio and log files.
pub const DESCRIPTOR_HEADROOM: u64 = 32;

/// The default connection limit under a descriptor limit: the limit less the headroom.
pub fn default_max_conns(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(DESCRIPTOR_HEADROOM).max(1)).unwrap_or(usize::MAX)
}

fn errno(e: &io::Error) -> Option<Errno> {
    e.raw_os_error().map(Errno::from_raw)
}

/// `accept` failed because the process or the system is out of descriptors or memory
/// for sockets. Retrying at once would fail the same way.
pub(crate) fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        errno(e),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// `accept` failed for a reason tied to one pending connection (it was reset before it
/// was accepted, a firewall refused it, ...): skip it and accept the next.
pub(crate) fn is_per_connection_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || matches!(
        errno(e),
        Some(
            Errno::EPROTO
                | Errno::EPERM
                | Errno::ENETDOWN
                | Errno::ENOPROTOOPT
                | Errno::EHOSTDOWN
                | Errno::ENONET
                | Errno::EHOSTUNREACH
                | Errno::EOPNOTSUPP
                | Errno::ENETUNREACH
        )
    )
}
