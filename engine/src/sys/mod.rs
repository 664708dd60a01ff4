//! Raw Linux calls, each behind the one `syscall!` macro that turns a negative return into
//! `io::Error::last_os_error()`.
//!
//! This is one of the three rooms where `unsafe` may live (with `ring/` and `buffers/`). Every
//! wrapper here takes borrowed or owned descriptors and Rust references, so callers never handle a
//! raw pointer. The trade-off: a few wrappers copy small values (offsets) in and out instead of
//! handing the kernel a pointer into caller state, which costs nothing measurable.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Calls a libc function and maps `-1` to the thread's `errno`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes live descriptors borrowed from owned handles and
        // pointers to locals or buffers that outlive the call; the kernel does not keep them.
        let res = unsafe { libc::$fn($($arg),*) };
        if res < 0 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Largest byte count Linux moves in one read/write/sendfile/copy_file_range call.
pub const MAX_RW: usize = 0x7fff_f000;

/// `copy_file_range(2)` with explicit offsets; returns bytes copied (0 at end of source).
pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    let mut off_in = src_off as libc::loff_t;
    let mut off_out = dst_off as libc::loff_t;
    let n = syscall!(copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, len.min(MAX_RW), 0))?;
    Ok(n as usize)
}

/// `sendfile(2)` from a file offset to any descriptor (a socket here).
pub fn sendfile(out: BorrowedFd<'_>, src: BorrowedFd<'_>, off: u64, len: usize) -> io::Result<usize> {
    let mut o = off as libc::off_t;
    let n = syscall!(sendfile(out.as_raw_fd(), src.as_raw_fd(), &mut o, len.min(MAX_RW)))?;
    Ok(n as usize)
}

/// `recv(2)` on a stream socket.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let n = syscall!(recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0))?;
    Ok(n as usize)
}

/// `send(2)` with MSG_NOSIGNAL: a peer that went away gives EPIPE instead of killing us.
/// `more` adds MSG_MORE (a header waits to share its segment with the body that follows).
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let n = syscall!(send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags))?;
    Ok(n as usize)
}

/// Tears a connection down at once: shutdown both ways and, for TCP, `connect(AF_UNSPEC)`,
/// which runs tcp_disconnect: the peer gets a RST, and the send queues are purged, so zero-copy
/// buffers still referenced by unsent or unacknowledged segments are released and their
/// notifications arrive. Used when a transfer to or from a socket fails or is cancelled: a byte
/// stream cut mid-way must not end in a clean FIN that could pass for a complete transfer.
pub fn reset_connection(fd: BorrowedFd<'_>) {
    let _ = syscall!(shutdown(fd.as_raw_fd(), libc::SHUT_RDWR));
    // SAFETY: sockaddr is plain data; all-zero with sa_family = AF_UNSPEC is the documented
    // "dissolve the association" argument to connect(2).
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let _ = syscall!(connect(fd.as_raw_fd(), &sa, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t));
}

/// `splice(2)`; an offset of `None` means "the descriptor's own position" (pipes, sockets).
pub fn splice(
    fd_in: BorrowedFd<'_>,
    off_in: Option<u64>,
    fd_out: BorrowedFd<'_>,
    off_out: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    let mut oi = off_in.unwrap_or(0) as libc::loff_t;
    let mut oo = off_out.unwrap_or(0) as libc::loff_t;
    let pi: *mut libc::loff_t = if off_in.is_some() { &mut oi } else { std::ptr::null_mut() };
    let po: *mut libc::loff_t = if off_out.is_some() { &mut oo } else { std::ptr::null_mut() };
    let n = syscall!(splice(fd_in.as_raw_fd(), pi, fd_out.as_raw_fd(), po, len, libc::SPLICE_F_MOVE))?;
    Ok(n as usize)
}

/// `pread(2)` into `buf`, retried on EINTR.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    loop {
        match syscall!(pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(|n| n as usize),
        }
    }
}

