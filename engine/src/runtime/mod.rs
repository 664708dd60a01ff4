//! Thread-per-core runtime: one worker per allowed CPU (sched_getaffinity), pinned, each with
//! its own ring, buffer slab, pipe pool and mailbox. Nothing is shared between workers but the
//! mailboxes and the metrics counters, so the hot path takes no lock.
//!
//! A worker asleep in `io_uring_enter` is woken by an eventfd read it keeps in flight on its ring;
//! senders push to the crossbeam channel and then bump the eventfd. Without io_uring the worker
//! blocks on the channel itself. Idle workers never poll.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::backend::{self, Backend, BackendChoice};
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{WorkerMetrics, WorkerSnapshot};
use crate::sys;
use crate::transfer::{self, Endpoint, Mode, Notify, Options, Request, Shared, Sink, Source, Transfer};

mod worker;

pub(crate) enum Msg {
    Copy(Box<Request>),
    Cancel(u64),
    Shutdown,
}

/// How to reach one worker.
pub(crate) struct Mailbox {
    tx: Sender<Msg>,
    efd: Option<Arc<OwnedFd>>,
    active: Arc<AtomicUsize>,
    asleep: Arc<AtomicBool>,
}

impl Mailbox {
    /// Queues a message and wakes the worker only if it is (about to be) asleep in the ring:
    /// a busy worker drains its mailbox every loop, so most sends cost no syscall at all.
    fn send(&self, m: Msg) -> bool {
        let ok = self.tx.send(m).is_ok();
        if let Some(efd) = &self.efd {
            // Pairs with the worker's `asleep.store(true)` then `rx.is_empty()` check (both
            // SeqCst): either the worker sees this message, or this sees the flag and signals.
            // The fence orders the channel push before the flag read on every architecture.
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.asleep.swap(false, Ordering::SeqCst) {
                let _ = sys::eventfd_signal(std::os::fd::AsFd::as_fd(&**efd));
            }
        }
        ok
    }
}

impl Notify for Mailbox {
    fn cancel(&self, id: u64) {
        self.send(Msg::Cancel(id));
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    workers: Option<usize>,
    chunk: usize,
    depth: usize,
    slab: usize,
    backend: BackendChoice,
    pin: bool,
    ring_entries: u32,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            workers: None,
            chunk: 256 * 1024,
            depth: 8,
            slab: 16 * 1024 * 1024,
            backend: BackendChoice::Auto,
            pin: true,
            ring_entries: 256,
        }
    }
}

