//! The file -> file state machine. One `FileJob` per transfer, driven by its worker: it opens
//! both files, plans chunks over the source's data extents, keeps up to `depth` chunks moving,
//! resumes every short read/write/splice from where it stopped, then truncates, fsyncs, closes
//! and renames the temp file into place.
//!
//! The same machine runs every mode on both executors (see `backend`): the uring modes put their
//! ops on the ring, the syscall modes run them at once. On any failure, cancellation or deadline
//! it stops issuing, sends ASYNC_CANCEL for each ring op still in flight, waits until *every* op
//! has completed and handed back its buffer/pipe/descriptor, and only then closes the files and
//! removes the temp file. A destination that looks complete exists only after a fully successful
//! copy (or was asked for in place).

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::{FileRequest, Latency, Mode, Report};
use crate::backend::{Backend, Done, Exec, Io};
use crate::error::{Error, ErrorKind};
use crate::sys;

/// O_DIRECT alignment used for offsets, lengths and buffers.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// What an op was, carried through the kernel in its slot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    OpenSrc,
    OpenDst,
    Prealloc,
    /// Read of `want` bytes at source offset `off`.
    Read {
        off: u64,
        want: u32,
    },
    /// Write of `buf[start..start+len]` at destination offset `off`; the buffer holds `valid`
    /// real bytes (more may be written to keep O_DIRECT aligned; the final truncate cuts them).
    Write {
        off: u64,
        start: u32,
        len: u32,
        valid: u32,
    },
    SpliceIn {
        off: u64,
        want: u32,
    },
    /// `left` bytes in the pipe, bound for destination offset `off`.
    SpliceOut {
        off: u64,
        left: u32,
    },
    CopyRange {
        off: u64,
        want: u32,
    },
    Truncate,
    Fsync,
    CloseSrc,
    CloseDst,
    Rename,
    Cancel,
    /// The worker's eventfd read (not a job's op).
    Wake,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Tag {
    pub job: u32,
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Preallocating,
    Copying,
    Truncating,
    Syncing,
    Closing,
    Renaming,
    Finished,
}

pub(crate) struct FileJob {
    pub req: FileRequest,
    slot: u32,
    exec: Exec,
    mode: Mode,
    mode_reason: String,
    phase: Phase,
    src: Option<Arc<OwnedFd>>,
    dst: Option<Arc<OwnedFd>>,
    created: bool,
    plan: VecDeque<(u64, u64)>,
    /// Chunks between their first op and their last completion.
    chains: usize,
    /// Ops started and not yet completed (ring or sync).
    pending: usize,
    /// user_data of ring ops in flight, for ASYNC_CANCEL.
    ring_ops: Vec<u64>,
    error: Option<Error>,
    cancels_sent: bool,
    bytes: u64,
    ops: u64,
    hist: Option<Histogram<u64>>,
    throttle_until: Option<Instant>,
    pub deadline: Option<Instant>,
    needs_truncate: bool,
    pub worker: usize,
}

impl FileJob {
    pub fn new(req: FileRequest, slot: u32, worker: usize) -> FileJob {
        let exec = if req.mode.needs_uring() {
            Exec::Ring
        } else {
            Exec::Sync
        };
        let deadline = req.opts.deadline.map(|d| req.shared.start + d);
        FileJob {
            mode: req.mode,
            mode_reason: req.mode_reason.clone(),
            req,
            slot,
            exec,
            phase: Phase::Opening,
            src: None,
            dst: None,
            created: false,
            plan: VecDeque::new(),
            chains: 0,
            pending: 0,
            ring_ops: Vec::new(),
            error: None,
            cancels_sent: false,
            bytes: 0,
            ops: 0,
            hist: None,
            throttle_until: None,
            deadline,
            needs_truncate: false,
            worker,
        }
    }

    fn tag(&self, op: Op) -> Tag {
        Tag { job: self.slot, op }
    }

    fn context(&self) -> String {
        format!("{}, {}", self.req.backend, self.mode)
    }

