//! Child processes of the tests and the bench: stopping one (SIGTERM, then SIGKILL after a
//! grace), and what /proc says about a process (memory, threads, CPU time, descriptors,
//! children, this process's descriptor limit). Linux only, like the tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// How often [`terminate`] looks whether the child has exited.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// How [`terminate`] went.
#[derive(Debug)]
pub struct Stopped {
    pub status: Option<ExitStatus>,
    /// Exited on SIGTERM within the grace (false: it needed SIGKILL, or had already exited).
    pub graceful: bool,
    pub took: Duration,
}

/// SIGTERM to `child`, SIGKILL if it has not exited within `grace` (said on stderr, naming
/// it `name`); reaps it either way.
pub fn terminate(child: &mut Child, grace: Duration, name: &str) -> Stopped {
    let t0 = Instant::now();
    if let Ok(Some(status)) = child.try_wait() {
        return Stopped { status: Some(status), graceful: false, took: Duration::ZERO };
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    while t0.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return Stopped { status: Some(status), graceful: true, took: t0.elapsed() };
        }
        thread::sleep(EXIT_POLL);
    }
    eprintln!("{name} did not exit within {grace:?} of SIGTERM: SIGKILL");
    let _ = child.kill();
    let status = child.wait().ok();
    Stopped { status, graceful: false, took: t0.elapsed() }
}

/// The direct children of `pid` (empty if it has none or is gone).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// A number field of /proc/PID/status (`VmRSS` and `VmHWM` in KiB, `Threads`, ...).
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The thread ids of `pid` now (/proc/PID/task): the `[TID]` the kernel names a crashed
/// thread by.
pub fn tasks(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS").unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// Peak resident memory so far, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmHWM").unwrap_or_else(|| panic!("no VmHWM for pid {pid}"))
}

/// Threads of `pid` now.
pub fn threads(pid: u32) -> u64 {
    proc_status(pid, "Threads").unwrap_or_else(|| panic!("no Threads for pid {pid}"))
}

/// User + system CPU time used by `pid` so far (all its threads).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the `(comm)`, which may itself hold spaces: state is
    // field 3, utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("comm in /proc/PID/stat") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// sysconf(_SC_CLK_TCK), from getconf(1) once per process (not a fork per reading, which
/// the bench would pay between its measurements); 100 on every Linux we know.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// How many file descriptors `pid` has open now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// How many of `pid`'s fds are below `limit` (an fd inherited from the test harness may
/// sit above a limit set later and does not block new ones).
pub fn fds_below(pid: u32, limit: usize) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
                .filter(|&fd| fd < limit)
                .count()
        })
        .unwrap_or(0)
}

/// How many TCP connections `pid` holds open to `port` on the IPv4 loopback
/// side it connected to: its sockets (/proc/PID/fd) matched by inode with
/// ESTABLISHED entries of /proc/net/tcp whose remote port is `port`. For a
/// proxy and its SAM port: the SAM sessions it holds (one control socket
/// each) plus its open streams.
pub fn tcp_connections_to(pid: u32, port: u16) -> usize {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 9
                && f[3] == "01"
                && f[2].ends_with(&format!(":{port:04X}"))
                && inodes.iter().any(|i| i == f[9])
        })
        .count()
}

/// The soft RLIMIT_NOFILE of this process (from /proc/self/limits).
pub fn nofile_soft_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|w| w.parse().ok())
        .unwrap_or(1024)
}
