//! Readers of `/proc`. Each one fails the test, naming what it could not read, when it
//! cannot measure: a reading that quietly came out as 0 would make the assertion built
//! on it pass without measuring anything.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The contents of a `/proc` file; fails the test if it cannot be read.
fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Resident memory of process `pid` in KiB: `VmRSS` in `/proc/PID/status`.
pub fn rss_kb(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = read(&path);
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {path}:\n{status}"))
}

/// CPU time process `pid` has used so far (user + system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let stat = read(&path);
    // The command name is in parentheses and may hold spaces: count fields after it.
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .unwrap_or_else(|| panic!("no command name in {path}: {stat}"));
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> u64 {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no CPU time field in {path}: {stat}"))
    };
    // Linux reports these in USER_HZ, which is 100 on every architecture.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The `drops` column of `/proc/PID/net/udp` for the IPv4 socket bound to `port`:
/// datagrams the kernel discarded because the socket's receive buffer was full.
pub fn udp_socket_drops(pid: u32, port: u16) -> u64 {
    let path = format!("/proc/{pid}/net/udp");
    let table = read(&path);
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&want))
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| {
            panic!("no socket on port {port} with a drops column in {path}:\n{table}")
        })
}

/// The TCP state `FIN_WAIT2` (`05` in the `st` column of `/proc/net/tcp`): this side
/// has sent its FIN and the peer has acknowledged it.
pub const TCP_FIN_WAIT2: u8 = 0x05;

/// The state of the TCP socket from `local` to `remote`, as the `st` column of
/// `/proc/net/tcp` (`/proc/net/tcp6` for IPv6) gives it: a number from the kernel's
/// `tcp_states.h`, such as [`TCP_FIN_WAIT2`]. The socket must exist.
pub fn tcp_state(local: SocketAddr, remote: SocketAddr) -> u8 {
    let path = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let table = read(path);
    let (want_local, want_remote) = (proc_net_addr(local), proc_net_addr(remote));
    let line = table
        .lines()
        .skip(1)
        .find(|l| {
            let mut f = l.split_whitespace().skip(1);
            f.next() == Some(want_local.as_str()) && f.next() == Some(want_remote.as_str())
        })
        .unwrap_or_else(|| {
            panic!("no socket {local} -> {remote} ({want_local} {want_remote}) in {path}:\n{table}")
        });
    line.split_whitespace()
        .nth(3)
        .and_then(|st| u8::from_str_radix(st, 16).ok())
        .unwrap_or_else(|| panic!("no state column in {path}: {line}"))
}

/// The TCP state `LISTEN` (`0A`).
pub const TCP_LISTEN: u8 = 0x0A;

/// True when process `pid` holds a socket listening on `addr` (IPv4): a way to see
/// that another program has bound its port without connecting to it, which it would
/// count as a client. The socket's inode, from `/proc/net/tcp`, must be among the
/// process's descriptors: someone else listening on the port does not count.
pub fn listens_on(pid: u32, addr: SocketAddr) -> bool {
    let want = proc_net_addr(addr);
    let inodes: Vec<String> = read("/proc/net/tcp")
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening =
                f.len() > 9 && f[1] == want && u8::from_str_radix(f[3], 16) == Ok(TCP_LISTEN);
            listening.then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    // The process may be gone or exiting: then it listens on nothing.
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

/// An address as `/proc/net/tcp` prints it: the IP as 32-bit words in host byte
/// order, in hex, then `:` and the port in hex.
fn proc_net_addr(addr: SocketAddr) -> String {
    let octets = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let ip: String = octets
        .chunks(4)
        .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    format!("{ip}:{:04X}", addr.port())
}
