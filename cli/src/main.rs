//! `ferry`: copy files with the ferry engine. Arguments are parsed by clap, validated, and turned
//! into engine objects in one place (`Cp::plan`); everything after that is the engine's job.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ferry::{BackendChoice, Engine, ErrorKind, Mode, Options, RateLimit, Report, Sink, Source, TreeOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

mod doctor;
mod units;

#[derive(Parser)]
#[command(name = "ferry", version, about = "Move bytes between files as fast as the kernel allows (io_uring)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Copy files (or trees with -r).
    Cp(Cp),
    /// Send a file to HOST:PORT over TCP (interoperates with socat, nc).
    Send(Net),
    /// Listen on PORT or HOST:PORT, accept one connection and write what arrives to FILE.
    Recv(Net),
    /// Report what this kernel and machine offer ferry.
    Doctor {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct EngineArgs {
    /// Backend: auto, uring or syscall (FERRY_BACKEND also works).
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Bytes per op, e.g. 256KiB, 1MiB.
    #[arg(long)]
    chunk: Option<String>,
    /// Ops in flight per transfer.
    #[arg(long)]
    depth: Option<usize>,
}

#[derive(Args)]
struct Cp {
    /// Source file(s) then the destination (a file, or a directory for several sources).
    #[arg(required = true, num_args = 2..)]
    paths: Vec<PathBuf>,
    /// auto, uring-fixed, uring-splice, copy-file-range, splice, buffered.
    #[arg(long, default_value = "auto")]
    mode: String,
    #[command(flatten)]
    engine: EngineArgs,
    /// Bypass the page cache (O_DIRECT).
    #[arg(long)]
    direct: bool,
    /// Bandwidth cap shared by all files, e.g. 200MiB/s.
    #[arg(long)]
    rate_limit: Option<String>,
    /// fsync each destination before it is renamed into place.
    #[arg(long)]
    fsync: bool,
    /// Reserve destination blocks with fallocate first.
    #[arg(long)]
    prealloc: bool,
    /// Write into the destination directly (no temp file + rename).
    #[arg(long)]
    in_place: bool,
    /// Copy only OFF:LEN of the source (LEN may be empty for "to the end"; sizes like 4KiB).
    #[arg(long)]
    range: Option<String>,
    /// Copy directories recursively.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Preserve mode and times.
    #[arg(short = 'p', long)]
    preserve: bool,
    /// Files in flight at once for -r.
    #[arg(long, default_value_t = 256)]
    files_in_flight: usize,
    /// Print the report(s) as JSON.
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
}

#[derive(Args)]
struct Net {
    /// send: FILE HOST:PORT; recv: PORT (or HOST:PORT) FILE.
    #[arg(num_args = 2, required = true)]
    args: Vec<String>,
    /// auto, uring-splice, uring-sendzc, uring-fixed, sendfile, splice, buffered.
    #[arg(long, default_value = "auto")]
    mode: String,
    #[command(flatten)]
    engine: EngineArgs,
    /// Bandwidth cap, e.g. 200MiB/s.
    #[arg(long)]
    rate_limit: Option<String>,
    /// Give up after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Give up when nothing moved for this many seconds.
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    let r = match cli.cmd {
        Cmd::Cp(cp) => cp.run(&interrupted),
        Cmd::Send(n) => n.run(true, &interrupted),
        Cmd::Recv(n) => n.run(false, &interrupted),
        Cmd::Doctor { json } => doctor::run(json),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            if interrupted.load(Ordering::Relaxed) {
                eprintln!("ferry: interrupted; partial destinations removed");
                return ExitCode::from(130);
            }
            eprintln!("ferry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// One file to copy, or one tree.
enum Job {
    File(PathBuf, PathBuf),
    Tree(PathBuf, PathBuf),
}

impl EngineArgs {
    fn build(&self) -> Result<Engine> {
        let mut b = Engine::builder().backend(self.backend.parse::<BackendChoice>()?);
        if let Some(n) = self.workers {
            b = b.workers(n);
        }
        if let Some(c) = &self.chunk {
            b = b.chunk(units::parse_size(c).context("--chunk")? as usize);
        }
        if let Some(d) = self.depth {
            b = b.depth(d);
        }
        Ok(b.build()?)
    }
}

impl Cp {
    /// Validates the arguments and turns them into jobs and options.
    fn plan(&self) -> Result<(Vec<Job>, Options)> {
        let mode: Mode = self.mode.parse()?;
        let (srcs, dst) = self.paths.split_at(self.paths.len() - 1);
        let dst = &dst[0];
        let dst_is_dir = dst.is_dir();
        if srcs.len() > 1 && !dst_is_dir {
            bail!("target {} is not a directory (several sources need an existing directory)", dst.display());
        }
        let mut jobs = Vec::new();
        for s in srcs {
            let meta = std::fs::metadata(s).with_context(|| format!("cannot stat {}", s.display()))?;
            let target = if dst_is_dir {
                let name = s.file_name().with_context(|| format!("{} has no file name", s.display()))?;
                dst.join(name)
            } else {
                dst.clone()
            };
            if meta.is_dir() {
                if !self.recursive {
                    bail!("{} is a directory (use -r to copy it)", s.display());
                }
                jobs.push(Job::Tree(s.clone(), target));
            } else {
                jobs.push(Job::File(s.clone(), target));
            }
        }
        let rate = match &self.rate_limit {
            Some(r) => {
                let bps = units::parse_rate(r).context("--rate-limit")?;
                Some(RateLimit::new(bps, (bps / 10).max(256 * 1024)))
            }
            None => None,
        };
        let range = match &self.range {
            Some(r) => Some(units::parse_range(r).context("--range")?),
            None => None,
        };
        if range.is_some() && (jobs.len() != 1 || !matches!(jobs[0], Job::File(..))) {
            bail!("--range applies to a single source file");
        }
        let opts = Options {
            mode,
            chunk: None,
            depth: None,
            direct: self.direct,
            prealloc: self.prealloc,
            fsync: self.fsync,
            range,
            in_place: self.in_place,
            sparse: true,
            rate,
            deadline: self.timeout.map(Duration::from_secs_f64),
            idle_timeout: None,
            header: None,
            socket_buffer: None,
            create_mode: None,
        };
        Ok((jobs, opts))
    }

    fn run(&self, interrupted: &Arc<AtomicBool>) -> Result<ExitCode> {
        let (jobs, opts) = self.plan()?;
        let engine = self.engine.build()?;
        let show = !self.json && std::io::stderr().is_terminal();
        let mut reports = Vec::new();
        for job in jobs {
            match job {
                Job::File(s, d) => {
                    let t = engine.copy(Source::file(&s), Sink::file(&d), opts.clone())?;
                    match wait_with_progress(t, interrupted, show, &s) {
                        Ok(rep) => reports.push(report_json(&rep)),
                        Err(e) if e.kind() == ErrorKind::Cancelled && interrupted.load(Ordering::Relaxed) => {
                            eprintln!("ferry: interrupted; {} not written", d.display());
                            return Ok(ExitCode::from(130));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Job::Tree(s, d) => {
                    let topts = TreeOptions {
                        file: opts.clone(),
                        preserve: self.preserve,
                        max_in_flight: self.files_in_flight,
                        cancel: Some(interrupted.clone()),
                    };
                    let bar = show.then(|| {
                        let b = ProgressBar::new_spinner();
                        b.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
                        b
                    });
                    let r = engine.copy_tree(&s, &d, &topts, |p| {
                        if let Some(b) = &bar {
                            b.set_message(format!(
                                "{} files, {} dirs, {}",
                                p.files,
                                p.dirs,
                                indicatif::HumanBytes(p.bytes)
                            ));
                            b.tick();
                        }
                    });
                    if let Some(b) = bar {
                        b.finish_and_clear();
                    }
                    match r {
                        Ok(rep) => reports.push(json!({
                            "source": s, "destination": d, "backend": rep.backend.as_str(),
                            "files": rep.totals.files, "dirs": rep.totals.dirs, "symlinks": rep.totals.symlinks,
                            "bytes": rep.totals.bytes, "elapsed_ms": rep.elapsed.as_secs_f64() * 1e3,
                            "modes": rep.modes.iter().map(|(m, n)| (m.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                        })),
                        Err(e) if e.kind() == ErrorKind::Cancelled && interrupted.load(Ordering::Relaxed) => {
                            eprintln!("ferry: interrupted; unfinished files of {} removed", d.display());
                            return Ok(ExitCode::from(130));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        warn_cq_overflow(&engine);
        if self.json {
            let out = if reports.len() == 1 { reports.remove(0) } else { json!(reports) };
            let mut so = std::io::stdout().lock();
            writeln!(so, "{}", serde_json::to_string_pretty(&out)?)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl Net {
    fn run(&self, sending: bool, interrupted: &Arc<AtomicBool>) -> Result<ExitCode> {
        let mode: Mode = self.mode.parse()?;
        let rate = match &self.rate_limit {
            Some(r) => {
                let bps = units::parse_rate(r).context("--rate-limit")?;
                Some(RateLimit::new(bps, (bps / 10).max(256 * 1024)))
            }
            None => None,
        };
        let opts = Options {
            mode,
            rate,
            deadline: self.timeout.map(Duration::from_secs_f64),
            idle_timeout: self.idle_timeout.map(Duration::from_secs_f64),
            ..Options::default()
        };
        let engine = self.engine.build()?;
        let (t, label) = if sending {
            let (file, addr) = (PathBuf::from(&self.args[0]), &self.args[1]);
            if !file.is_file() {
                std::fs::metadata(&file).with_context(|| format!("cannot send {}", file.display()))?;
                bail!("{} is not a regular file", file.display());
            }
            let sock = std::net::TcpStream::connect(addr.as_str())
                .with_context(|| format!("cannot connect to {addr} (is the receiver listening?)"))?;
            (engine.copy(Source::file(&file), Sink::socket(sock), opts)?, file)
        } else {
            let (addr, file) = (&self.args[0], PathBuf::from(&self.args[1]));
            let addr = if addr.contains(':') { addr.clone() } else { format!("0.0.0.0:{addr}") };
            let listener = std::net::TcpListener::bind(&addr).with_context(|| format!("cannot listen on {addr}"))?;
            eprintln!("ferry: listening on {}", listener.local_addr()?);
            listener.set_nonblocking(true)?;
            let sock = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if interrupted.load(Ordering::Relaxed) {
                            eprintln!("ferry: interrupted before a sender connected");
                            return Ok(ExitCode::from(130));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(e).context("accept"),
                }
            };
            sock.set_nonblocking(false)?;
            (engine.copy(Source::socket(sock), Sink::file(&file), opts)?, file)
        };
        let show = !self.json && std::io::stderr().is_terminal();
        let r = wait_with_progress(t, interrupted, show, &label);
        warn_cq_overflow(&engine);
        match r {
            Ok(rep) => {
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&report_json(&rep))?);
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) if e.kind() == ErrorKind::Cancelled && interrupted.load(Ordering::Relaxed) => {
                eprintln!("ferry: interrupted; nothing left behind");
                Ok(ExitCode::from(130))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Waits for `t`, drawing a progress bar when `show`, cancelling it on SIGINT/SIGTERM.
fn wait_with_progress(
    mut t: ferry::Transfer,
    interrupted: &AtomicBool,
    show: bool,
    label: &Path,
) -> ferry::Result<Report> {
    let bar = show.then(|| bytes_bar(t.progress().total, label));
    let r = loop {
        match t.wait_timeout(Duration::from_millis(100)) {
            Ok(r) => break r,
            Err(back) => {
                t = back;
                if interrupted.load(Ordering::Relaxed) {
                    t.cancel();
                }
                if let Some(b) = &bar {
                    let p = t.progress();
                    b.set_length(p.total.max(p.done));
                    b.set_position(p.done);
                }
            }
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r
}

/// The engine keeps in-flight ops within the CQ, so an overflow means a kernel or engine bug
/// worth reporting; say so instead of letting a metric nobody reads hold it.
fn warn_cq_overflow(engine: &Engine) {
    let n: u64 = engine.metrics().iter().map(|w| w.cq_overflow).sum();
    if n > 0 {
        eprintln!(
            "ferry: warning: {n} io_uring completions overflowed the CQ (the kernel kept them; please report this)"
        );
    }
}

fn bytes_bar(total: u64, src: &Path) -> ProgressBar {
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_message(src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    b
}

fn report_json(r: &Report) -> serde_json::Value {
    json!({
        "source": r.source,
        "destination": r.destination,
        "backend": r.backend.as_str(),
        "mode": r.mode.as_str(),
        "mode_reason": r.mode_reason,
        "bytes": r.bytes,
        "elapsed_ms": r.elapsed.as_secs_f64() * 1e3,
        "bytes_per_sec": r.bytes_per_sec(),
        "ops": r.ops,
        "worker": r.worker,
        "latency_ns": {"count": r.latency.count, "p50": r.latency.p50_ns, "p99": r.latency.p99_ns, "p99.9": r.latency.p999_ns, "max": r.latency.max_ns},
    })
}
