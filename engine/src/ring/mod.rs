//! The only code that touches an io_uring submission or completion queue.
//!
//! A `Ring<T>` owns the io_uring, the slot table that maps `user_data` to op state, and the
//! registered buffer slab. Ops are pushed through safe, typed methods that *take ownership* of
//! everything the kernel may touch (buffer lease, pipe, descriptor `Arc`, path, statx/timespec
//! box) and park it in the op's slot; it comes back only inside that op's `Completion`. So no
//! buffer, pipe or descriptor can be freed, reused or closed while the kernel may still use it,
//! and callers never write `unsafe`. The price is an `Arc` clone per op for descriptors, which is
//! noise next to a syscall.
//!
//! `user_data` is `generation << 32 | slot`, so an ASYNC_CANCEL aimed at an op that already
//! completed can never hit the unrelated op that reused its slot.
//!
//! In-flight ops are capped at the CQ size (`has_room`), so the completion queue cannot overflow
//! in normal operation; the kernel's overflow counter is still read and reported.
//! Dropping a ring with ops in flight cancels them and waits for every completion first.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring, Probe};

use crate::buffers::{BufLease, BufPool};
use crate::sys::Pipe;

/// Everything an op keeps alive for the kernel until its completion. Most fields are never
/// read: owning them until the CQE is their whole job.
#[derive(Debug, Default)]
#[allow(dead_code)]
pub struct Held {
    pub buf: Option<BufLease>,
    pub pipe: Option<Pipe>,
    pub fd: Option<Arc<OwnedFd>>,
    path: Option<CString>,
    path2: Option<CString>,
    timespec: Option<Box<types::Timespec>>,
    word: Option<Box<u64>>,
}

/// One completed op: the caller's tag, the kernel's result (`>= 0` or `-errno`) and what it held.
#[derive(Debug)]
pub struct Completion<T> {
    pub tag: T,
    pub result: i32,
    pub held: Held,
    /// The descriptor an OPENAT returned, already owned.
    pub opened: Option<OwnedFd>,
    /// The op's user_data (what ASYNC_CANCEL targets).
    pub user_data: u64,
    pub latency: Duration,
}

struct Slot<T> {
    tag: T,
    held: Held,
    opens: bool,
    submitted: Instant,
    /// SEND_ZC: the result from its first CQE, kept until the notification CQE says the
    /// kernel no longer reads the buffer.
    first: Option<i32>,
}

/// A push that failed before reaching the kernel gives back what the op held.
pub type PushError = (io::Error, Held);

/// Setup flags asked for, in the order they are dropped when the kernel rejects them.
#[derive(Debug, Clone, Default)]
pub struct SetupReport {
    pub accepted: Vec<&'static str>,
    pub rejected: Vec<&'static str>,
    pub sq_entries: u32,
    pub cq_entries: u32,
}