    fn io_err(&self, op: &'static str, on_dst: bool, e: std::io::Error) -> Error {
        let path = if on_dst { &self.req.dst } else { &self.req.src };
        let mut err = Error::io(op, Some(path), e).with_context(self.context());
        if self.req.opts.direct && err.raw_os_error() == Some(libc::EINVAL) && op == "open" {
            err = err
                .with_detail("O_DIRECT is not supported by this filesystem; copy without --direct");
        }
        err
    }

    /// Records the first error; later ones are consequences of it.
    fn fail(&mut self, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn started(&mut self, ud: Option<u64>) {
        self.pending += 1;
        if let Some(ud) = ud {
            self.ring_ops.push(ud);
        }
    }

    /// Cancellation or deadline noticed by the worker.
    pub fn abort(&mut self, e: Error) {
        if self.phase != Phase::Finished {
            self.fail(e);
        }
    }

    pub fn is_done(&self) -> bool {
        self.pending == 0 && (self.phase == Phase::Finished || self.error.is_some())
    }

    /// When the job next wants to run without an event (rate limit, deadline).
    pub fn wake_at(&self) -> Option<Instant> {
        match (self.throttle_until, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts whatever ops the current phase allows.
    pub fn drive(&mut self, io: &mut Io<Tag>, now: Instant) {
        if self.error.is_some() {
            self.drive_abort(io);
            return;
        }
        match self.phase {
            Phase::Opening if self.pending == 0 && self.src.is_none() => self.start_open(io),
            Phase::Copying => self.drive_copy(io, now),
            _ => {}
        }
    }

    fn start_open(&mut self, io: &mut Io<Tag>) {
        let direct = if self.req.opts.direct {
            libc::O_DIRECT
        } else {
            0
        };
        let t = self.tag(Op::OpenSrc);
        let ud = io.open(self.exec, t, &self.req.src, libc::O_RDONLY | direct, 0);
        self.started(ud);
        let mut flags = libc::O_WRONLY | libc::O_CREAT | direct;
        if !self.req.opts.in_place {
            flags |= libc::O_EXCL;
        }
        let t = self.tag(Op::OpenDst);
        let ud = io.open(self.exec, t, &self.req.write_path, flags, self.req.perm);
        self.started(ud);
    }

    fn after_open(&mut self, io: &mut Io<Tag>) {
        let (Some(src), Some(dst)) = (self.src.clone(), self.dst.clone()) else {
            return;
        };
        let end = self.req.start + self.req.len;
        let extents = if self.req.opts.sparse && self.req.src_sparse && self.req.len > 0 {
            match sys::data_extents(src.as_fd(), self.req.start, end) {
                Ok(e) => e,
                Err(e) => return self.fail(self.io_err("seek data", false, e)),
            }
        } else if self.req.len > 0 {
            vec![(self.req.start, self.req.len)]
        } else {
            Vec::new()
        };
        let covered: u64 = extents.iter().map(|e| e.1).sum();
        let align = if self.req.opts.direct {
            DIRECT_ALIGN
        } else {
            1
        };
        self.plan = super::plan_chunks(&extents, self.req.chunk, align);
        self.needs_truncate =
            covered != self.req.len || self.req.opts.direct || self.req.opts.in_place;
        self.req.shared.total.store(self.req.len, Ordering::Relaxed);
        if self.req.opts.prealloc && self.req.len > 0 {
            self.phase = Phase::Preallocating;
            let t = self.tag(Op::Prealloc);
            let ud = io.fallocate(self.exec, t, &dst, 0, self.req.len);
            self.started(ud);
        } else {
            self.phase = Phase::Copying;
        }
    }

    fn drive_copy(&mut self, io: &mut Io<Tag>, now: Instant) {
        let (Some(src), Some(dst)) = (self.src.clone(), self.dst.clone()) else {
            return;
        };
        let depth = if self.exec == Exec::Sync {
            1
        } else {
            self.req.depth
        };
        while self.chains < depth && io.room(self.exec, 2) {
            if let Some(t) = self.throttle_until {
                if now < t {
                    break;
                }
                self.throttle_until = None;
            }
            let Some((off, planned)) = self.plan.pop_front() else {
                break;
            };
            let mut len = planned as usize;
            match self.mode {
                Mode::UringFixed | Mode::Buffered | Mode::Auto => {
                    let Some(buf) = io.lease() else {
                        self.plan.push_front((off, planned));
                        break;
                    };
                    len = len.min(buf.capacity());
                    // O_DIRECT reads whole blocks; the tail read simply comes back short at EOF.
                    let io_len = if self.req.opts.direct {
                        len.next_multiple_of(DIRECT_ALIGN).min(buf.capacity())
                    } else {
                        len
                    };
                    let t = self.tag(Op::Read {
                        off,
                        want: len as u32,
                    });
                    let ud = io.read(self.exec, t, &src, buf, io_len, off);
                    self.started(ud);
                }
                Mode::UringSplice | Mode::Splice => {
                    let pipe = match io.pipes.get() {
                        Ok(p) => p,
                        Err(e) => {
                            self.plan.push_front((off, planned));
                            return self.fail(self.io_err("create pipe", false, e));
                        }
                    };
                    len = len.min(pipe.capacity);
                    let t = self.tag(Op::SpliceIn {
                        off,
                        want: len as u32,
                    });
                    let ud = io.splice_in(self.exec, t, &src, Some(off), pipe, len);
                    self.started(ud);
                }
                Mode::CopyFileRange => {
                    len = len.min(sys::MAX_RW);
                    let t = self.tag(Op::CopyRange {
                        off,
                        want: len as u32,
                    });
                    io.copy_range(t, &src, off, &dst, off - self.req.start, len);
                    self.started(None);
                }
            }
            if (len as u64) < planned {
                // Cut to the buffer or pipe size: the rest goes back to the plan.
                self.plan
                    .push_front((off + len as u64, planned - len as u64));
            }
            self.chains += 1;
            self.ops += 1;
            if let Some(rl) = &self.req.opts.rate {
                let wait = rl.take(len as u64);
                if !wait.is_zero() {
                    self.throttle_until = Some(now + wait);
                }
            }
        }
    }

    fn record(&mut self, d: &Done<Tag>) {
        let h = self.hist.get_or_insert_with(|| {
            Histogram::new_with_bounds(1, 3_600_000_000_000, 2).expect("valid bounds")
        });
        let _ = h.record((d.latency.as_nanos() as u64).max(1));
    }

    fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
        self.req.shared.done.fetch_add(n, Ordering::Relaxed);
    }

    /// Handles one completion of this job.
    pub fn on_done(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>) {
        self.pending -= 1;
        if d.ud != 0 {
            if let Some(i) = self.ring_ops.iter().position(|&u| u == d.ud) {
                self.ring_ops.swap_remove(i);
            }
        }
        let op = d.tag.op;
        // Descriptors from opens are always taken, so they are closed even on failure.
        if let Some(fd) = d.opened.take() {
            match op {
                Op::OpenSrc => self.src = Some(Arc::new(fd)),
                Op::OpenDst => {
                    self.dst = Some(Arc::new(fd));
                    self.created = true;
                }
                _ => drop(fd),
            }
        }
        if self.error.is_some() {
            // Only collect resources now.
            if let Some(b) = d.buf.take() {
                io.give_back(b);
            }
            if let Some(p) = d.pipe.take() {
                io.pipes.put(p);
            }
            if matches!(op, Op::Rename) && d.res >= 0 {
                self.created = false;
            }
            return;
        }
        match op {
            Op::OpenSrc | Op::OpenDst => {
                if let Some(e) = d.err() {
                    let on_dst = matches!(op, Op::OpenDst);
                    return self.fail(self.io_err("open", on_dst, e));
                }
                if self.pending == 0 {
                    self.after_open(io);
                }
            }
            Op::Prealloc => {
                match d.err() {
                    // Filesystems without fallocate simply do not preallocate.
                    Some(e)
                        if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {}
                    Some(e) => return self.fail(self.io_err("fallocate", true, e)),
                    None => {}
                }
                self.phase = Phase::Copying;
            }
            Op::Read { off, want } => self.on_read(d, io, off, want),
            Op::Write {
                off,
                start,
                len,
                valid,
            } => self.on_write(d, io, off, start, len, valid),
            Op::SpliceIn { off, want } => self.on_splice_in(d, io, off, want),
            Op::SpliceOut { off, left } => self.on_splice_out(d, io, off, left),
            Op::CopyRange { off, want } => self.on_copy_range(d, off, want),
            Op::Truncate | Op::Fsync | Op::CloseSrc | Op::CloseDst | Op::Rename => {
                if let Some(e) = d.err() {
                    let name = match op {
                        Op::Truncate => "truncate",
                        Op::Fsync => "fsync",
                        Op::CloseSrc | Op::CloseDst => "close",
                        _ => "rename",
                    };
                    return self.fail(self.io_err(name, !matches!(op, Op::CloseSrc), e));
                }
                if matches!(op, Op::Rename) {
                    self.created = false;
                }
            }
            Op::Cancel | Op::Wake => {}
        }
        if self.phase == Phase::Copying
            && self.plan.is_empty()
            && self.chains == 0
            && self.error.is_none()
        {
            self.phase = Phase::Truncating;
        }
        if self.pending == 0 && self.error.is_none() {
            self.advance_finish(io);
        }
    }

    fn short_source(&self, off: u64) -> Error {
        Error::new(ErrorKind::SourceChanged, "read")
            .with_path(&self.req.src)
            .with_detail(format!(
                "source shrank during the copy: expected {} bytes from offset {}, the file ends at {}",
                self.req.len, self.req.start, off
            ))
            .with_context(self.context())
    }

    fn on_read(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>, off: u64, want: u32) {
        self.record(&d);
        let buf = d.buf.take().expect("read returns its buffer");
        let n = match d.res {
            r if r == -libc::EINTR || r == -libc::EAGAIN => {
                io.give_back(buf);
                self.plan.push_front((off, u64::from(want)));
                self.chains -= 1;
                return;
            }
            r if r < 0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.fail(self.io_err(
                    "read",
                    false,
                    std::io::Error::from_raw_os_error(-r),
                ));
            }
            0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.fail(self.short_source(off));
            }
            // A source that grew since the plan was made gives more than asked: copy the plan.
            n => (n as u32).min(want),
        };
        if n < want {
            self.plan
                .push_front((off + u64::from(n), u64::from(want - n)));
        }
        let len = if self.req.opts.direct {
            (n as usize).next_multiple_of(DIRECT_ALIGN) as u32
        } else {
            n
        };
        let dst = self.dst.clone().expect("open before copy");
        let woff = off - self.req.start;
        let t = self.tag(Op::Write {
            off: woff,
            start: 0,
            len,
            valid: n,
        });
        let ud = io.write(self.exec, t, &dst, buf, 0, len as usize, woff);
        self.started(ud);
        self.ops += 1;
    }

