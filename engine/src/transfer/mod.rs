//! The domain: what to move (`Source`, `Sink`), how (`Mode`, `Options`), the plan (chunks over
//! the data extents of a range), the `Transfer` handle callers hold, and the `Report` they get.
//!
//! The state machine that keeps N ops of a file copy in flight lives in `file.rs`; it runs on a
//! worker and talks to the kernel only through `backend::Io`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};

pub(crate) mod job;
mod latency;
mod plan;
mod rate;
mod tree;

pub use plan::plan_chunks;
pub use rate::RateLimit;
pub use tree::{TreeOptions, TreeProgress, TreeReport};

/// How bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Pick per pair from the probe and the benchmark's findings; the report says which and why.
    #[default]
    Auto,
    /// io_uring READ_FIXED -> WRITE_FIXED through the registered slab, `depth` chunks in flight.
    UringFixed,
    /// io_uring SPLICE through a pooled pipe (file or socket on either side).
    UringSplice,
    /// io_uring READ_FIXED into the registered slab, then SEND_ZC from it (file -> socket). A
    /// buffer is reused only after the kernel's zero-copy notification.
    UringSendZc,
    /// copy_file_range(2) in chunks (in-kernel copy; reflink where the filesystem can).
    CopyFileRange,
    /// sendfile(2) in pieces (file -> socket).
    Sendfile,
    /// splice(2) through a pooled pipe.
    Splice,
    /// pread/pwrite with a user buffer: the baseline.
    Buffered,
}

impl Mode {
    pub const ALL: [Mode; 8] = [
        Mode::Auto,
        Mode::UringFixed,
        Mode::UringSplice,
        Mode::UringSendZc,
        Mode::CopyFileRange,
        Mode::Sendfile,
        Mode::Splice,
        Mode::Buffered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::UringFixed => "uring-fixed",
            Mode::UringSplice => "uring-splice",
            Mode::UringSendZc => "uring-sendzc",
            Mode::Sendfile => "sendfile",
            Mode::CopyFileRange => "copy-file-range",
            Mode::Splice => "splice",
            Mode::Buffered => "buffered",
        }
    }

    /// Whether the mode needs the io_uring backend.
    pub fn needs_uring(self) -> bool {
        matches!(self, Mode::UringFixed | Mode::UringSplice | Mode::UringSendZc)
    }

    /// Whether the mode can move bytes from `src` to `dst` (`true` = a socket).
    pub fn supports(self, src_socket: bool, dst_socket: bool) -> bool {
        match self {
            Mode::Auto | Mode::UringFixed | Mode::UringSplice | Mode::Splice | Mode::Buffered => true,
            Mode::CopyFileRange => !src_socket && !dst_socket,
            Mode::UringSendZc | Mode::Sendfile => !src_socket && dst_socket,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            let names: Vec<_> = Mode::ALL.iter().map(|m| m.as_str()).collect();
            Error::invalid(format!("unknown mode {s:?}: use one of {}", names.join(", ")))
        })
    }
}

/// Where bytes come from.
#[derive(Debug)]
pub enum Source {
    /// A regular file (use `Options::range` or `Source::file_range` for a slice of it).
    File(PathBuf),
    /// A slice of a regular file: `len` bytes from `offset` (`None`: to the end).
    FileRange(PathBuf, u64, Option<u64>),
    /// A connected stream socket (TCP, Unix). `len`: exactly this many bytes (fewer is an
    /// error), or `None` to read until the peer closes. The engine owns the descriptor and
    /// closes it when done; keep a `try_clone()` if you need the connection afterwards.
    Socket { fd: OwnedFd, len: Option<u64> },
}

impl Source {
    pub fn file(p: impl Into<PathBuf>) -> Source {
        Source::File(p.into())
    }
    pub fn file_range(p: impl Into<PathBuf>, offset: u64, len: Option<u64>) -> Source {
        Source::FileRange(p.into(), offset, len)
    }
    /// A socket read until EOF.
    pub fn socket(fd: impl Into<OwnedFd>) -> Source {
        Source::Socket { fd: fd.into(), len: None }
    }
    /// A socket from which exactly `len` bytes are expected.
    pub fn socket_exact(fd: impl Into<OwnedFd>, len: u64) -> Source {
        Source::Socket { fd: fd.into(), len: Some(len) }
    }
}