/// The opcodes ferry uses, by name, for the probe report.
pub const OPCODES: &[(&str, u8)] = &[
    ("READ_FIXED", opcode::ReadFixed::CODE),
    ("WRITE_FIXED", opcode::WriteFixed::CODE),
    ("READ", opcode::Read::CODE),
    ("WRITE", opcode::Write::CODE),
    ("SPLICE", opcode::Splice::CODE),
    ("OPENAT", opcode::OpenAt::CODE),
    ("CLOSE", opcode::Close::CODE),
    ("STATX", opcode::Statx::CODE),
    ("RENAMEAT", opcode::RenameAt::CODE),
    ("UNLINKAT", opcode::UnlinkAt::CODE),
    ("FSYNC", opcode::Fsync::CODE),
    ("FALLOCATE", opcode::Fallocate::CODE),
    ("FTRUNCATE", opcode::Ftruncate::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("TIMEOUT", opcode::Timeout::CODE),
    ("LINK_TIMEOUT", opcode::LinkTimeout::CODE),
    ("SEND_ZC", opcode::SendZc::CODE),
    ("SEND", opcode::Send::CODE),
    ("RECV", opcode::Recv::CODE),
];

/// Opcodes without which the io_uring file backend cannot run at all.
pub const REQUIRED: &[u8] = &[
    opcode::ReadFixed::CODE,
    opcode::WriteFixed::CODE,
    opcode::Read::CODE,
    opcode::Write::CODE,
    opcode::Splice::CODE,
    opcode::OpenAt::CODE,
    opcode::Close::CODE,
    opcode::RenameAt::CODE,
    opcode::AsyncCancel::CODE,
    opcode::Timeout::CODE,
];

/// Builds an io_uring with `entries` SQ slots and a CQ twice that. Asks for SINGLE_ISSUER,
/// DEFER_TASKRUN and COOP_TASKRUN and drops them one by one while the kernel answers EINVAL.
/// Any other error (EPERM, ENOSYS, ENOMEM, ...) is returned: io_uring is unavailable.
fn build(entries: u32, single_issuer: bool) -> io::Result<(IoUring, SetupReport)> {
    // (single_issuer, defer_taskrun, coop_taskrun)
    let attempts: &[(bool, bool, bool)] = if single_issuer {
        &[(true, true, true), (true, false, true), (false, false, true), (false, false, false)]
    } else {
        &[(false, false, true), (false, false, false)]
    };
    let mut last = io::Error::from_raw_os_error(libc::EINVAL);
    for &(si, dt, coop) in attempts {
        let mut b = IoUring::builder();
        b.setup_cqsize(entries * 2);
        if si {
            b.setup_single_issuer();
        }
        if dt {
            b.setup_defer_taskrun();
        }
        if coop {
            b.setup_coop_taskrun();
        }
        match b.build(entries) {
            Ok(ring) => {
                let mut rep = SetupReport::default();
                for (name, want, got) in [
                    ("SINGLE_ISSUER", single_issuer, si),
                    ("DEFER_TASKRUN", single_issuer, dt),
                    ("COOP_TASKRUN", true, coop),
                ] {
                    if got {
                        rep.accepted.push(name);
                    } else if want {
                        rep.rejected.push(name);
                    }
                }
                rep.sq_entries = ring.params().sq_entries();
                rep.cq_entries = ring.params().cq_entries();
                return Ok((ring, rep));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// What a throwaway ring found about this kernel: used to choose the backend and by `doctor`.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub setup: SetupReport,
    pub ops: Vec<(&'static str, bool)>,
    pub missing_required: Vec<&'static str>,
}

/// Sets up a small ring and probes every opcode ferry uses.
pub fn probe() -> io::Result<ProbeReport> {
    let (ring, setup) = build(8, false)?;
    let mut p = Probe::new();
    ring.submitter().register_probe(&mut p)?;
    let ops: Vec<_> = OPCODES.iter().map(|&(n, c)| (n, p.is_supported(c))).collect();
    let missing_required =
        OPCODES.iter().filter(|(_, c)| REQUIRED.contains(c) && !p.is_supported(*c)).map(|(n, _)| *n).collect();
    Ok(ProbeReport { setup, ops, missing_required })
}

/// A worker's ring: the io_uring, its slot table and its buffer slab.
pub struct Ring<T> {
    // Field order is drop order: the io_uring (and its buffer registration) goes before the pool.
    uring: IoUring,
    slots: Vec<Option<Slot<T>>>,
    gens: Vec<u32>,
    free: Vec<u32>,
    in_flight: usize,
    cq_cap: usize,
    pool: BufPool,
    registered: Result<(), String>,
    has_ftruncate: bool,
    pub setup: SetupReport,
    overflow: u32,
    pub submitted: u64,
}

impl<T> Ring<T> {
    /// Builds a single-issuer ring (call it on the thread that will submit) and registers `pool`.
    /// A failed registration (ENOMEM under a low memlock limit) leaves the pool unregistered:
    /// reads and writes then use READ/WRITE instead of the FIXED forms, and `registered()` says why.
    pub fn new(entries: u32, pool: BufPool) -> io::Result<Ring<T>> {
        let (uring, setup) = build(entries, true)?;
        let mut p = Probe::new();
        let has_ftruncate = uring.submitter().register_probe(&mut p).is_ok() && p.is_supported(opcode::Ftruncate::CODE);
        let iovecs = pool.iovecs();
        // SAFETY: the iovecs describe the pool's live mapping, which this Ring owns and drops
        // only after `uring` (field order), i.e. after the registration is gone.
        let registered = unsafe { uring.submitter().register_buffers(&iovecs) }.map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOMEM) {
                format!(
                    "memlock limit too low to register {} bytes of buffers ({e}); raise it with \
                     `ulimit -l` or LimitMEMLOCK=, or run as root",
                    pool.count() * pool.buf_size()
                )
            } else {
                format!("register_buffers failed: {e}")
            }
        });
        let cq_cap = setup.cq_entries as usize;
        Ok(Ring {
            uring,
            slots: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            cq_cap,
            pool,
            registered,
            has_ftruncate,
            setup,
            overflow: 0,
            submitted: 0,
        })
    }

    pub fn registered(&self) -> &Result<(), String> {
        &self.registered
    }
    pub fn pool(&mut self) -> &mut BufPool {
        &mut self.pool
    }
    /// SQEs queued but not yet handed to the kernel.
    pub fn queued(&mut self) -> usize {
        self.uring.submission().len()
    }
    /// Whether entering the kernel could achieve anything beyond `idle` ops parked in flight.
    pub fn busy(&mut self, idle: usize) -> bool {
        self.queued() > 0 || self.in_flight > idle
    }
    /// Whether `n` more ops fit without risking a CQ overflow.
    pub fn has_room(&self, n: usize) -> bool {
        self.in_flight + n <= self.cq_cap
    }
    pub fn has_ftruncate(&self) -> bool {
        self.has_ftruncate
    }
    /// The kernel's count of completions dropped or deferred because the CQ was full.
    pub fn overflow(&mut self) -> u32 {
        self.overflow.max(self.uring.completion().overflow())
    }

    fn push(&mut self, sqe: squeue::Entry, tag: T, held: Held) -> Result<u64, PushError> {
        self.push_op(sqe, tag, held, false)
    }

    fn push_op(&mut self, sqe: squeue::Entry, tag: T, held: Held, opens: bool) -> Result<u64, PushError> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        self.gens[idx as usize] = self.gens[idx as usize].wrapping_add(1);
        let ud = (u64::from(self.gens[idx as usize]) << 32) | u64::from(idx);
        self.slots[idx as usize] = Some(Slot { tag, held, opens, submitted: Instant::now(), first: None });
        let sqe = sqe.user_data(ud);
        loop {
            // SAFETY: every pointer in `sqe` points into the `held` resources now parked in the
            // slot (kept until this op's CQE is reaped) or into the pool this ring owns; every
            // descriptor is kept open by an Arc in `held` or was handed over to a CLOSE op.
            let pushed = unsafe { self.uring.submission().push(&sqe) };
            if pushed.is_ok() {
                break;
            }
            // SQ full: hand what is queued to the kernel, then try again.
            match self.uring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    // The op never reached the kernel: its resources are ours to return.
                    // (Ops queued before it are in the SQ and will still be submitted.)
                    let slot = self.slots[idx as usize].take().expect("slot just filled");
                    self.free.push(idx);
                    return Err((e, slot.held));
                }
            }
        }
        self.in_flight += 1;
        self.submitted += 1;
        Ok(ud)
    }

    /// Reads up to `len` bytes at `off` into `buf` (READ_FIXED when the slab is registered).
    pub fn read(
        &mut self,
        tag: T,
        fd: &Arc<OwnedFd>,
        mut buf: BufLease,
        len: usize,
        off: u64,
    ) -> Result<u64, PushError> {
        let len = len.min(buf.capacity()) as u32;
        let ptr = buf.as_mut_ptr();
        let raw = types::Fd(fd.as_raw_fd());
        let sqe = if self.registered.is_ok() {
            opcode::ReadFixed::new(raw, ptr, len, buf.index()).offset(off).build()
        } else {
            opcode::Read::new(raw, ptr, len).offset(off).build()
        };
        self.push(sqe, tag, Held { buf: Some(buf), fd: Some(fd.clone()), ..Held::default() })
    }

    /// Writes `buf[start..start+len]` at `off` (WRITE_FIXED when the slab is registered).
    pub fn write(
        &mut self,
        tag: T,
        fd: &Arc<OwnedFd>,
        mut buf: BufLease,
        start: usize,
        len: usize,
        off: u64,
    ) -> Result<u64, PushError> {
        assert!(start + len <= buf.capacity(), "write outside its buffer");
        // SAFETY: start + len is within the buffer (asserted above).
        let ptr = unsafe { buf.as_mut_ptr().add(start) };
        let raw = types::Fd(fd.as_raw_fd());
        let sqe = if self.registered.is_ok() {
            opcode::WriteFixed::new(raw, ptr, len as u32, buf.index()).offset(off).build()
        } else {
            opcode::Write::new(raw, ptr, len as u32).offset(off).build()
        };
        self.push(sqe, tag, Held { buf: Some(buf), fd: Some(fd.clone()), ..Held::default() })
    }

    /// recv(2) into `buf` on a stream socket.
    pub fn recv(&mut self, tag: T, fd: &Arc<OwnedFd>, mut buf: BufLease, len: usize) -> Result<u64, PushError> {
        let len = len.min(buf.capacity()) as u32;
        let sqe = opcode::Recv::new(types::Fd(fd.as_raw_fd()), buf.as_mut_ptr(), len).build();
        self.push(sqe, tag, Held { buf: Some(buf), fd: Some(fd.clone()), ..Held::default() })
    }

    /// send(2) of `buf[start..start+len]` with MSG_NOSIGNAL (a gone peer is EPIPE, not SIGPIPE).
    /// With `zero_copy`, SEND_ZC from the registered buffer: the op completes only after the
    /// kernel's notification, so the buffer is never reused while the NIC may still read it.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        tag: T,
        fd: &Arc<OwnedFd>,
        mut buf: BufLease,
        start: usize,
        len: usize,
        zero_copy: bool,
        more: bool,
    ) -> Result<u64, PushError> {
        assert!(start + len <= buf.capacity(), "send outside its buffer");
        // SAFETY: start + len is within the buffer (asserted above).
        let ptr = unsafe { buf.as_mut_ptr().add(start) };
        let raw = types::Fd(fd.as_raw_fd());
        let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
        let sqe = if zero_copy {
            let index = self.registered.is_ok().then(|| buf.index());
            opcode::SendZc::new(raw, ptr, len as u32).buf_index(index).flags(flags).build()
        } else {
            opcode::Send::new(raw, ptr, len as u32).flags(flags).build()
        };
        self.push(sqe, tag, Held { buf: Some(buf), fd: Some(fd.clone()), ..Held::default() })
    }

    /// Splices up to `len` bytes from `fd` (at `off`, or its own position when `off` is None)
    /// into `pipe`.
    pub fn splice_in(
        &mut self,
        tag: T,
        fd: &Arc<OwnedFd>,
        off: Option<u64>,
        pipe: Pipe,
        len: usize,
    ) -> Result<u64, PushError> {
        let off = off.map_or(-1, |o| o as i64);
        let sqe = opcode::Splice::new(
            types::Fd(fd.as_raw_fd()),
            off,
            types::Fd(pipe.write.as_raw_fd()),
            -1,
            len.min(u32::MAX as usize) as u32,
        )
        .build();
        self.push(sqe, tag, Held { pipe: Some(pipe), fd: Some(fd.clone()), ..Held::default() })
    }

    /// Splices up to `len` bytes out of `pipe` into `fd` (at `off`, or its own position).
    pub fn splice_out(
        &mut self,
        tag: T,
        pipe: Pipe,
        fd: &Arc<OwnedFd>,
        off: Option<u64>,
        len: usize,
    ) -> Result<u64, PushError> {
        let off = off.map_or(-1, |o| o as i64);
        let sqe = opcode::Splice::new(
            types::Fd(pipe.read.as_raw_fd()),
            -1,
            types::Fd(fd.as_raw_fd()),
            off,
            len.min(u32::MAX as usize) as u32,
        )
        .build();
        self.push(sqe, tag, Held { pipe: Some(pipe), fd: Some(fd.clone()), ..Held::default() })
    }

    /// openat(AT_FDCWD, path, flags, mode); the result is the new descriptor.
    pub fn openat(&mut self, tag: T, path: CString, flags: i32, mode: u32) -> Result<u64, PushError> {
        let sqe = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(flags | libc::O_CLOEXEC)
            .mode(mode)
            .build();
        self.push_op(sqe, tag, Held { path: Some(path), ..Held::default() }, true)
    }

    /// Closes `fd` in the ring. The descriptor is consumed: nobody else can use it any more.
    pub fn close(&mut self, tag: T, fd: OwnedFd) -> Result<u64, PushError> {
        let sqe = opcode::Close::new(types::Fd(fd.into_raw_fd())).build();
        self.push(sqe, tag, Held::default())
    }

    /// renameat(AT_FDCWD, from, AT_FDCWD, to).
    pub fn rename(&mut self, tag: T, from: CString, to: CString) -> Result<u64, PushError> {
        let cwd = types::Fd(libc::AT_FDCWD);
        let sqe = opcode::RenameAt::new(cwd, from.as_ptr(), cwd, to.as_ptr()).build();
        self.push(sqe, tag, Held { path: Some(from), path2: Some(to), ..Held::default() })
    }

    pub fn fsync(&mut self, tag: T, fd: &Arc<OwnedFd>) -> Result<u64, PushError> {
        let sqe = opcode::Fsync::new(types::Fd(fd.as_raw_fd())).build();
        self.push(sqe, tag, Held { fd: Some(fd.clone()), ..Held::default() })
    }

    pub fn fallocate(&mut self, tag: T, fd: &Arc<OwnedFd>, off: u64, len: u64) -> Result<u64, PushError> {
        let sqe = opcode::Fallocate::new(types::Fd(fd.as_raw_fd()), len).offset(off).build();
        self.push(sqe, tag, Held { fd: Some(fd.clone()), ..Held::default() })
    }

    /// ftruncate in the ring (kernel 6.9+); check `has_ftruncate` first.
    pub fn ftruncate(&mut self, tag: T, fd: &Arc<OwnedFd>, len: u64) -> Result<u64, PushError> {
        let sqe = opcode::Ftruncate::new(types::Fd(fd.as_raw_fd()), len).build();
        self.push(sqe, tag, Held { fd: Some(fd.clone()), ..Held::default() })
    }

    /// Reads one 8-byte word (an eventfd counter) from `fd`.
    pub fn read_word(&mut self, tag: T, fd: &Arc<OwnedFd>) -> Result<u64, PushError> {
        let mut word = Box::new(0u64);
        let ptr: *mut u64 = &mut *word;
        let sqe = opcode::Read::new(types::Fd(fd.as_raw_fd()), ptr.cast(), 8).offset(u64::MAX).build();
        self.push(sqe, tag, Held { word: Some(word), fd: Some(fd.clone()), ..Held::default() })
    }

    /// IORING_OP_ASYNC_CANCEL for the op with `target` user_data. The target still completes
    /// (with -ECANCELED, or its real result if it won the race) and must be reaped as usual.
    pub fn cancel(&mut self, tag: T, target: u64) -> Result<u64, PushError> {
        let sqe = opcode::AsyncCancel::new(target).build();
        self.push(sqe, tag, Held::default())
    }

    /// Submits what is queued and runs deferred completions, without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        let n = self.uring.submission().len() as u32;
        // SAFETY: plain io_uring_enter on our own ring with no argument pointer; GETEVENTS with
        // min_complete 0 only flushes deferred task work and never blocks.
        let r = unsafe {
            self.uring.submitter().enter::<libc::sigset_t>(n, 0, io_uring::EnterFlags::GETEVENTS.bits(), None)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits and sleeps until at least one completion arrives or `timeout` passes.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let r = match timeout {
            Some(t) => {
                let ts = types::Timespec::new().sec(t.as_secs()).nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.uring.submitter().submit_with_args(1, &args)
            }
            None => self.uring.submit_and_wait(1),
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every available completion into `out`, freeing its slot.
    pub fn reap(&mut self, out: &mut Vec<Completion<T>>) {
        let now = Instant::now();
        let mut cq = self.uring.completion();
        let ov = cq.overflow();
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            let idx = (ud & 0xffff_ffff) as usize;
            let gen = (ud >> 32) as u32;
            if idx >= self.slots.len() || self.gens[idx] != gen {
                continue;
            }
            let flags = cqe.flags();
            if io_uring::cqueue::more(flags) {
                // SEND_ZC's first CQE: the byte count. The buffer stays lent to the kernel
                // until the notification CQE for the same user_data arrives.
                if let Some(slot) = self.slots[idx].as_mut() {
                    slot.first = Some(cqe.result());
                }
                continue;
            }
            if let Some(slot) = self.slots[idx].take() {
                self.free.push(idx as u32);
                self.in_flight -= 1;
                let result = if io_uring::cqueue::notif(flags) { slot.first.unwrap_or(0) } else { cqe.result() };
                let opened = (slot.opens && result >= 0).then(|| {
                    // SAFETY: a successful OPENAT returns a brand-new descriptor that nothing
                    // else owns; wrapping it here is its only owner.
                    unsafe { OwnedFd::from_raw_fd(result) }
                });
                out.push(Completion {
                    tag: slot.tag,
                    result,
                    held: slot.held,
                    opened,
                    user_data: ud,
                    latency: now.saturating_duration_since(slot.submitted),
                });
            }
        }
        self.overflow = self.overflow.max(ov);
    }

    /// The user_data of every op in flight (for cancelling them all).
    pub fn in_flight_ids(&self) -> Vec<u64> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| (u64::from(self.gens[i]) << 32) | i as u64)
            .collect()
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Nothing the kernel may still touch is freed here: cancel what is left and reap every
        // completion before the io_uring, the slot resources and the pool go away.
        if self.in_flight == 0 {
            return;
        }
        let targets = self.in_flight_ids();
        for t in targets {
            let sqe = opcode::AsyncCancel::new(t).build().user_data(u64::MAX);
            // SAFETY: an ASYNC_CANCEL carries no pointer; its completion (user_data MAX) matches
            // no slot and is skipped by `reap`.
            while unsafe { self.uring.submission().push(&sqe) }.is_err() {
                let _ = self.uring.submit();
            }
        }
        let mut sink = Vec::new();
        while self.in_flight > 0 {
            if self.wait(Some(Duration::from_millis(100))).is_err() {
                // The ring itself failed: nothing more can be reaped, and freeing resources the
                // kernel may still hold is not allowed, so leak them deliberately.
                // That includes the slab: an unregistered READ may still write into it.
                std::mem::forget(std::mem::take(&mut self.slots));
                self.pool.leak();
                return;
            }
            self.reap(&mut sink);
            sink.clear();
        }
    }
}
