//! Choosing the backend: probe once per process (cached in a `OnceLock`), honour an override
//! (builder first, then `FERRY_BACKEND`), and say why the choice was made.

use std::sync::OnceLock;

use super::Backend;
use crate::error::{Error, ErrorKind};
use crate::ring::{self, ProbeReport};

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring when it works, else the syscall fallback. `FERRY_BACKEND` may override it.
    #[default]
    Auto,
    /// io_uring or an error.
    Uring,
    /// The syscall fallback.
    Syscall,
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(BackendChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(BackendChoice::Uring),
            "syscall" | "fallback" => Ok(BackendChoice::Syscall),
            other => Err(Error::invalid(format!("unknown backend {other:?}: use one of auto, uring, syscall"))),
        }
    }
}

/// What this process found out about the kernel.
#[derive(Debug, Clone)]
pub struct Probed {
    pub kernel: String,
    /// The probe, or why io_uring cannot be used here.
    pub uring: Result<ProbeReport, String>,
}

impl Probed {
    pub fn uring_usable(&self) -> bool {
        matches!(&self.uring, Ok(p) if p.missing_required.is_empty())
    }

    /// Whether the probe found the named opcode (see `ring::OPCODES`).
    pub fn op_supported(&self, name: &str) -> bool {
        matches!(&self.uring, Ok(p) if p.ops.iter().any(|(n, ok)| *n == name && *ok))
    }
}

/// Probes io_uring once per process.
pub fn probe_report() -> &'static Probed {
    static PROBED: OnceLock<Probed> = OnceLock::new();
    PROBED.get_or_init(|| {
        let uring = match ring::probe() {
            Ok(p) if p.missing_required.is_empty() => Ok(p),
            Ok(p) => Err(format!("kernel lacks io_uring ops {}", p.missing_required.join(", "))),
            Err(e) => Err(explain_setup_error(&e)),
        };
        Probed { kernel: crate::sys::kernel_release(), uring }
    })
}

fn explain_setup_error(e: &std::io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().map(|s| s.trim().to_string());
    match e.raw_os_error() {
        Some(libc::EPERM) if matches!(disabled.as_deref(), Some("1" | "2")) => format!(
            "io_uring_setup: {e}: kernel.io_uring_disabled={} (set it to 0 to allow io_uring)",
            disabled.unwrap_or_default()
        ),
        Some(libc::EPERM) => {
            format!("io_uring_setup: {e}: blocked by a seccomp profile or LSM (as under Docker's default profile)")
        }
        Some(libc::ENOSYS) => format!("io_uring_setup: {e}: kernel built without io_uring"),
        Some(libc::ENOMEM) => format!("io_uring_setup: {e}: memlock limit too low for the ring; raise `ulimit -l`"),
        _ => format!("io_uring_setup: {e}"),
    }
}

/// Picks the backend for an engine. A forced choice that cannot be honoured is an error.
pub fn select(choice: BackendChoice) -> Result<(Backend, String), Error> {
    let (choice, why) = match (choice, std::env::var("FERRY_BACKEND")) {
        (BackendChoice::Auto, Ok(v)) if !v.is_empty() => (v.parse::<BackendChoice>()?, "FERRY_BACKEND"),
        (BackendChoice::Auto, _) => (BackendChoice::Auto, "auto"),
        (c, _) => (c, "builder"),
    };
    let probed = probe_report();
    match choice {
        BackendChoice::Syscall => Ok((Backend::Syscall, format!("syscall forced by {why}"))),
        BackendChoice::Uring => match &probed.uring {
            Ok(_) => Ok((Backend::Uring, format!("io_uring forced by {why}"))),
            Err(reason) => Err(Error::new(ErrorKind::BackendUnavailable, "select backend")
                .with_detail(format!("io_uring was forced by {why} but cannot run: {reason}"))),
        },
        BackendChoice::Auto => match &probed.uring {
            Ok(_) => Ok((Backend::Uring, "io_uring available, all required ops probed".into())),
            Err(reason) => {
                Ok((Backend::Syscall, format!("io_uring unavailable ({reason}); using the syscall fallback")))
            }
        },
    }
}
