//! One error type for the public API. It keeps the operation, the path and the backend with the
//! OS error, so a message reads "write /mnt/full/out: No space left on device (os error 28)
//! [io_uring, uring-fixed]" instead of a bare errno.

use std::io;
use std::path::{Path, PathBuf};

/// What kind of failure this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An I/O call failed; `source()` is the OS error.
    Io,
    /// The transfer was cancelled (by `cancel()` or engine shutdown).
    Cancelled,
    /// The transfer's deadline passed.
    DeadlineExceeded,
    /// The source changed under the copy (it shrank).
    SourceChanged,
    /// Bad arguments: the message names the thing and the fix.
    InvalidInput,
    /// A forced backend or mode cannot run here.
    BackendUnavailable,
    /// The peer went away (reset, closed early).
    Peer,
}

/// A ferry error with its context.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    op: &'static str,
    path: Option<PathBuf>,
    context: Option<String>,
    detail: Option<String>,
    source: Option<io::Error>,
}

impl Error {
    pub fn new(kind: ErrorKind, op: &'static str) -> Error {
        Error { kind, op, path: None, context: None, detail: None, source: None }
    }
    pub fn io(op: &'static str, path: Option<&Path>, e: io::Error) -> Error {
        Error {
            kind: ErrorKind::Io,
            op,
            path: path.map(Path::to_path_buf),
            context: None,
            detail: None,
            source: Some(e),
        }
    }
    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, "invalid input").with_detail(msg)
    }
    pub fn with_kind(mut self, k: ErrorKind) -> Error {
        self.kind = k;
        self
    }
    pub fn with_path(mut self, p: &Path) -> Error {
        self.path = Some(p.to_path_buf());
        self
    }
    pub fn with_detail(mut self, d: impl Into<String>) -> Error {
        self.detail = Some(d.into());
        self
    }
    /// Adds "[backend, mode]" style context.
    pub fn with_context(mut self, c: impl Into<String>) -> Error {
        self.context = Some(c.into());
        self
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn op(&self) -> &'static str {
        self.op
    }
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ErrorKind::InvalidInput => {}
            ErrorKind::Cancelled => f.write_str("cancelled: ")?,
            ErrorKind::DeadlineExceeded => f.write_str("deadline exceeded: ")?,
            _ => {}
        }
        if self.kind != ErrorKind::InvalidInput {
            f.write_str(self.op)?;
        }
        if let Some(p) = &self.path {
            write!(f, " {}", p.display())?;
        }
        let mut sep = if self.kind == ErrorKind::InvalidInput && self.path.is_none() { "" } else { ": " };
        if let Some(d) = &self.detail {
            write!(f, "{sep}{d}")?;
            sep = ": ";
        }
        if let Some(s) = &self.source {
            write!(f, "{sep}{s}")?;
        }
        if let Some(c) = &self.context {
            write!(f, " [{c}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind {
            ErrorKind::Io => e.source.as_ref().map_or(io::ErrorKind::Other, io::Error::kind),
            ErrorKind::Cancelled => io::ErrorKind::Interrupted,
            ErrorKind::DeadlineExceeded => io::ErrorKind::TimedOut,
            ErrorKind::SourceChanged => io::ErrorKind::UnexpectedEof,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::BackendUnavailable => io::ErrorKind::Unsupported,
            ErrorKind::Peer => io::ErrorKind::ConnectionReset,
        };
        io::Error::new(kind, e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::io("io", None, e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
