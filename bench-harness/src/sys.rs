//! The few raw calls the harness needs: resource usage of this process and of one child,
//! resetting the peak-RSS counter, and dropping a file from the page cache.

use std::process::Child;
use std::time::Duration;

/// CPU time (user + system) and peak RSS.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub max_rss_kib: u64,
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000)
}

fn usage_of(who: libc::c_int) -> Usage {
    // SAFETY: rusage is plain data; getrusage fills it and keeps no pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(who, &mut ru) };
    Usage { cpu: tv(ru.ru_utime) + tv(ru.ru_stime), max_rss_kib: ru.ru_maxrss as u64 }
}

/// This process (all threads, including ferry's workers and io_uring's io-wq helpers).
pub fn self_usage() -> Usage {
    usage_of(libc::RUSAGE_SELF)
}

/// Waits for `child` and returns its exit status with its own resource usage (wait4).
pub fn wait_child(child: Child) -> std::io::Result<(bool, Usage)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: we own this child (std never reaps it: we do not call wait on `child`), and
        // the pointers are to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    drop(child);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, Usage { cpu: tv(ru.ru_utime) + tv(ru.ru_stime), max_rss_kib: ru.ru_maxrss as u64 }))
}

/// Resets this process's VmHWM (Linux 4.0+), so each sample reports its own peak.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Current VmHWM in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Drops `path` from the page cache (after flushing its dirty pages).
pub fn drop_cache(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    f.sync_all()?;
    ferry::system::drop_cache(std::os::fd::AsFd::as_fd(&f))
}

/// Sends `len` bytes of `path` on `sock` with a plain sendfile(2) loop.
pub fn sendfile_all(sock: &std::net::TcpStream, path: &std::path::Path, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    let mut off: libc::off_t = 0;
    while (off as u64) < len {
        // SAFETY: both descriptors stay open for the call; `off` is a local the kernel updates.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), f.as_raw_fd(), &mut off, (len - off as u64) as usize) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
    }
    Ok(())
}
