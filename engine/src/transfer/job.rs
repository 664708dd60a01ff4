//! The copy state machine. One `CopyJob` per transfer, driven by its worker: it opens the file
//! endpoints (sockets arrive open), plans chunks over the source's data extents (or reads a
//! stream until its length or EOF), keeps up to `depth` chunks moving, resumes every short
//! read/write/splice/send from where it stopped, then truncates, fsyncs, closes and renames the
//! temp file into place.
//!
//! Ordering: a file sink takes writes at any offset, so chunks go out as soon as they are read.
//! A socket sink is a byte stream, so chunks are staged by offset and sent strictly in order,
//! one send in flight (several sends on one stream socket may complete out of order). A socket
//! source is read one op at a time for the same reason; reads of a file source run `depth` wide.
//!
//! The same machine runs every mode on both executors (see `backend`): the uring modes put their
//! ops on the ring, the syscall modes run them at once. On any failure, cancellation, deadline or
//! idle timeout it stops issuing, sends ASYNC_CANCEL for each ring op still in flight, waits until
//! *every* op has completed and handed back its buffer/pipe/descriptor, and only then closes the
//! files and removes the temp file. A destination that looks complete exists only after a fully
//! successful copy (or was asked for in place).

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{Endpoint, Mode, Report, Request};
use crate::backend::{Backend, Done, Exec, Io};
use crate::buffers::BufLease;
use crate::error::{Error, ErrorKind};
use crate::sys::{self, Pipe};