    fn on_write(
        &mut self,
        mut d: Done<Tag>,
        io: &mut Io<Tag>,
        off: u64,
        start: u32,
        len: u32,
        valid: u32,
    ) {
        self.record(&d);
        let buf = d.buf.take().expect("write returns its buffer");
        let m = match d.res {
            r if r == -libc::EINTR || r == -libc::EAGAIN => 0,
            r if r < 0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.fail(self.io_err(
                    "write",
                    true,
                    std::io::Error::from_raw_os_error(-r),
                ));
            }
            0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.fail(self.io_err(
                    "write",
                    true,
                    std::io::Error::from(std::io::ErrorKind::WriteZero),
                ));
            }
            m => m as u32,
        };
        let counted = (start + m).min(valid).saturating_sub(start.min(valid));
        self.add_bytes(u64::from(counted));
        if m < len {
            // Short write: resume from where it stopped.
            let dst = self.dst.clone().expect("open before copy");
            let t = self.tag(Op::Write {
                off: off + u64::from(m),
                start: start + m,
                len: len - m,
                valid,
            });
            let ud = io.write(
                self.exec,
                t,
                &dst,
                buf,
                (start + m) as usize,
                (len - m) as usize,
                off + u64::from(m),
            );
            self.started(ud);
            self.ops += 1;
        } else {
            io.give_back(buf);
            self.chains -= 1;
        }
    }

    fn on_splice_in(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>, off: u64, want: u32) {
        self.record(&d);
        let pipe = d.pipe.take().expect("splice returns its pipe");
        let n = match d.res {
            r if r == -libc::EINTR || r == -libc::EAGAIN => {
                io.pipes.put(pipe);
                self.plan.push_front((off, u64::from(want)));
                self.chains -= 1;
                return;
            }
            r if r < 0 => {
                io.pipes.put(pipe);
                self.chains -= 1;
                if self.try_fallback(r, off, want) {
                    return;
                }
                return self.fail(self.io_err(
                    "splice",
                    false,
                    std::io::Error::from_raw_os_error(-r),
                ));
            }
            0 => {
                io.pipes.put(pipe);
                self.chains -= 1;
                return self.fail(self.short_source(off));
            }
            n => n as u32,
        };
        if n < want {
            self.plan
                .push_front((off + u64::from(n), u64::from(want - n)));
        }
        let dst = self.dst.clone().expect("open before copy");
        let woff = off - self.req.start;
        let t = self.tag(Op::SpliceOut { off: woff, left: n });
        let ud = io.splice_out(self.exec, t, pipe, &dst, Some(woff), n as usize);
        self.started(ud);
        self.ops += 1;
    }

    fn on_splice_out(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>, off: u64, left: u32) {
        self.record(&d);
        let pipe = d.pipe.take().expect("splice returns its pipe");
        let m = match d.res {
            r if r == -libc::EINTR || r == -libc::EAGAIN => 0,
            r if r < 0 => {
                // The pipe still holds bytes: PipePool::put sees that and closes it.
                io.pipes.put(pipe);
                self.chains -= 1;
                return self.fail(self.io_err(
                    "splice",
                    true,
                    std::io::Error::from_raw_os_error(-r),
                ));
            }
            0 => {
                io.pipes.put(pipe);
                self.chains -= 1;
                return self.fail(self.io_err(
                    "splice",
                    true,
                    std::io::Error::from(std::io::ErrorKind::WriteZero),
                ));
            }
            m => m as u32,
        };
        self.add_bytes(u64::from(m));
        if m < left {
            let dst = self.dst.clone().expect("open before copy");
            let t = self.tag(Op::SpliceOut {
                off: off + u64::from(m),
                left: left - m,
            });
            let ud = io.splice_out(
                self.exec,
                t,
                pipe,
                &dst,
                Some(off + u64::from(m)),
                (left - m) as usize,
            );
            self.started(ud);
            self.ops += 1;
        } else {
            io.pipes.put(pipe);
            self.chains -= 1;
        }
    }

    fn on_copy_range(&mut self, d: Done<Tag>, off: u64, want: u32) {
        self.record(&d);
        self.chains -= 1;
        match d.res {
            r if r == -libc::EINTR || r == -libc::EAGAIN => {
                self.plan.push_front((off, u64::from(want)))
            }
            r if r < 0 => {
                if !self.try_fallback(r, off, want) {
                    self.fail(self.io_err(
                        "copy_file_range",
                        false,
                        std::io::Error::from_raw_os_error(-r),
                    ));
                }
            }
            0 => self.fail(self.short_source(off)),
            n => {
                let n = n as u32;
                self.add_bytes(u64::from(n));
                if n < want {
                    self.plan
                        .push_front((off + u64::from(n), u64::from(want - n)));
                }
            }
        }
    }

    /// copy_file_range -> splice -> buffered, when the first call says the pair cannot do it
    /// (EXDEV on old kernels, EINVAL/EOPNOTSUPP on some filesystems, ENOSYS in old sandboxes).
    fn try_fallback(&mut self, res: i32, off: u64, want: u32) -> bool {
        let errno = -res;
        if self.bytes > 0
            || !matches!(
                errno,
                libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS
            )
        {
            return false;
        }
        let next = match self.mode {
            Mode::CopyFileRange => Mode::Splice,
            Mode::Splice | Mode::UringSplice => Mode::Buffered,
            _ => return false,
        };
        self.mode_reason = format!(
            "{}; {} refused this pair ({}), fell back to {}",
            self.mode_reason,
            self.mode,
            std::io::Error::from_raw_os_error(errno),
            next
        );
        self.mode = next;
        self.exec = Exec::Sync;
        self.plan.push_front((off, u64::from(want)));
        true
    }

    /// Truncate -> fsync -> close both -> rename, one step per call once the last op is back.
    fn advance_finish(&mut self, io: &mut Io<Tag>) {
        loop {
            match self.phase {
                Phase::Truncating => {
                    self.phase = Phase::Syncing;
                    if self.needs_truncate {
                        let dst = self.dst.clone().expect("open before truncate");
                        let t = self.tag(Op::Truncate);
                        let ud = io.ftruncate(self.exec, t, &dst, self.req.len);
                        self.started(ud);
                        return;
                    }
                }
                Phase::Syncing => {
                    self.phase = Phase::Closing;
                    if self.req.opts.fsync {
                        let dst = self.dst.clone().expect("open before fsync");
                        let t = self.tag(Op::Fsync);
                        let ud = io.fsync(self.exec, t, &dst);
                        self.started(ud);
                        return;
                    }
                }
                Phase::Closing => {
                    self.phase = Phase::Renaming;
                    for (which, op) in [
                        (self.src.take(), Op::CloseSrc),
                        (self.dst.take(), Op::CloseDst),
                    ] {
                        let Some(arc) = which else { continue };
                        match Arc::try_unwrap(arc) {
                            Ok(fd) => {
                                let t = self.tag(op);
                                let ud = io.close(self.exec, t, fd);
                                self.started(ud);
                            }
                            // Unreachable while pending == 0; dropping the last clone closes it.
                            Err(arc) => drop(arc),
                        }
                    }
                    if self.pending > 0 {
                        return;
                    }
                }
                Phase::Renaming => {
                    self.phase = Phase::Finished;
                    if !self.req.opts.in_place {
                        let t = self.tag(Op::Rename);
                        let ud = io.rename(self.exec, t, &self.req.write_path, &self.req.dst);
                        self.started(ud);
                        return;
                    }
                }
                Phase::Finished => {
                    self.created = false;
                    return;
                }
                Phase::Opening | Phase::Preallocating | Phase::Copying => return,
            }
        }
    }

    fn drive_abort(&mut self, io: &mut Io<Tag>) {
        if !self.cancels_sent && !self.ring_ops.is_empty() {
            self.cancels_sent = true;
            for ud in self.ring_ops.clone() {
                let t = self.tag(Op::Cancel);
                if io.cancel(t, ud) {
                    self.pending += 1;
                }
            }
        }
    }

    /// Resolves the handle and returns the bytes moved, or `None` on failure. Call once
    /// `is_done()`: every op has completed, so closing the descriptors and removing the temp
    /// file is now safe.
    pub fn finish(mut self, backend: Backend) -> Option<u64> {
        let shared = self.req.shared.clone();
        match self.error.take() {
            Some(e) => {
                self.src = None;
                self.dst = None;
                if self.created && !self.req.opts.in_place {
                    let _ = std::fs::remove_file(&self.req.write_path);
                }
                shared.finish(Err(e));
                None
            }
            None => {
                let latency = self.hist.as_ref().map_or(Latency::default(), |h| Latency {
                    count: h.len(),
                    p50_ns: h.value_at_quantile(0.5),
                    p99_ns: h.value_at_quantile(0.99),
                    p999_ns: h.value_at_quantile(0.999),
                    max_ns: h.max(),
                });
                let bytes = self.bytes;
                shared.finish(Ok(Report {
                    backend,
                    mode: self.mode,
                    mode_reason: std::mem::take(&mut self.mode_reason),
                    bytes,
                    elapsed: shared.start.elapsed(),
                    ops: self.ops,
                    latency,
                    worker: self.worker,
                    source: self.req.src.clone(),
                    destination: self.req.dst.clone(),
                }));
                Some(bytes)
            }
        }
    }
}
