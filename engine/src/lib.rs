//! ferry moves bytes between files (and, later, sockets) on Linux as fast as the kernel allows.
//!
//! An [`Engine`] runs one pinned worker per CPU, each with its own io_uring ring, registered
//! buffer slab and pipe pool. [`Engine::copy`] starts a [`Transfer`]; its [`Report`] names the
//! backend and [`Mode`] that actually ran. When io_uring is missing or denied (containers,
//! `kernel.io_uring_disabled`), the engine falls back to copy_file_range, splice and read/write,
//! and says so.
//!
//! ```no_run
//! use ferry::{Engine, Options, Sink, Source};
//! let engine = Engine::new()?;
//! let report = engine.copy(Source::file("big.img"), Sink::file("copy.img"), Options::default())?.wait()?;
//! println!("{} bytes via {} / {}", report.bytes, report.backend, report.mode);
//! # Ok::<(), ferry::Error>(())
//! ```
//!
//! Layers, bottom to top: `sys` (raw calls), `ring` (the only SQ/CQ code), `buffers` (the slab),
//! `backend` (the contract, io_uring and syscall executors), `transfer` (the state machines),
//! `runtime` (workers), `metrics`.

mod backend;
mod buffers;
mod error;
mod metrics;
mod ring;
mod runtime;
mod sys;
mod transfer;

pub use backend::{probe_report, Backend, BackendChoice, Probed};
pub use error::{Error, ErrorKind, Result};
pub use metrics::WorkerSnapshot;
pub use ring::{ProbeReport, SetupReport};
pub use runtime::{Engine, EngineBuilder, EngineInfo};
pub use transfer::{
    plan_chunks, Latency, Mode, Options, Progress, RateLimit, Report, Sink, Source, Transfer, TreeOptions,
    TreeProgress, TreeReport,
};

/// Small system facts for diagnostics (`ferry doctor`) and the benchmark.
pub mod system {
    pub use crate::sys::{drop_cache, kernel_release, memlock_limit, pipe_max_size};
}