/// O_DIRECT alignment used for offsets, lengths and buffers.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// What an op was, carried through the kernel in its slot. Offsets named `off` are source
/// offsets; `base`/`at` are destination offsets (stream positions for sockets).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    OpenSrc,
    OpenDst,
    Prealloc,
    Read {
        off: u64,
        want: u32,
    },
    /// `buf[start..start+len]` going to destination offset `base + start`; the buffer holds
    /// `valid` real bytes (more may be written to keep O_DIRECT aligned; truncate cuts them).
    Write {
        base: u64,
        start: u32,
        len: u32,
        valid: u32,
    },
    SpliceIn {
        off: u64,
        want: u32,
    },
    /// `left` bytes in the pipe, bound for destination offset `at`.
    SpliceOut {
        at: u64,
        left: u32,
    },
    CopyRange {
        off: u64,
        want: u32,
    },
    Sendfile {
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

/// Data read and waiting for its turn on a stream sink.
enum Staged {
    Buf { buf: BufLease, len: u32, valid: u32 },
    Pipe { pipe: Pipe, left: u32 },
}

pub(crate) struct CopyJob {
    pub req: Request,
    slot: u32,
    exec: Exec,
    mode: Mode,
    mode_reason: String,
    phase: Phase,
    src: Option<Arc<OwnedFd>>,
    dst: Option<Arc<OwnedFd>>,
    /// Paths of file endpoints (opened by the job).
    src_path: Option<std::path::PathBuf>,
    dst_path: Option<std::path::PathBuf>,
    src_stream: bool,
    dst_stream: bool,
    created: bool,
    plan: VecDeque<(u64, u64)>,
    /// Stream source: next position to read, and whether EOF was seen.
    src_pos: u64,
    src_eof: bool,
    reading: bool,
    /// Stream sink: staged chunks by destination offset, the next offset to send, and whether
    /// a send is in flight.
    staged: BTreeMap<u64, Staged>,
    next_out: u64,
    writing: bool,
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
    latency: super::latency::Recorder,
    throttle_until: Option<Instant>,
    deadline: Option<Instant>,
    last_progress: Instant,
    needs_truncate: bool,
    /// Length of `Options::header`, which occupies stream offsets `0..header_len`; `header_sent`
    /// once it is staged.
    header_len: u64,
    header_staged: bool,
    pub worker: usize,
}

fn errno(e: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(e)
}

fn retryable(res: i32) -> bool {
    res == -libc::EINTR || res == -libc::EAGAIN
}

impl CopyJob {
    pub fn new(mut req: Request, slot: u32, worker: usize) -> CopyJob {
        let exec = if req.mode.needs_uring() { Exec::Ring } else { Exec::Sync };
        let deadline = req.opts.deadline.map(|d| req.shared.start + d);
        // The job owns the endpoints from here on: a socket is closed when the job closes it,
        // not whenever the request happens to be dropped.
        let take = |e: &mut Endpoint| match std::mem::replace(e, Endpoint::Path(Default::default())) {
            Endpoint::Socket(fd) => (Some(fd), None, true),
            Endpoint::Path(p) => (None, Some(p), false),
        };
        let (src, src_path, src_stream) = take(&mut req.src);
        let (dst, dst_path, dst_stream) = take(&mut req.dst);
        CopyJob {
            mode: req.mode,
            mode_reason: req.mode_reason.clone(),
            slot,
            exec,
            phase: Phase::Opening,
            src,
            dst,
            src_path,
            dst_path,
            src_stream,
            dst_stream,
            created: false,
            plan: VecDeque::new(),
            src_pos: 0,
            src_eof: false,
            reading: false,
            staged: BTreeMap::new(),
            next_out: 0,
            writing: false,
            chains: 0,
            pending: 0,
            ring_ops: Vec::new(),
            error: None,
            cancels_sent: false,
            bytes: 0,
            ops: 0,
            latency: Default::default(),
            throttle_until: None,
            deadline,
            last_progress: req.shared.start,
            needs_truncate: false,
            header_len: req.opts.header.as_ref().map_or(0, |h| h.len() as u64),
            header_staged: false,
            worker,
            req,
        }
    }

    fn tag(&self, op: Op) -> Tag {
        Tag { job: self.slot, op }
    }

    fn context(&self) -> String {
        format!("{}, {}", self.req.backend, self.mode)
    }

    fn io_err(&self, op: &'static str, on_dst: bool, e: std::io::Error) -> Error {
        let path = if on_dst { &self.req.dst_name } else { &self.req.src_name };
        let peer = matches!(
            e.raw_os_error(),
            Some(libc::ECONNRESET | libc::EPIPE | libc::ENOTCONN | libc::ECONNABORTED | libc::ETIMEDOUT)
        ) && (if on_dst { self.dst_stream } else { self.src_stream });
        let mut err = Error::io(op, Some(path), e).with_context(self.context());
        if peer {
            err = err.with_kind(ErrorKind::Peer).with_detail(if on_dst {
                "the peer went away or stopped accepting data"
            } else {
                "the peer reset the connection"
            });
        }
        if self.req.opts.direct && err.raw_os_error() == Some(libc::EINVAL) && op == "open" {
            err = err.with_detail("O_DIRECT is not supported by this filesystem; copy without --direct");
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

    /// Cancellation, deadline or idle timeout noticed by the worker.
    pub fn abort(&mut self, e: Error) {
        if self.phase != Phase::Finished {
            self.fail(e);
        }
    }

    pub fn is_done(&self) -> bool {
        self.pending == 0 && (self.phase == Phase::Finished || self.error.is_some())
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.req.opts.idle_timeout.map(|t| self.last_progress + t)
    }

    /// When the job next wants to run without an event (rate limit, deadline, idle timeout).
    pub fn wake_at(&self) -> Option<Instant> {
        [self.throttle_until, self.deadline, self.idle_deadline()].into_iter().flatten().min()
    }

    /// Deadline and idle checks.
    pub fn check_timers(&mut self, now: Instant) {
        if self.error.is_some() || self.phase == Phase::Finished {
            return;
        }
        if self.deadline.is_some_and(|d| now >= d) {
            let e = Error::new(ErrorKind::DeadlineExceeded, "copy").with_path(&self.req.src_name);
            self.abort(e);
        } else if let Some(idle) = self.idle_deadline().filter(|d| now >= *d) {
            let secs = self.req.opts.idle_timeout.unwrap_or_default().as_secs_f64();
            let _ = idle;
            let e = Error::new(ErrorKind::DeadlineExceeded, "copy")
                .with_path(&self.req.src_name)
                .with_detail(format!("idle timeout: no progress for {secs:.1}s"));
            self.abort(e);
        }
    }

    /// Starts whatever ops the current phase allows.
    pub fn drive(&mut self, io: &mut Io<Tag>, now: Instant) {
        if self.error.is_some() {
            self.drive_abort(io);
            return;
        }
        if self.phase == Phase::Opening && self.pending == 0 {
            // Sockets arrive open: a socket -> socket job goes straight on to copying.
            self.start_open(io);
        }
        if self.phase == Phase::Copying {
            self.drive_copy(io, now);
            self.maybe_finish_copy(io);
        }
    }

    fn start_open(&mut self, io: &mut Io<Tag>) {
        let direct = if self.req.opts.direct { libc::O_DIRECT } else { 0 };
        // File endpoints are opened here (sockets arrive open), both at once.
        if let Some(p) = self.src_path.clone() {
            let t = self.tag(Op::OpenSrc);
            let ud = io.open(self.exec, t, &p, libc::O_RDONLY | direct, 0);
            self.started(ud);
        }
        if self.dst_path.is_some() {
            let mut flags = libc::O_WRONLY | libc::O_CREAT | direct;
            if !self.req.opts.in_place {
                flags |= libc::O_EXCL;
            }
            let t = self.tag(Op::OpenDst);
            let path = self.req.write_path.clone();
            let ud = io.open(self.exec, t, &path, flags, self.req.perm);
            self.started(ud);
        }
        if self.pending == 0 {
            self.after_open(io);
        }
    }

    fn after_open(&mut self, io: &mut Io<Tag>) {
        let (Some(src), Some(dst)) = (self.src.clone(), self.dst.clone()) else {
            return;
        };
        if !self.src_stream {
            let len = self.req.len.unwrap_or(0);
            let end = self.req.start + len;
            let extents = if self.req.opts.sparse && self.req.src_sparse && len > 0 && !self.dst_stream {
                match sys::data_extents(src.as_fd(), self.req.start, end) {
                    Ok(e) => e,
                    Err(e) => return self.fail(self.io_err("seek data", false, e)),
                }
            } else if len > 0 {
                vec![(self.req.start, len)]
            } else {
                Vec::new()
            };
            let covered: u64 = extents.iter().map(|e| e.1).sum();
            let align = if self.req.opts.direct { DIRECT_ALIGN } else { 1 };
            self.plan = super::plan_chunks(&extents, self.req.chunk, align);
            self.needs_truncate = covered != len || self.req.opts.direct || self.req.opts.in_place;
        } else {
            self.needs_truncate = self.req.opts.in_place;
        }
        if self.req.opts.prealloc && !self.dst_stream && self.req.len.unwrap_or(0) > 0 {
            self.phase = Phase::Preallocating;
            let t = self.tag(Op::Prealloc);
            let ud = io.fallocate(self.exec, t, &dst, 0, self.req.len.unwrap_or(0));
            self.started(ud);
        } else {
            self.phase = Phase::Copying;
        }
    }

    /// The next piece of source to read: (offset, length).
    fn next_piece(&mut self) -> Option<(u64, u64)> {
        if self.src_stream {
            let left = self.req.len.map_or(u64::MAX, |l| l.saturating_sub(self.src_pos));
            if self.reading || self.src_eof || left == 0 {
                return None;
            }
            Some((self.src_pos, left.min(self.req.chunk as u64)))
        } else {
            self.plan.pop_front()
        }
    }

    fn put_back(&mut self, off: u64, len: u64) {
        if !self.src_stream {
            self.plan.push_front((off, len));
        }
    }

    fn drive_copy(&mut self, io: &mut Io<Tag>, now: Instant) {
        let (Some(src), Some(dst)) = (self.src.clone(), self.dst.clone()) else {
            return;
        };
        let depth = if self.exec == Exec::Sync { 1 } else { self.req.depth };
        if self.header_len > 0 && !self.header_staged {
            let Some(mut buf) = io.lease() else { return };
            let h = self.req.opts.header.as_deref().unwrap_or_default();
            buf.as_mut_slice()[..h.len()].copy_from_slice(h);
            self.header_staged = true;
            self.chains += 1;
            let len = h.len() as u32;
            self.emit(io, 0, Staged::Buf { buf, len, valid: len });
        }
        while self.chains < depth && io.room(self.exec, 2) {
            if let Some(t) = self.throttle_until {
                if now < t {
                    break;
                }
                self.throttle_until = None;
            }
            let Some((off, planned)) = self.next_piece() else {
                break;
            };
            let mut len = planned as usize;
            let src_off = (!self.src_stream).then_some(off);
            match self.mode {
                Mode::UringFixed | Mode::UringSendZc | Mode::Buffered | Mode::Auto => {
                    let Some(buf) = io.lease() else {
                        self.put_back(off, planned);
                        break;
                    };
                    len = len.min(buf.capacity());
                    let t = self.tag(Op::Read { off, want: len as u32 });
                    let ud = if self.src_stream {
                        io.recv(self.exec, t, &src, buf, len)
                    } else {
                        // O_DIRECT reads whole blocks; the tail read comes back short at EOF.
                        let io_len = if self.req.opts.direct {
                            len.next_multiple_of(DIRECT_ALIGN).min(buf.capacity())
                        } else {
                            len
                        };
                        io.read(self.exec, t, &src, buf, io_len, off)
                    };
                    self.started(ud);
                }
                Mode::UringSplice | Mode::Splice => {
                    let pipe = match io.pipes.get() {
                        Ok(p) => p,
                        Err(e) => {
                            self.put_back(off, planned);
                            return self.fail(self.io_err("create pipe", false, e));
                        }
                    };
                    len = len.min(pipe.capacity);
                    let t = self.tag(Op::SpliceIn { off, want: len as u32 });
                    let ud = io.splice_in(self.exec, t, &src, src_off, pipe, len);
                    self.started(ud);
                }
                Mode::CopyFileRange => {
                    len = len.min(sys::MAX_RW);
                    let t = self.tag(Op::CopyRange { off, want: len as u32 });
                    io.copy_range(t, &src, off, &dst, off - self.req.start, len);
                    self.started(None);
                }
                Mode::Sendfile => {
                    len = len.min(sys::MAX_RW);
                    let t = self.tag(Op::Sendfile { off, want: len as u32 });
                    io.sendfile(t, &src, off, &dst, len);
                    self.started(None);
                }
            }
            if self.src_stream {
                self.reading = true;
            } else if (len as u64) < planned {
                // Cut to the buffer or pipe size: the rest goes back to the plan.
                self.plan.push_front((off + len as u64, planned - len as u64));
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

    fn source_done(&self) -> bool {
        if self.src_stream {
            self.src_eof || self.req.len.is_some_and(|l| self.src_pos >= l)
        } else {
            self.plan.is_empty()
        }
    }

    fn maybe_finish_copy(&mut self, io: &mut Io<Tag>) {
        if self.phase == Phase::Copying
            && self.error.is_none()
            && self.chains == 0
            && self.staged.is_empty()
            && self.source_done()
        {
            self.phase = Phase::Truncating;
            if self.pending == 0 {
                self.advance_finish(io);
            }
        }
    }

    fn record(&mut self, d: &Done<Tag>) {
        self.latency.record(d.latency);
    }

    fn add_bytes(&mut self, n: u64) {
        self.bytes += n;
        self.last_progress = Instant::now();
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
            return;
        }
        match op {
            Op::OpenSrc | Op::OpenDst => {
                if let Some(e) = d.err() {
                    return self.fail(self.io_err("open", matches!(op, Op::OpenDst), e));
                }
                if self.pending == 0 {
                    self.after_open(io);
                }
            }
            Op::Prealloc => {
                match d.err() {
                    // Filesystems without fallocate simply do not preallocate.
                    Some(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {}
                    Some(e) => return self.fail(self.io_err("fallocate", true, e)),
                    None => {}
                }
                self.phase = Phase::Copying;
            }
            Op::Read { off, want } => self.on_read(d, io, off, want),
            Op::Write { base, start, len, valid } => self.on_write(d, io, base, start, len, valid),
            Op::SpliceIn { off, want } => self.on_splice_in(d, io, off, want),
            Op::SpliceOut { at, left } => self.on_splice_out(d, io, at, left),
            Op::CopyRange { off, want } | Op::Sendfile { off, want } => self.on_sync_copy(d, op, off, want),
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
        if self.error.is_none() {
            self.maybe_finish_copy(io);
            if self.pending == 0 && self.phase != Phase::Copying {
                self.advance_finish(io);
            }
        }
    }

    fn ended_early(&self, off: u64) -> Error {
        if self.src_stream {
            Error::new(ErrorKind::Peer, "recv")
                .with_path(&self.req.src_name)
                .with_detail(format!(
                    "the peer closed the connection after {off} of {} bytes",
                    self.req.len.unwrap_or(0)
                ))
                .with_context(self.context())
        } else {
            Error::new(ErrorKind::SourceChanged, "read")
                .with_path(&self.req.src_name)
                .with_detail(format!(
                    "source shrank during the copy: expected {} bytes from offset {}, the file ends at {}",
                    self.req.len.unwrap_or(0),
                    self.req.start,
                    off
                ))
                .with_context(self.context())
        }
    }

    /// A read or splice-in returned 0: end of a stream, or a source that shrank.
    fn on_eof(&mut self, off: u64) {
        if self.src_stream && self.req.len.is_none() {
            self.src_eof = true;
        } else {
            self.fail(self.ended_early(off));
        }
    }

    fn on_read(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>, off: u64, want: u32) {
        self.record(&d);
        let buf = d.buf.take().expect("read returns its buffer");
        if self.src_stream {
            self.reading = false;
        }
        let n = match d.res {
            r if retryable(r) => {
                io.give_back(buf);
                self.put_back(off, u64::from(want));
                self.chains -= 1;
                return;
            }
            r if r < 0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.fail(self.io_err("read", false, errno(-r)));
            }
            0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.on_eof(off);
            }
            // A source that grew since the plan was made gives more than asked: copy the plan.
            n => (n as u32).min(want),
        };
        if self.src_stream {
            self.src_pos = off + u64::from(n);
        } else if n < want {
            self.plan.push_front((off + u64::from(n), u64::from(want - n)));
        }
        let len = if self.req.opts.direct { (n as usize).next_multiple_of(DIRECT_ALIGN) as u32 } else { n };
        let base = off - self.req.start + self.header_len;
        self.emit(io, base, Staged::Buf { buf, len, valid: n });
    }

    /// Sends a chunk toward the sink: at once for a file, in offset order for a stream.
    fn emit(&mut self, io: &mut Io<Tag>, at: u64, s: Staged) {
        if self.dst_stream {
            self.staged.insert(at, s);
            self.pump(io);
        } else {
            self.issue(io, at, s);
        }
    }

    fn pump(&mut self, io: &mut Io<Tag>) {
        while !self.writing {
            let Some(entry) = self.staged.first_entry() else {
                return;
            };
            if *entry.key() != self.next_out {
                return;
            }
            let s = entry.remove();
            self.writing = true;
            let at = self.next_out;
            self.issue(io, at, s);
        }
    }

    fn issue(&mut self, io: &mut Io<Tag>, at: u64, s: Staged) {
        let dst = self.dst.clone().expect("open before copy");
        match s {
            Staged::Buf { buf, len, valid } => self.write_buf(io, &dst, buf, at, 0, len, valid),
            Staged::Pipe { pipe, left } => {
                let t = self.tag(Op::SpliceOut { at, left });
                let off = (!self.dst_stream).then_some(at);
                let ud = io.splice_out(self.exec, t, pipe, &dst, off, left as usize);
                self.started(ud);
                self.ops += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write_buf(
        &mut self,
        io: &mut Io<Tag>,
        dst: &Arc<OwnedFd>,
        buf: BufLease,
        base: u64,
        start: u32,
        len: u32,
        valid: u32,
    ) {
        let t = self.tag(Op::Write { base, start, len, valid });
        let ud = if self.dst_stream {
            // The header (stream offset 0) goes with MSG_MORE and without zero-copy.
            let is_header = base == 0 && self.header_len > 0;
            let zc = self.mode == Mode::UringSendZc && !is_header;
            io.send(self.exec, t, dst, buf, start as usize, len as usize, zc, is_header)
        } else {
            io.write(self.exec, t, dst, buf, start as usize, len as usize, base + u64::from(start))
        };
        self.started(ud);
        self.ops += 1;
    }

    fn chunk_sent(&mut self, io: &mut Io<Tag>, end: u64) {
        self.chains -= 1;
        if self.dst_stream {
            self.writing = false;
            self.next_out = end;
            self.pump(io);
        }
    }

    fn on_write(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>, base: u64, start: u32, len: u32, valid: u32) {
        self.record(&d);
        let buf = d.buf.take().expect("write returns its buffer");
        let m = match d.res {
            r if retryable(r) => 0,
            r if r < 0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.fail(self.io_err(if self.dst_stream { "send" } else { "write" }, true, errno(-r)));
            }
            0 => {
                io.give_back(buf);
                self.chains -= 1;
                return self.fail(self.io_err("write", true, std::io::Error::from(std::io::ErrorKind::WriteZero)));
            }
            m => m as u32,
        };
        let mut counted = (start + m).min(valid).saturating_sub(start.min(valid));
        if base < self.header_len {
            counted = 0; // the header is not part of the body
        }
        if counted > 0 {
            self.add_bytes(u64::from(counted));
        }
        if m < len {
            // Short write or send: resume from where it stopped.
            let dst = self.dst.clone().expect("open before copy");
            self.write_buf(io, &dst, buf, base, start + m, len - m, valid);
        } else {
            io.give_back(buf);
            self.chunk_sent(io, base + u64::from(valid));
        }
    }

    fn on_splice_in(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>, off: u64, want: u32) {
        self.record(&d);
        let pipe = d.pipe.take().expect("splice returns its pipe");
        if self.src_stream {
            self.reading = false;
        }
        let n = match d.res {
            r if retryable(r) => {
                io.pipes.put(pipe);
                self.put_back(off, u64::from(want));
                self.chains -= 1;
                return;
            }
            r if r < 0 => {
                io.pipes.put(pipe);
                self.chains -= 1;
                if self.try_fallback(r, off, want) {
                    return;
                }
                return self.fail(self.io_err("splice", false, errno(-r)));
            }
            0 => {
                io.pipes.put(pipe);
                self.chains -= 1;
                return self.on_eof(off);
            }
            n => n as u32,
        };
        if self.src_stream {
            self.src_pos = off + u64::from(n);
        } else if n < want {
            self.plan.push_front((off + u64::from(n), u64::from(want - n)));
        }
        let at = off - self.req.start + self.header_len;
        self.emit(io, at, Staged::Pipe { pipe, left: n });
    }

    fn on_splice_out(&mut self, mut d: Done<Tag>, io: &mut Io<Tag>, at: u64, left: u32) {
        self.record(&d);
        let pipe = d.pipe.take().expect("splice returns its pipe");
        let m = match d.res {
            r if retryable(r) => 0,
            r if r < 0 => {
                // The pipe still holds bytes: PipePool::put sees that and closes it.
                io.pipes.put(pipe);
                self.chains -= 1;
                return self.fail(self.io_err("splice", true, errno(-r)));
            }
            0 => {
                io.pipes.put(pipe);
                self.chains -= 1;
                return self.fail(self.io_err("splice", true, std::io::Error::from(std::io::ErrorKind::WriteZero)));
            }
            m => m as u32,
        };
        if m > 0 {
            self.add_bytes(u64::from(m));
        }
        if m < left {
            let dst = self.dst.clone().expect("open before copy");
            let at = at + u64::from(m);
            let t = self.tag(Op::SpliceOut { at, left: left - m });
            let off = (!self.dst_stream).then_some(at);
            let ud = io.splice_out(self.exec, t, pipe, &dst, off, (left - m) as usize);
            self.started(ud);
            self.ops += 1;
        } else {
            io.pipes.put(pipe);
            self.chunk_sent(io, at + u64::from(m));
        }
    }

    /// copy_file_range and sendfile: one synchronous call moves the bytes.
    fn on_sync_copy(&mut self, d: Done<Tag>, op: Op, off: u64, want: u32) {
        self.record(&d);
        self.chains -= 1;
        let name = if matches!(op, Op::Sendfile { .. }) { "sendfile" } else { "copy_file_range" };
        match d.res {
            r if retryable(r) => self.plan.push_front((off, u64::from(want))),
            r if r < 0 => {
                if !self.try_fallback(r, off, want) {
                    let on_dst = self.dst_stream && matches!(-r, libc::EPIPE | libc::ECONNRESET);
                    self.fail(self.io_err(name, on_dst, errno(-r)));
                }
            }
            0 => self.fail(self.ended_early(off)),
            n => {
                let n = n as u32;
                self.add_bytes(u64::from(n));
                if n < want {
                    self.plan.push_front((off + u64::from(n), u64::from(want - n)));
                }
            }
        }
    }

    /// copy_file_range / sendfile -> splice -> buffered, when the first call says the pair
    /// cannot do it (EXDEV on old kernels, EINVAL/EOPNOTSUPP on some filesystems, ENOSYS in old
    /// sandboxes).
    fn try_fallback(&mut self, res: i32, off: u64, want: u32) -> bool {
        let errno = -res;
        if self.bytes > 0
            || self.src_stream
            || !matches!(errno, libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
        {
            return false;
        }
        let next = match self.mode {
            Mode::CopyFileRange | Mode::Sendfile => Mode::Splice,
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
                    if self.needs_truncate && !self.dst_stream {
                        let dst = self.dst.clone().expect("open before truncate");
                        let t = self.tag(Op::Truncate);
                        let ud = io.ftruncate(self.exec, t, &dst, self.bytes_total());
                        self.started(ud);
                        return;
                    }
                }
                Phase::Syncing => {
                    self.phase = Phase::Closing;
                    if self.req.opts.fsync && !self.dst_stream {
                        let dst = self.dst.clone().expect("open before fsync");
                        let t = self.tag(Op::Fsync);
                        let ud = io.fsync(self.exec, t, &dst);
                        self.started(ud);
                        return;
                    }
                }
                Phase::Closing => {
                    self.phase = Phase::Renaming;
                    let ends = [
                        (self.src.take(), Op::CloseSrc, self.src_stream),
                        (self.dst.take(), Op::CloseDst, self.dst_stream),
                    ];
                    for (which, op, stream) in ends {
                        let Some(arc) = which else { continue };
                        match Arc::try_unwrap(arc) {
                            // Files close in the ring so close(2)'s own error (EIO on NFS) counts.
                            Ok(fd) if !stream => {
                                let t = self.tag(op);
                                let ud = io.close(self.exec, t, fd);
                                self.started(ud);
                            }
                            // Sockets just drop: the peer sees EOF when the last copy closes.
                            Ok(fd) => drop(fd),
                            Err(arc) => drop(arc),
                        }
                    }
                    if self.pending > 0 {
                        return;
                    }
                }
                Phase::Renaming => {
                    self.phase = Phase::Finished;
                    if !self.req.opts.in_place && !self.dst_stream {
                        let t = self.tag(Op::Rename);
                        let (from, to) = (self.req.write_path.clone(), self.dst_path());
                        let ud = io.rename(self.exec, t, &from, &to);
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

    /// Length of the finished destination.
    fn bytes_total(&self) -> u64 {
        if self.src_stream {
            self.src_pos
        } else {
            self.req.len.unwrap_or(0)
        }
    }

    fn dst_path(&self) -> std::path::PathBuf {
        self.dst_path.clone().unwrap_or_else(|| self.req.dst_name.clone())
    }

    fn drive_abort(&mut self, io: &mut Io<Tag>) {
        if !self.cancels_sent {
            self.cancels_sent = true;
            // A socket whose transfer failed is reset, never closed cleanly (see
            // sys::reset_connection); that also ends sends the kernel cannot cancel, such as
            // SEND_ZC buffers held by segments a silent peer never acknowledged.
            for (fd, stream) in [(&self.src, self.src_stream), (&self.dst, self.dst_stream)] {
                if let (Some(fd), true) = (fd, stream) {
                    sys::reset_connection(fd.as_fd());
                }
            }
            for ud in self.ring_ops.clone() {
                let t = self.tag(Op::Cancel);
                if io.cancel(t, ud) {
                    self.pending += 1;
                }
            }
        }
        // Staged chunks never reached the kernel: their buffers and pipes go straight back.
        while let Some((_, s)) = self.staged.pop_first() {
            match s {
                Staged::Buf { buf, .. } => io.give_back(buf),
                Staged::Pipe { pipe, .. } => io.pipes.put(pipe),
            }
        }
    }

    /// Resolves the handle and returns the bytes moved, or `None` on failure. Call once
    /// `is_done()`: every op has completed, so closing the descriptors and removing the temp
    /// file is now safe.
    pub fn finish(mut self, backend: Backend, io: &mut Io<Tag>) -> Option<u64> {
        while let Some((_, s)) = self.staged.pop_first() {
            match s {
                Staged::Buf { buf, .. } => io.give_back(buf),
                Staged::Pipe { pipe, .. } => io.pipes.put(pipe),
            }
        }
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
                let latency = self.latency.summary();
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
                    source: self.req.src_name.clone(),
                    destination: self.req.dst_name.clone(),
                }));
                Some(bytes)
            }
        }
    }
}