/// Where bytes go.
#[derive(Debug)]
pub enum Sink {
    /// A regular file, created or replaced.
    File(PathBuf),
    /// A connected stream socket. The engine closes its descriptor when done (the peer sees EOF
    /// once no other copy of the descriptor is open).
    Socket(OwnedFd),
}

impl Sink {
    pub fn file(p: impl Into<PathBuf>) -> Sink {
        Sink::File(p.into())
    }
    pub fn socket(fd: impl Into<OwnedFd>) -> Sink {
        Sink::Socket(fd.into())
    }
}

/// Per-transfer options. `Options::default()` is a safe, fast copy: temp file + atomic rename,
/// sparse files kept sparse, no fsync.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Bytes per op; `None` uses the engine's chunk (its buffer size, also the maximum).
    pub chunk: Option<usize>,
    /// Ops in flight per transfer; `None` uses the engine's depth.
    pub depth: Option<usize>,
    /// Open both files with O_DIRECT (bypass the page cache).
    pub direct: bool,
    /// Reserve the destination's blocks with fallocate before writing.
    pub prealloc: bool,
    /// fsync the destination before it is renamed into place.
    pub fsync: bool,
    /// Copy only `len` bytes (or to the end) starting at `offset` of the source.
    pub range: Option<(u64, Option<u64>)>,
    /// Write into the destination directly instead of a temp file renamed on success. An
    /// existing destination is overwritten without truncation first (its blocks are reused), then
    /// cut to length; a failed copy leaves it partly written.
    pub in_place: bool,
    /// Keep holes (SEEK_DATA/SEEK_HOLE) instead of writing zeros.
    pub sparse: bool,
    /// Shared bandwidth limit.
    pub rate: Option<RateLimit>,
    /// Give up (cancel, clean up) after this long.
    pub deadline: Option<Duration>,
    /// Give up when no byte has moved for this long (a peer that stops reading or sending).
    pub idle_timeout: Option<Duration>,
    /// Bytes sent before the body on a socket sink (an HTTP response head, say), with MSG_MORE
    /// so header and first body bytes share a segment. At most one chunk long; not counted in
    /// `Report::bytes`.
    pub header: Option<Vec<u8>>,
    /// SO_SNDBUF / SO_RCVBUF for socket endpoints (the kernel doubles and caps it).
    pub socket_buffer: Option<usize>,
    /// Permission bits for a new destination; `None` copies the source's.
    pub create_mode: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Auto,
            chunk: None,
            depth: None,
            direct: false,
            prealloc: false,
            fsync: false,
            range: None,
            in_place: false,
            sparse: true,
            rate: None,
            deadline: None,
            idle_timeout: None,
            header: None,
            socket_buffer: None,
            create_mode: None,
        }
    }
}

/// Latency percentiles of a transfer's data ops, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// What happened, once a transfer is done.
#[derive(Debug, Clone)]
pub struct Report {
    pub backend: Backend,
    pub mode: Mode,
    /// Why `mode` was used (auto's reasoning, or a fallback down the chain).
    pub mode_reason: String,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Data ops issued (reads, writes, splices, copy_file_range calls).
    pub ops: u64,
    pub latency: Latency,
    pub worker: usize,
    pub source: PathBuf,
    pub destination: PathBuf,
}

impl Report {
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A point-in-time view of a transfer.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

impl Progress {
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Sends a cancel request to the worker that owns a transfer.
pub(crate) trait Notify: Send + Sync {
    fn cancel(&self, id: u64);
}

pub(crate) struct Shared {
    pub id: u64,
    pub done: AtomicU64,
    pub total: AtomicU64,
    pub start: Instant,
    pub cancelled: AtomicBool,
    outcome: Mutex<Outcome>,
    cv: Condvar,
    pub notify: Mutex<Option<Arc<dyn Notify>>>,
    /// Told the transfer's id when it resolves (tree copies wait for "any" through it).
    pub on_finish: Mutex<Option<crossbeam_channel::Sender<u64>>>,
}

#[derive(Default)]
struct Outcome {
    result: Option<Result<Report>>,
    finished: bool,
    waker: Option<Waker>,
}

impl Shared {
    pub fn new(id: u64, total: u64) -> Arc<Shared> {
        Arc::new(Shared {
            id,
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            start: Instant::now(),
            cancelled: AtomicBool::new(false),
            outcome: Mutex::new(Outcome::default()),
            cv: Condvar::new(),
            notify: Mutex::new(None),
            on_finish: Mutex::new(None),
        })
    }