impl EngineBuilder {
    /// Number of workers (default: one per allowed CPU).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }
    /// Default and maximum bytes per op; each slab buffer has this size (default 256 KiB).
    pub fn chunk(mut self, bytes: usize) -> Self {
        self.chunk = bytes.max(4096);
        self
    }
    /// Default chunks in flight per transfer (default 8).
    pub fn depth(mut self, n: usize) -> Self {
        self.depth = n.max(1);
        self
    }
    /// Bytes of registered buffers per worker (default 16 MiB). Bounds memory whatever the load.
    pub fn slab(mut self, bytes: usize) -> Self {
        self.slab = bytes;
        self
    }
    pub fn backend(mut self, b: BackendChoice) -> Self {
        self.backend = b;
        self
    }
    /// Pin each worker to its CPU (default true).
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }
    /// SQ entries per ring (CQ is twice that).
    pub fn ring_entries(mut self, n: u32) -> Self {
        self.ring_entries = n.clamp(8, 4096);
        self
    }

    pub fn build(self) -> Result<Engine> {
        let (backend, reason) = backend::select(self.backend)?;
        let cpus = sys::allowed_cpus().unwrap_or_else(|_| vec![0]);
        let n = self.workers.unwrap_or(cpus.len()).max(1);
        let chunk = self.chunk.next_multiple_of(sys::page_size());
        let count = (self.slab / chunk).max(self.depth).max(2);
        // Registered buffers count against RLIMIT_MEMLOCK unless we hold CAP_IPC_LOCK.
        let _ = sys::raise_memlock((n * count * chunk + (1 << 20) * n) as u64);
        // Many files and pipes in flight: lift the soft descriptor limit to the hard one.
        let _ = sys::raise_nofile(65_536);
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let mut mailboxes = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut metrics = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx): (Sender<Msg>, Receiver<Msg>) = crossbeam_channel::unbounded();
            let efd = match backend {
                Backend::Uring => Some(Arc::new(sys::eventfd().map_err(|e| Error::io("eventfd", None, e))?)),
                Backend::Syscall => None,
            };
            let m = Arc::new(WorkerMetrics::default());
            let active = Arc::new(AtomicUsize::new(0));
            let asleep = Arc::new(AtomicBool::new(false));
            let cfg = worker::Config {
                id: i,
                cpu: self.pin.then(|| cpus[i % cpus.len()]),
                backend,
                ring_entries: self.ring_entries,
                buffers: count,
                chunk,
                rx,
                efd: efd.clone(),
                metrics: m.clone(),
                active: active.clone(),
                asleep: asleep.clone(),
                ready: ready_tx.clone(),
            };
            let t = std::thread::Builder::new()
                .name(format!("ferry-w{i}"))
                .spawn(move || worker::run(cfg))
                .map_err(|e| Error::io("spawn worker", None, e))?;
            threads.push(t);
            mailboxes.push(Arc::new(Mailbox { tx, efd, active, asleep }));
            metrics.push(m);
        }
        drop(ready_tx);
        let mut registration = Vec::new();
        let mut setup = Vec::new();
        let mut first_err = None;
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(info)) => {
                    registration.push(info.registered);
                    setup = info.setup;
                }
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(_) => first_err = first_err.or(Some(Error::new(ErrorKind::BackendUnavailable, "start worker"))),
            }
        }
        let engine = Engine {
            mailboxes,
            threads,
            metrics,
            backend,
            reason,
            chunk,
            depth: self.depth,
            buffers_per_worker: count,
            registration,
            setup,
            next_id: AtomicU64::new(1),
        };
        match first_err {
            Some(e) => Err(e),
            None => Ok(engine),
        }
    }
}

/// What a worker reports once its ring and slab are up.
pub(crate) struct Ready {
    pub registered: std::result::Result<(), String>,
    pub setup: Vec<&'static str>,
}

/// The engine: a set of workers and the backend they run.
pub struct Engine {
    mailboxes: Vec<Arc<Mailbox>>,
    threads: Vec<JoinHandle<()>>,
    metrics: Vec<Arc<WorkerMetrics>>,
    backend: Backend,
    reason: String,
    chunk: usize,
    depth: usize,
    buffers_per_worker: usize,
    registration: Vec<std::result::Result<(), String>>,
    setup: Vec<&'static str>,
    next_id: AtomicU64,
}