/// `pwrite(2)` from `buf`, retried on EINTR.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> io::Result<usize> {
    loop {
        match syscall!(pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as libc::off_t)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(|n| n as usize),
        }
    }
}

/// `fallocate(2)` mode 0: reserve blocks so the copy cannot run out of space half way.
pub fn fallocate(fd: BorrowedFd<'_>, off: u64, len: u64) -> io::Result<()> {
    syscall!(fallocate(fd.as_raw_fd(), 0, off as libc::off_t, len as libc::off_t)).map(drop)
}

/// `ftruncate(2)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    syscall!(ftruncate(fd.as_raw_fd(), len as libc::off_t)).map(drop)
}

/// `fsync(2)`.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    syscall!(fsync(fd.as_raw_fd())).map(drop)
}

/// `posix_fadvise(2)`; returns the error number directly rather than through errno.
pub fn fadvise(fd: BorrowedFd<'_>, off: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: plain integer arguments and a live descriptor; nothing is retained.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), off as libc::off_t, len as libc::off_t, advice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Drops the page cache of a whole file (used by the benchmark's cold runs).
pub fn drop_cache(fd: BorrowedFd<'_>) -> io::Result<()> {
    fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED)
}

fn lseek(fd: BorrowedFd<'_>, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    match syscall!(lseek(fd.as_raw_fd(), off as libc::off_t, whence)) {
        Ok(n) => Ok(Some(n as u64)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The data extents of `fd` inside `[start, end)`, found with SEEK_DATA / SEEK_HOLE.
///
/// Filesystems without hole reporting answer as if the file were one extent, which is correct
/// (just not sparse). The result is clipped to the range and sorted.
pub fn data_extents(fd: BorrowedFd<'_>, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match lseek(fd, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                out.push((pos, end - pos));
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = lseek(fd, data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        if hole > data {
            out.push((data, hole - data));
        }
        pos = hole;
    }
    Ok(out)
}

/// A pipe with its capacity, used as the in-kernel buffer of splice transfers.
#[derive(Debug)]
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
    pub capacity: usize,
}

impl Pipe {
    /// Creates a pipe and asks for `want` bytes of capacity with F_SETPIPE_SZ; when the kernel
    /// refuses (above /proc/sys/fs/pipe-max-size for an unprivileged user), keeps the default.
    pub fn new(want: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let _ = syscall!(fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want as libc::c_int));
        let capacity = syscall!(fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ))? as usize;
        Ok(Pipe { read, write, capacity })
    }

    /// Bytes sitting in the pipe (FIONREAD). A pipe goes back to its pool only when this is 0.
    pub fn pending(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        syscall!(ioctl(self.read.as_raw_fd(), libc::FIONREAD, &mut n))?;
        Ok(n as usize)
    }
}

/// Per-worker pool of pipes. A pipe returns only empty; one with bytes inside is closed instead,
/// so stale bytes can never leak into the next transfer.
#[derive(Debug)]
pub struct PipePool {
    free: Vec<Pipe>,
    size: usize,
    keep: usize,
    pub created: u64,
}

impl PipePool {
    pub fn new(size: usize, keep: usize) -> Self {
        PipePool { free: Vec::new(), size, keep, created: 0 }
    }

    pub fn get(&mut self) -> io::Result<Pipe> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        self.created += 1;
        Pipe::new(self.size)
    }

    pub fn put(&mut self, pipe: Pipe) {
        if self.free.len() < self.keep && matches!(pipe.pending(), Ok(0)) {
            self.free.push(pipe);
        }
    }
}

/// Kernel-wide ceiling on pipe size, from /proc/sys/fs/pipe-max-size.
pub fn pipe_max_size() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size").ok()?.trim().parse().ok()
}