    /// Resolves the handle. Called exactly once, after every op of the transfer completed.
    pub fn finish(&self, r: Result<Report>) {
        let waker = {
            let mut o = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            o.result = Some(r);
            o.finished = true;
            o.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(tx) = self.on_finish.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(self.id);
        }
    }
}

/// A running transfer: watch it, cancel it, wait for it (or `.await` it).
pub struct Transfer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.progress();
        f.debug_struct("Transfer").field("id", &self.id()).field("done", &p.done).field("total", &p.total).finish()
    }
}

impl Transfer {
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    pub fn progress(&self) -> Progress {
        Progress {
            done: self.shared.done.load(Ordering::Relaxed),
            total: self.shared.total.load(Ordering::Relaxed),
            elapsed: self.shared.start.elapsed(),
        }
    }

    /// Asks for cancellation. In-flight ops get IORING_OP_ASYNC_CANCEL; the handle resolves
    /// with `ErrorKind::Cancelled` only once every one of them has completed and the temp file
    /// is gone. Cancelling a finished transfer does nothing.
    pub fn cancel(&self) {
        if !self.shared.cancelled.swap(true, Ordering::SeqCst) {
            let n = self.shared.notify.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(n) = n {
                n.cancel(self.shared.id);
            }
        }
    }

    pub fn is_finished(&self) -> bool {
        self.shared.outcome.lock().unwrap_or_else(|p| p.into_inner()).finished
    }

    /// Blocks until the transfer is done.
    pub fn wait(self) -> Result<Report> {
        let mut o = self.shared.outcome.lock().unwrap_or_else(|p| p.into_inner());
        while !o.finished {
            o = self.shared.cv.wait(o).unwrap_or_else(|p| p.into_inner());
        }
        o.result.take().unwrap_or_else(|| Err(Error::new(ErrorKind::Cancelled, "wait")))
    }

    /// Blocks until done or `timeout` passes; on timeout gives the handle back.
    pub fn wait_timeout(self, timeout: Duration) -> std::result::Result<Result<Report>, Transfer> {
        let deadline = Instant::now() + timeout;
        let mut o = self.shared.outcome.lock().unwrap_or_else(|p| p.into_inner());
        while !o.finished {
            let now = Instant::now();
            if now >= deadline {
                drop(o);
                return Err(self);
            }
            o = self.shared.cv.wait_timeout(o, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(o.result.take().unwrap_or_else(|| Err(Error::new(ErrorKind::Cancelled, "wait"))))
    }
}

impl std::future::Future for Transfer {
    type Output = Result<Report>;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut o = self.shared.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if o.finished {
            return Poll::Ready(o.result.take().unwrap_or_else(|| Err(Error::new(ErrorKind::Cancelled, "poll"))));
        }
        o.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// One side of a transfer, as the worker sees it.
pub(crate) enum Endpoint {
    /// Opened by the job (in the ring on io_uring).
    Path(PathBuf),
    /// Already open; no offsets.
    Socket(Arc<OwnedFd>),
}

/// A request as the worker receives it.
pub(crate) struct Request {
    pub shared: Arc<Shared>,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// For messages and the report: the path, or "tcp 127.0.0.1:5000".
    pub src_name: PathBuf,
    pub dst_name: PathBuf,
    /// Where bytes are written: a temp name beside the destination, or the destination itself.
    pub write_path: PathBuf,
    pub start: u64,
    /// Bytes to move; `None` for a socket read until EOF.
    pub len: Option<u64>,
    pub src_sparse: bool,
    pub perm: u32,
    pub mode: Mode,
    pub mode_reason: String,
    pub backend: Backend,
    pub chunk: usize,
    pub depth: usize,
    pub opts: Options,
}

/// `dir/.name.ferry-<pid>-<id>.tmp`: hidden, unique, same filesystem as the destination so the
/// final rename is atomic.
pub(crate) fn temp_path(dst: &Path, id: u64) -> PathBuf {
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let tmp = format!(".{name}.ferry-{}-{id}.tmp", PID.get_or_init(std::process::id));
    match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(tmp),
        _ => PathBuf::from(tmp),
    }
}