/// A description of a running engine, for logs and `ferry doctor`.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    pub backend: Backend,
    pub backend_reason: String,
    pub workers: usize,
    pub chunk: usize,
    pub depth: usize,
    pub buffers_per_worker: usize,
    /// `Ok` when every worker registered its slab, else why not (reads/writes then use
    /// unregistered buffers).
    pub buffers_registered: std::result::Result<(), String>,
    pub setup_flags: Vec<&'static str>,
}

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// An engine with default settings.
    pub fn new() -> Result<Engine> {
        EngineBuilder::default().build()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn info(&self) -> EngineInfo {
        EngineInfo {
            backend: self.backend,
            backend_reason: self.reason.clone(),
            workers: self.mailboxes.len(),
            chunk: self.chunk,
            depth: self.depth,
            buffers_per_worker: self.buffers_per_worker,
            buffers_registered: self.registration.iter().find(|r| r.is_err()).cloned().unwrap_or(Ok(())),
            setup_flags: self.setup.clone(),
        }
    }

    /// Per-worker counters.
    pub fn metrics(&self) -> Vec<WorkerSnapshot> {
        self.metrics.iter().map(|m| m.snapshot()).collect()
    }

    /// Which mode `Mode::Auto` picks for a file -> file copy of `len` bytes, and why.
    /// `reflink`: the destination's filesystem can clone or copy server-side.
    pub fn auto_mode(&self, len: u64, direct: bool, reflink: bool) -> (Mode, &'static str) {
        match (self.backend, direct) {
            (Backend::Uring, true) => {
                (Mode::UringFixed, "O_DIRECT: registered, aligned buffers with depth ops in flight")
            }
            (Backend::Syscall, true) => (Mode::Buffered, "O_DIRECT without io_uring: aligned read/write loop"),
            (Backend::Uring, false) if len <= self.chunk as u64 => {
                (Mode::UringFixed, "small file: open, read, write, close and rename all in flight on the ring")
            }
            (_, false) if reflink => {
                (Mode::CopyFileRange, "the destination filesystem clones or copies server-side through copy_file_range")
            }
            (_, false) => (
                Mode::Splice,
                "splice through a 256 KiB pooled pipe: one in-kernel copy, fewer round trips than \
                 copy_file_range's internal pipe; ferry-bench measured it fastest for big files here",
            ),
        }
    }

    /// Starts copying `src` to `dst`. Argument errors (missing source, directory, bad range,
    /// forced mode the backend cannot run) come back at once; I/O errors through the handle.
    pub fn copy(&self, src: Source, dst: Sink, opts: Options) -> Result<Transfer> {
        self.start(src, dst, opts, None)
    }

    /// A file -> file copy for `copy_tree`, reporting to `on_finish`.
    pub(crate) fn copy_file(
        &self,
        src: &Path,
        dst: &Path,
        opts: Options,
        on_finish: Option<Sender<u64>>,
    ) -> Result<Transfer> {
        self.start(Source::file(src), Sink::file(dst), opts, on_finish)
    }

    fn start(&self, src: Source, dst: Sink, mut opts: Options, on_finish: Option<Sender<u64>>) -> Result<Transfer> {
        use std::os::unix::fs::MetadataExt;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The source: its endpoint, name, slice and (for files) metadata.
        let (src_ep, src_name, start, len, src_meta) = match src {
            Source::FileRange(p, off, l) => {
                opts.range = Some((off, l));
                self.file_source(p, &opts)?
            }
            Source::File(p) => self.file_source(p, &opts)?,
            Source::Socket { fd, len } => {
                let name = PathBuf::from(socket_name(&fd));
                prepare_socket(&fd, opts.socket_buffer).map_err(|e| Error::io("configure socket", Some(&name), e))?;
                if opts.range.is_some() {
                    return Err(Error::invalid("a range applies to a file source, not a socket"));
                }
                (Endpoint::Socket(Arc::new(fd)), name, 0, len, None)
            }
        };
        let src_socket = src_meta.is_none();
        if opts.direct && src_socket {
            return Err(Error::invalid("--direct applies to file -> file copies"));
        }
        // The destination.
        let (dst_ep, dst_name, write_path) = match dst {
            Sink::File(p) => {
                // A tree copy (on_finish set) checked its roots once; skip the per-file stat.
                let existing = if on_finish.is_some() { None } else { std::fs::metadata(&p).ok() };
                if let Some(dm) = existing {
                    if dm.is_dir() {
                        return Err(Error::invalid(
                            "is a directory; name the destination file or copy into the directory",
                        )
                        .with_path(&p));
                    }
                    if let Some(m) = &src_meta {
                        if dm.dev() == m.dev() && dm.ino() == m.ino() {
                            return Err(Error::invalid(format!(
                                "{} and {} are the same file",
                                src_name.display(),
                                p.display()
                            )));
                        }
                    }
                }
                let wp = if opts.in_place { p.clone() } else { transfer::temp_path(&p, id) };
                (Endpoint::Path(p.clone()), p, wp)
            }
            Sink::Socket(fd) => {
                let name = PathBuf::from(socket_name(&fd));
                prepare_socket(&fd, opts.socket_buffer).map_err(|e| Error::io("configure socket", Some(&name), e))?;
                if opts.direct {
                    return Err(Error::invalid("--direct applies to file -> file copies"));
                }
                (Endpoint::Socket(Arc::new(fd)), name.clone(), name)
            }
        };
        let dst_socket = matches!(dst_ep, Endpoint::Socket(_));
        if let Some(h) = &opts.header {
            if !dst_socket {
                return Err(Error::invalid("a header applies to a socket sink"));
            }
            if h.len() > self.chunk {
                return Err(Error::invalid(format!(
                    "header of {} bytes is longer than one chunk ({} bytes); raise the engine chunk",
                    h.len(),
                    self.chunk
                )));
            }
        }
        let (mode, reason) = self.resolve_mode(&opts, src_socket, dst_socket, len.unwrap_or(u64::MAX), &dst_name)?;
        let mut chunk = opts.chunk.unwrap_or(self.chunk).clamp(1, self.chunk);
        if opts.direct {
            chunk = chunk.next_multiple_of(transfer::job::DIRECT_ALIGN).min(self.chunk);
        }
        let depth = opts.depth.unwrap_or(self.depth).clamp(1, self.buffers_per_worker);
        let shared = Shared::new(id, len.unwrap_or(0));
        let perm = opts.create_mode.or(src_meta.as_ref().map(|m| m.mode() & 0o7777)).unwrap_or(0o644);
        let req = Request {
            shared: shared.clone(),
            src: src_ep,
            dst: dst_ep,
            src_name,
            dst_name,
            write_path,
            start,
            len,
            src_sparse: src_meta.as_ref().is_some_and(|m| m.blocks() * 512 < m.len()),
            perm,
            mode,
            mode_reason: reason,
            backend: self.backend,
            chunk,
            depth,
            opts,
        };
        *shared.on_finish.lock().unwrap_or_else(|p| p.into_inner()) = on_finish;
        let mb = self.pick();
        *shared.notify.lock().unwrap_or_else(|p| p.into_inner()) = Some(mb.clone() as Arc<dyn Notify>);
        mb.active.fetch_add(1, Ordering::Relaxed);
        if !mb.send(Msg::Copy(Box::new(req))) {
            return Err(Error::new(ErrorKind::Cancelled, "copy").with_detail("engine is shut down"));
        }
        Ok(Transfer { shared })
    }

    /// Validates a file source and its range: (endpoint, name, start, len, metadata).
    #[allow(clippy::type_complexity)]
    fn file_source(
        &self,
        src: PathBuf,
        opts: &Options,
    ) -> Result<(Endpoint, PathBuf, u64, Option<u64>, Option<std::fs::Metadata>)> {
        let meta = std::fs::metadata(&src).map_err(|e| Error::io("open", Some(&src), e))?;
        if meta.is_dir() {
            return Err(Error::invalid("is a directory; copy directories with -r (Engine::copy_tree)").with_path(&src));
        }
        if !meta.is_file() {
            return Err(Error::invalid("not a regular file").with_path(&src));
        }
        let size = meta.len();
        let (start, len) = match opts.range {
            None => (0, size),
            Some((off, _)) if off > size => {
                return Err(Error::invalid(format!("range offset {off} is past the end of the source ({size} bytes)"))
                    .with_path(&src))
            }
            Some((off, Some(l))) if off + l > size => {
                return Err(Error::invalid(format!(
                    "range {off}+{l} runs past the end of the source ({size} bytes); shorten the length"
                ))
                .with_path(&src))
            }
            Some((off, l)) => (off, l.unwrap_or(size - off)),
        };
        if opts.direct && start % transfer::job::DIRECT_ALIGN as u64 != 0 {
            return Err(Error::invalid(format!(
                "--direct needs a range offset aligned to {} bytes, got {start}",
                transfer::job::DIRECT_ALIGN
            )));
        }
        Ok((Endpoint::Path(src.clone()), src, start, Some(len), Some(meta)))
    }

    fn resolve_mode(
        &self,
        opts: &Options,
        src_socket: bool,
        dst_socket: bool,
        len: u64,
        dst: &Path,
    ) -> Result<(Mode, String)> {
        let pair = match (src_socket, dst_socket) {
            (false, false) => "file -> file",
            (false, true) => "file -> socket",
            (true, false) => "socket -> file",
            (true, true) => "socket -> socket",
        };
        match opts.mode {
            Mode::Auto => {
                let (m, r) = if !src_socket && !dst_socket {
                    // statfs only where the answer can change the choice (big, buffered copies).
                    let reflink = len > self.chunk as u64 && !opts.direct && {
                        let parent = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                        sys::reflink_capable(parent)
                    };
                    self.auto_mode(len, opts.direct, reflink)
                } else {
                    self.auto_net_mode(src_socket, dst_socket)
                };
                Ok((m, format!("auto: {r}")))
            }
            m if !m.supports(src_socket, dst_socket) => {
                let ok: Vec<_> = Mode::ALL
                    .iter()
                    .filter(|x| {
                        x.supports(src_socket, dst_socket) && (self.backend == Backend::Uring || !x.needs_uring())
                    })
                    .map(|x| x.as_str())
                    .collect();
                Err(Error::invalid(format!("mode {m} cannot move {pair}; use one of {}", ok.join(", "))))
            }
            m if m.needs_uring() && self.backend != Backend::Uring => {
                Err(Error::new(ErrorKind::BackendUnavailable, "copy").with_detail(format!(
                    "mode {m} needs io_uring but the engine runs the {} backend ({}); choose a syscall mode \
                     (copy-file-range, sendfile, splice, buffered)",
                    self.backend, self.reason
                )))
            }
            Mode::UringSendZc if !backend::probe_report().op_supported("SEND_ZC") => {
                Err(Error::new(ErrorKind::BackendUnavailable, "copy").with_detail(
                    "mode uring-sendzc needs IORING_OP_SEND_ZC (Linux 6.0+), which this kernel lacks; use uring-fixed",
                ))
            }
            m if opts.direct && !matches!(m, Mode::UringFixed | Mode::Buffered) => {
                Err(Error::invalid(format!("--direct works with modes uring-fixed and buffered, not {m}")))
            }
            m => Ok((m, "requested".to_string())),
        }
    }

    /// Which mode `Mode::Auto` picks when a socket is involved, and why.
    pub fn auto_net_mode(&self, src_socket: bool, dst_socket: bool) -> (Mode, &'static str) {
        match (self.backend, src_socket, dst_socket) {
            (Backend::Uring, false, true) => (
                Mode::UringFixed,
                "READ_FIXED then SEND from the registered slab: ferry-bench net-send measured it faster and \
                 cheaper in CPU than splicing through a pipe (1 and 16 streams)",
            ),
            (Backend::Syscall, false, true) => (Mode::Sendfile, "sendfile: the kernel's own file -> socket path"),
            (Backend::Uring, _, _) => {
                (Mode::UringSplice, "socket -> pipe -> sink in the ring: no user copy, cancellable")
            }
            (Backend::Syscall, _, _) => (Mode::Splice, "splice through a pooled pipe: no user copy"),
        }
    }

    /// The least busy worker.
    fn pick(&self) -> Arc<Mailbox> {
        let start = self.next_id.load(Ordering::Relaxed) as usize;
        let n = self.mailboxes.len();
        (0..n)
            .map(|k| &self.mailboxes[(start + k) % n])
            .min_by_key(|m| m.active.load(Ordering::Relaxed))
            .expect("at least one worker")
            .clone()
    }

    /// Copies `src` to `dst` and waits.
    pub fn copy_wait(
        &self,
        src: impl Into<PathBuf>,
        dst: impl Into<PathBuf>,
        opts: Options,
    ) -> Result<transfer::Report> {
        self.copy(Source::file(src), Sink::file(dst), opts)?.wait()
    }

    /// Cancels everything in flight, waits for every op to complete, and stops the workers.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for mb in &self.mailboxes {
            mb.send(Msg::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// "tcp 127.0.0.1:5000" (the peer), or "socket fd 7" when it has no address.
fn socket_name(fd: &OwnedFd) -> String {
    let s = socket2::SockRef::from(fd);
    match s.peer_addr().ok().and_then(|a| a.as_socket()) {
        Some(a) => format!("tcp {a}"),
        None => format!("socket fd {}", std::os::fd::AsRawFd::as_raw_fd(fd)),
    }
}

/// Sockets are used in blocking mode with a short SO_SNDTIMEO/SO_RCVTIMEO. A syscall-mode op
/// (send, recv, sendfile, splice) that would block then returns EAGAIN after 50 ms instead of
/// holding its worker, and every other transfer on it, hostage to a slow peer; the job retries
/// after checking cancel, deadline and idle timeout. Ring ops wait in the kernel (the timeout
/// only shortens io-wq's blocking attempts, which are retried the same way) and ASYNC_CANCEL
/// ends them. This changes the options of the caller's socket, duplicates included.
fn prepare_socket(fd: &OwnedFd, buffer: Option<usize>) -> std::io::Result<()> {
    let s = socket2::SockRef::from(fd);
    s.set_nonblocking(false)?;
    if let Some(b) = buffer {
        s.set_send_buffer_size(b)?;
        s.set_recv_buffer_size(b)?;
    }
    let t = Some(std::time::Duration::from_millis(50));
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}
