//! The contract every backend meets, and the two executors behind it.
//!
//! A transfer's state machine never calls the kernel itself. It asks a worker's `Io` to start
//! ops, each tagged, and later receives one `Done` per op carrying the result and every resource
//! (buffer, pipe, new descriptor) the op held. Each op goes to one of two executors:
//!
//! * `Exec::Ring` — pushed to the worker's io_uring; it completes asynchronously, so many ops of
//!   many transfers are in flight at once, and it can be cancelled with IORING_OP_ASYNC_CANCEL.
//! * `Exec::Sync` — run at once with the classic syscall (pread/pwrite, splice, copy_file_range,
//!   open, fsync, ...); its `Done` is queued immediately. This is the fallback backend, and also
//!   how the syscall modes (`copy-file-range`, `splice`, `buffered`) run on an io_uring worker.
//!
//! Required of every op, on both executors (the contract):
//! 1. exactly one `Done` per started op, even when it fails to start;
//! 2. every resource handed in comes back in that `Done` (nothing leaks, nothing is freed early);
//! 3. results follow the kernel's convention: `>= 0` is a count or descriptor, `< 0` is `-errno`;
//! 4. short reads, writes and splices are reported as they are; resuming them is the caller's job.
//!
//! Because one state machine drives both executors, the io_uring and fallback paths share their
//! logic for chunking, short-I/O resumption, sparse holes, O_DIRECT tails and error handling; the
//! tests then run the same bodies over both.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buffers::{BufLease, BufPool};
use crate::ring::{Completion, Held, PushError, Ring};
use crate::sys::{self, Pipe, PipePool};

mod choose;
pub use choose::{probe_report, select, BackendChoice, Probed};

/// Which backend runs a transfer's I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring rings, one per worker.
    Uring,
    /// Classic syscalls (copy_file_range, sendfile, splice, read/write).
    Syscall,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "io_uring",
            Backend::Syscall => "syscall",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one op runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exec {
    Ring,
    Sync,
}

/// One finished op.
#[derive(Debug)]
pub(crate) struct Done<T> {
    pub tag: T,
    pub res: i32,
    pub buf: Option<BufLease>,
    pub pipe: Option<Pipe>,
    pub opened: Option<OwnedFd>,
    /// The ring op's user_data; 0 for a synchronous op.
    pub ud: u64,
    pub latency: Duration,
}

impl<T> Done<T> {
    pub fn err(&self) -> Option<io::Error> {
        (self.res < 0).then(|| io::Error::from_raw_os_error(-self.res))
    }
}

fn from_held<T>(tag: T, res: i32, held: Held, latency: Duration) -> Done<T> {
    Done { tag, res, buf: held.buf, pipe: held.pipe, opened: None, ud: 0, latency }
}

fn neg(e: &io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EIO)
}

/// A worker's I/O: its ring (if io_uring is in use), buffer slab and pipe pool.
pub(crate) struct Io<T> {
    ring: Option<Ring<T>>,
    pool: Option<BufPool>,
    pub pipes: PipePool,
    ready: VecDeque<Done<T>>,
    reaped: Vec<Completion<T>>,
}

impl<T: Clone> Io<T> {
    pub fn new(ring: Option<Ring<T>>, pool: Option<BufPool>, pipes: PipePool) -> Self {
        Io { ring, pool, pipes, ready: VecDeque::new(), reaped: Vec::new() }
    }

    pub fn ring(&mut self) -> Option<&mut Ring<T>> {
        self.ring.as_mut()
    }
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    fn pool(&mut self) -> &mut BufPool {
        match (&mut self.ring, &mut self.pool) {
            (Some(r), _) => r.pool(),
            (None, Some(p)) => p,
            (None, None) => unreachable!("a worker always has a buffer pool"),
        }
    }
    pub fn lease(&mut self) -> Option<BufLease> {
        self.pool().lease()
    }
    pub fn give_back(&mut self, b: BufLease) {
        self.pool().give_back(b)
    }

    /// Whether `n` more ops can start on `exec` now.
    pub fn room(&self, exec: Exec, n: usize) -> bool {
        match (exec, &self.ring) {
            (Exec::Ring, Some(r)) => r.has_room(n),
            _ => true,
        }
    }

