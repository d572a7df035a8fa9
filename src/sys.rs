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

/// The memory this process may use: its cgroup's `memory.max` when it runs under a
/// limit (a container), else the machine's physical memory. `None` when neither can
/// be read.
pub fn memory_limit() -> Option<u64> {
    let physical = {
        let pages = nix::unistd::sysconf(nix::unistd::SysconfVar::_PHYS_PAGES).ok()??;
        let size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
        u64::try_from(pages)
            .ok()?
            .checked_mul(u64::try_from(size).ok()?)
    };
    // cgroup v2: "max" means no limit, a number is the limit in bytes.
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (physical, cgroup) {
        (Some(p), Some(c)) => Some(p.min(c)),
        (p, c) => p.or(c),
    }
}

/// The default `--max-outbuf-total`: a quarter of [`memory_limit`] (1 GiB when it
/// cannot be read). Unsent output is only part of what a server needs; a quarter leaves
/// the rest to the kernel's socket buffers, other processes and the server itself.
pub fn default_max_outbuf_total() -> usize {
    let bytes = memory_limit().map_or(1 << 30, |m| m / 4);
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Asks the allocator to hand memory it holds free back to the system. glibc's
/// `malloc` keeps freed memory in its arenas (and raises its `mmap` threshold after
/// large frees, so later large buffers come from the arenas too); `malloc_trim`
/// returns every whole free page with `madvise`. Elsewhere this does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions: it only walks glibc's own free lists
    // under its own locks, whatever state the program is in.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Makes a system call again while it fails with `EINTR`: a signal arrived mid-call,
/// which says nothing about the socket.
#[inline]
pub(crate) fn retry<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
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

/// This machine's host name (`gethostname`), when it can be read: what `who` mode,
/// the `{host}` placeholder and a bench report say.
pub fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
}