/// Creates a blocking, non-semaphore eventfd used to wake a worker sleeping in the ring. It is
/// blocking on purpose: io_uring answers a read of an O_NONBLOCK file with -EAGAIN instead of
/// waiting, and a write only blocks when the counter nears 2^64, which never happens here.
pub fn eventfd() -> io::Result<OwnedFd> {
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC))?;
    // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd counter, waking whoever reads it.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    match syscall!(write(fd.as_raw_fd(), (&one as *const u64).cast(), 8)) {
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Soft and hard RLIMIT_MEMLOCK in bytes (`u64::MAX` for unlimited).
pub fn memlock_limit() -> io::Result<(u64, u64)> {
    rlimit(libc::RLIMIT_MEMLOCK)
}

fn rlimit(res: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    syscall!(getrlimit(res, &mut r))?;
    Ok((r.rlim_cur, r.rlim_max))
}

fn raise_rlimit(res: libc::__rlimit_resource_t, want: u64) -> io::Result<u64> {
    let (cur, max) = rlimit(res)?;
    if cur >= want {
        return Ok(cur);
    }
    // First try to lift the hard limit too (works with CAP_SYS_RESOURCE), then the soft one only.
    let r = libc::rlimit { rlim_cur: want, rlim_max: want.max(max) };
    if syscall!(setrlimit(res, &r)).is_ok() {
        return Ok(want);
    }
    let r = libc::rlimit { rlim_cur: want.min(max), rlim_max: max };
    syscall!(setrlimit(res, &r))?;
    Ok(want.min(max))
}

/// Raises RLIMIT_MEMLOCK to at least `want` bytes if allowed; returns the soft limit now in force.
pub fn raise_memlock(want: u64) -> io::Result<u64> {
    raise_rlimit(libc::RLIMIT_MEMLOCK, want)
}

/// Raises RLIMIT_NOFILE's soft limit to at least `want` (up to the hard limit).
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    raise_rlimit(libc::RLIMIT_NOFILE, want)
}

/// The CPUs this thread may run on (sched_getaffinity).
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    syscall!(sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set))?;
    let mut cpus = Vec::new();
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE, the bound CPU_ISSET requires.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            cpus.push(cpu);
        }
    }
    Ok(cpus)
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: callers pass a CPU number read from sched_getaffinity, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    syscall!(sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)).map(drop)
}

/// Kernel release string from uname(2), e.g. "6.18.44".
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; all-zero is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if syscall!(uname(&mut u)).is_err() {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates `release` within its array.
    let s = unsafe { CStr::from_ptr(u.release.as_ptr()) };
    s.to_string_lossy().into_owned()
}

/// Sets access and modification times of `path` (not following a final symlink when `nofollow`).
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64), nofollow: bool) -> io::Result<()> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let ts =
        [libc::timespec { tv_sec: atime.0, tv_nsec: atime.1 }, libc::timespec { tv_sec: mtime.0, tv_nsec: mtime.1 }];
    let flags = if nofollow { libc::AT_SYMLINK_NOFOLLOW } else { 0 };
    syscall!(utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags)).map(drop)
}

/// Whether the filesystem holding `path` can clone or copy server-side through
/// copy_file_range (btrfs, XFS, bcachefs, NFS, SMB, ZFS, OCFS2).
pub fn reflink_capable(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if syscall!(statfs(c.as_ptr(), &mut st)).is_err() {
        return false;
    }
    const MAGICS: &[i64] =
        &[0x9123_683e, 0x5846_5342, 0xca45_1a4e, 0x6969, 0xff53_4d42, 0xfe53_4d42, 0x2fc1_2fc1, 0x7461_636f];
    MAGICS.contains(&(st.f_type as i64))
}

/// The system page size.
pub fn page_size() -> usize {
    syscall!(sysconf(libc::_SC_PAGESIZE)).map(|n| n as usize).unwrap_or(4096)
}

/// Closes a descriptor now, reporting the error close(2) gives (EIO on NFS, say), which dropping
/// an `OwnedFd` would swallow.
pub fn close(fd: OwnedFd) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    syscall!(close(fd.into_raw_fd())).map(drop)
}