    /// Completions are waiting to be handed out without entering the kernel.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    fn sync_done(&mut self, tag: T, res: io::Result<usize>, buf: Option<BufLease>, pipe: Option<Pipe>, t0: Instant) {
        let res = match res {
            Ok(n) => n.min(i32::MAX as usize) as i32,
            Err(e) => neg(&e),
        };
        self.ready.push_back(Done { tag, res, buf, pipe, opened: None, ud: 0, latency: t0.elapsed() });
    }

    /// An op refused before it reached any kernel (a path with a NUL byte, say).
    fn refuse(&mut self, tag: T, errno: i32) -> Option<u64> {
        self.ready.push_back(Done {
            tag,
            res: -errno,
            buf: None,
            pipe: None,
            opened: None,
            ud: 0,
            latency: Duration::ZERO,
        });
        None
    }

    fn uses_ring(&self, ex: Exec) -> bool {
        ex == Exec::Ring && self.ring.is_some()
    }

    /// Pushes one op on the ring. A push that fails becomes an immediate `Done` carrying the
    /// error and everything the op held (contract points 1 and 2).
    fn on_ring(&mut self, tag: T, push: impl FnOnce(&mut Ring<T>, T) -> Result<u64, PushError>) -> Option<u64> {
        let ring = self.ring.as_mut().expect("uses_ring checked");
        match push(ring, tag.clone()) {
            Ok(ud) => Some(ud),
            Err((e, held)) => {
                self.ready.push_back(from_held(tag, neg(&e), held, Duration::ZERO));
                None
            }
        }
    }

    /// Reads up to `len` bytes at `off` into `buf`.
    pub fn read(
        &mut self,
        ex: Exec,
        tag: T,
        fd: &Arc<OwnedFd>,
        mut buf: BufLease,
        len: usize,
        off: u64,
    ) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.read(tag, fd, buf, len, off));
        }
        let t0 = Instant::now();
        let len = len.min(buf.capacity());
        let res = sys::pread(fd.as_fd(), &mut buf.as_mut_slice()[..len], off);
        self.sync_done(tag, res, Some(buf), None, t0);
        None
    }

    /// Writes `buf[start..start+len]` at `off`.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        ex: Exec,
        tag: T,
        fd: &Arc<OwnedFd>,
        mut buf: BufLease,
        start: usize,
        len: usize,
        off: u64,
    ) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.write(tag, fd, buf, start, len, off));
        }
        let t0 = Instant::now();
        let res = sys::pwrite(fd.as_fd(), &buf.as_mut_slice()[start..start + len], off);
        self.sync_done(tag, res, Some(buf), None, t0);
        None
    }

    /// Receives up to `len` bytes from a stream socket into `buf`.
    pub fn recv(&mut self, ex: Exec, tag: T, fd: &Arc<OwnedFd>, mut buf: BufLease, len: usize) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.recv(tag, fd, buf, len));
        }
        let t0 = Instant::now();
        let len = len.min(buf.capacity());
        let res = sys::recv(fd.as_fd(), &mut buf.as_mut_slice()[..len]);
        self.sync_done(tag, res, Some(buf), None, t0);
        None
    }

    /// Sends `buf[start..start+len]` on a stream socket (SEND_ZC on the ring when `zero_copy`).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        ex: Exec,
        tag: T,
        fd: &Arc<OwnedFd>,
        mut buf: BufLease,
        start: usize,
        len: usize,
        zero_copy: bool,
        more: bool,
    ) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.send(tag, fd, buf, start, len, zero_copy, more));
        }
        let t0 = Instant::now();
        let res = sys::send(fd.as_fd(), &buf.as_mut_slice()[start..start + len], more);
        self.sync_done(tag, res, Some(buf), None, t0);
        None
    }

    /// sendfile from `src` at `off` to the socket `dst`; always synchronous.
    pub fn sendfile(&mut self, tag: T, src: &Arc<OwnedFd>, off: u64, dst: &Arc<OwnedFd>, len: usize) {
        let t0 = Instant::now();
        let res = sys::sendfile(dst.as_fd(), src.as_fd(), off, len);
        self.sync_done(tag, res, None, None, t0);
    }

    /// Moves up to `len` bytes from `fd` (at `off`) into `pipe`.
    pub fn splice_in(
        &mut self,
        ex: Exec,
        tag: T,
        fd: &Arc<OwnedFd>,
        off: Option<u64>,
        pipe: Pipe,
        len: usize,
    ) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.splice_in(tag, fd, off, pipe, len));
        }
        let t0 = Instant::now();
        let res = sys::splice(fd.as_fd(), off, pipe.write.as_fd(), None, len);
        self.sync_done(tag, res, None, Some(pipe), t0);
        None
    }

    /// Moves up to `len` bytes out of `pipe` into `fd` (at `off`).
    pub fn splice_out(
        &mut self,
        ex: Exec,
        tag: T,
        pipe: Pipe,
        fd: &Arc<OwnedFd>,
        off: Option<u64>,
        len: usize,
    ) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.splice_out(tag, pipe, fd, off, len));
        }
        let t0 = Instant::now();
        let res = sys::splice(pipe.read.as_fd(), None, fd.as_fd(), off, len);
        self.sync_done(tag, res, None, Some(pipe), t0);
        None
    }

    /// copy_file_range; always synchronous (io_uring has no such op).
    pub fn copy_range(
        &mut self,
        tag: T,
        src: &Arc<OwnedFd>,
        src_off: u64,
        dst: &Arc<OwnedFd>,
        dst_off: u64,
        len: usize,
    ) {
        let t0 = Instant::now();
        let res = sys::copy_file_range(src.as_fd(), src_off, dst.as_fd(), dst_off, len);
        self.sync_done(tag, res, None, None, t0);
    }

    /// Opens `path` with open(2) `flags` and creation `mode`; the descriptor arrives in `Done::opened`.
    pub fn open(&mut self, ex: Exec, tag: T, path: &Path, flags: i32, mode: u32) -> Option<u64> {
        if self.uses_ring(ex) {
            let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return self.refuse(tag, libc::EINVAL) };
            return self.on_ring(tag, |r, tag| r.openat(tag, c, flags, mode));
        }
        let t0 = Instant::now();
        let acc = flags & libc::O_ACCMODE;
        let res = OpenOptions::new()
            .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
            .custom_flags(flags & !libc::O_ACCMODE)
            .mode(mode)
            .open(path);
        let (res, opened) = match res {
            Ok(f) => (0, Some(OwnedFd::from(f))),
            Err(e) => (neg(&e), None),
        };
        self.ready.push_back(Done { tag, res, buf: None, pipe: None, opened, ud: 0, latency: t0.elapsed() });
        None
    }

    /// Closes `fd`, reporting close(2)'s own error.
    pub fn close(&mut self, ex: Exec, tag: T, fd: OwnedFd) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.close(tag, fd));
        }
        let t0 = Instant::now();
        let res = sys::close(fd).map(|_| 0);
        self.sync_done(tag, res, None, None, t0);
        None
    }

    /// Renames `from` to `to` (atomically replacing `to`).
    pub fn rename(&mut self, ex: Exec, tag: T, from: &Path, to: &Path) -> Option<u64> {
        if self.uses_ring(ex) {
            let (Ok(a), Ok(b)) = (CString::new(from.as_os_str().as_bytes()), CString::new(to.as_os_str().as_bytes()))
            else {
                return self.refuse(tag, libc::EINVAL);
            };
            return self.on_ring(tag, |r, tag| r.rename(tag, a, b));
        }
        let t0 = Instant::now();
        let res = std::fs::rename(from, to).map(|_| 0);
        self.sync_done(tag, res, None, None, t0);
        None
    }

    pub fn fsync(&mut self, ex: Exec, tag: T, fd: &Arc<OwnedFd>) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.fsync(tag, fd));
        }
        let t0 = Instant::now();
        let res = sys::fsync(fd.as_fd()).map(|_| 0);
        self.sync_done(tag, res, None, None, t0);
        None
    }

    pub fn fallocate(&mut self, ex: Exec, tag: T, fd: &Arc<OwnedFd>, off: u64, len: u64) -> Option<u64> {
        if self.uses_ring(ex) {
            return self.on_ring(tag, |r, tag| r.fallocate(tag, fd, off, len));
        }
        let t0 = Instant::now();
        let res = sys::fallocate(fd.as_fd(), off, len).map(|_| 0);
        self.sync_done(tag, res, None, None, t0);
        None
    }

    /// ftruncate; in the ring where the kernel has IORING_OP_FTRUNCATE (6.9+).
    pub fn ftruncate(&mut self, ex: Exec, tag: T, fd: &Arc<OwnedFd>, len: u64) -> Option<u64> {
        if self.uses_ring(ex) && self.ring.as_ref().is_some_and(|r| r.has_ftruncate()) {
            return self.on_ring(tag, |r, tag| r.ftruncate(tag, fd, len));
        }
        let t0 = Instant::now();
        let res = sys::ftruncate(fd.as_fd(), len).map(|_| 0);
        self.sync_done(tag, res, None, None, t0);
        None
    }

    /// ASYNC_CANCEL of a ring op. Its own completion arrives like any other.
    pub fn cancel(&mut self, tag: T, target: u64) -> bool {
        if self.ring.is_none() {
            return false;
        }
        self.on_ring(tag, |r, tag| r.cancel(tag, target));
        true
    }

    /// Hands the ring what is queued; sleeps only when `block` and nothing is ready.
    pub fn submit(&mut self, block: bool, timeout: Option<Duration>) -> io::Result<()> {
        match self.ring.as_mut() {
            Some(r) if block && self.ready.is_empty() => r.wait(timeout),
            // Only enter the kernel when there is something to submit or reap beyond the
            // worker's own wake-up read: syscall-mode jobs must not pay an extra enter per op.
            Some(r) => {
                if r.busy(1) {
                    r.submit()
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Moves every finished op into `out`.
    pub fn poll(&mut self, out: &mut Vec<Done<T>>) {
        out.extend(self.ready.drain(..));
        if let Some(r) = self.ring.as_mut() {
            r.reap(&mut self.reaped);
            for c in self.reaped.drain(..) {
                let mut d = from_held(c.tag, c.result, c.held, c.latency);
                d.opened = c.opened;
                d.ud = c.user_data;
                out.push(d);
            }
        }
    }
}
