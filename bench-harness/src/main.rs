//! ferry-bench: whole transfers, side by side in one run, reported as ratios.
//!
//! Method (after fio): one warm-up run per contender that does not count, then N repetitions with
//! contenders interleaved A B C A B C so machine drift hits all alike; min / median / max per
//! contender; ratios to the baseline computed pair by pair inside each repetition, then the
//! median of those ratios. Every destination is hashed and compared with its source before the
//! sample counts; a mismatch stops the run. Raw samples, a summary, plots and the machine's setup
//! go to `results/<date>-<host>/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ferry::{BackendChoice, Engine, Mode};

mod contenders;
mod report;
mod sys;

use contenders::{hash_file, make_file, Contender, Engines, Sample, Task};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ferry-bench",
    version,
    about = "Side-by-side copy throughput: ferry's modes vs buffered loops, cp, dd, fio"
)]
pub struct Args {
    /// Small sizes and 2 repetitions: finishes in about two minutes.
    #[arg(long)]
    quick: bool,
    /// Big-file size, e.g. 1GiB.
    #[arg(long)]
    size: Option<String>,
    /// Repetitions per contender (after one warm-up).
    #[arg(long)]
    reps: Option<usize>,
    /// Number of files in the small-files workload.
    #[arg(long)]
    small_files: Option<usize>,
    /// Workloads to run (comma-separated): hot-new, hot-overwrite, cold, direct, small-files,
    /// concurrency, net-send, net-recv.
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Add the single-thread memcpy row (the physical limit of a page-cache copy).
    #[arg(long)]
    memcpy: bool,
    /// Scratch directory on the filesystem under test.
    #[arg(long, default_value = "/var/tmp/ferry-bench")]
    dir: PathBuf,
    /// Where `<date>-<host>/` result folders go.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Print fio-like JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// One workload: a task maker, its contenders and the baseline for ratios.
struct Workload {
    name: String,
    contenders: Vec<Contender>,
    baseline: Contender,
}

/// Every sample, with where it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: String,
    pub contender: String,
    pub rep: usize,
    pub sample: Sample,
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("gib").or(t.strip_suffix("g")) {
        (n, 1u64 << 30)
    } else if let Some(n) = t.strip_suffix("mib").or(t.strip_suffix("m")) {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("kib").or(t.strip_suffix("k")) {
        (n, 1 << 10)
    } else {
        (t.as_str(), 1)
    };
    let v: f64 = num.trim().parse().with_context(|| format!("--size {s:?}: use e.g. 1GiB, 256MiB"))?;
    Ok((v * mult as f64) as u64)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let size = match &args.size {
        Some(s) => parse_size(s)?,
        None if args.quick => 64 << 20,
        None => 1 << 30,
    };
    let reps = args.reps.unwrap_or(if args.quick { 2 } else { 5 }).max(1);
    let nsmall = args.small_files.unwrap_or(if args.quick { 2000 } else { 20_000 });
    let all = ["hot-new", "hot-overwrite", "cold", "direct", "small-files", "concurrency", "net-send", "net-recv"];
    let wanted: Vec<String> = args.workloads.clone().unwrap_or_else(|| all.iter().map(|s| s.to_string()).collect());
    for w in &wanted {
        if !all.contains(&w.as_str()) {
            bail!("unknown workload {w:?}: choose from {}", all.join(", "));
        }
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let scratch = tempdir_in(&args.dir)?;
    let engines = Engines {
        uring: Engine::builder().backend(BackendChoice::Auto).build()?,
        syscall: Engine::builder().backend(BackendChoice::Syscall).build()?,
    };
    eprintln!(
        "ferry-bench: {} per big file, {reps} reps + 1 warm-up, {} small files, scratch {} ({}), backend {} ({})",
        report::human_bytes(size),
        nsmall,
        scratch.display(),
        report::fs_type(&scratch),
        engines.uring.backend(),
        engines.uring.info().backend_reason
    );

    let src = scratch.join("src.bin");
    make_file(&src, size, 42)?;
    let src_hash = hash_file(&src)?;
    let dst = scratch.join("dst.bin");
    let mut rows: Vec<Row> = Vec::new();
    let mut workloads_run = Vec::new();
    let uring = engines.uring.backend() == ferry::Backend::Uring;
    let net_modes: Vec<Mode> = Mode::ALL.into_iter().filter(|m| uring || !m.needs_uring()).collect();
    let ferry_modes: Vec<Mode> = net_modes.iter().copied().filter(|m| m.supports(false, false)).collect();
    let t_start = Instant::now();

    for wname in &wanted {
        let w = match wname.as_str() {
            "hot-new" | "cold" => {
                let mut c: Vec<Contender> =
                    ferry_modes.iter().map(|&mode| Contender::Ferry { mode, fallback: false }).collect();
                c.push(Contender::Ferry { mode: Mode::Auto, fallback: true });
                c.extend([
                    Contender::StdCopy,
                    Contender::RwLoop(32 << 10),
                    Contender::RwLoop(128 << 10),
                    Contender::RwLoop(1 << 20),
                ]);
                if wname == "hot-new" {
                    c.push(Contender::MmapWrite);
                }
                c.extend([Contender::Cp, Contender::Dd(128 << 10), Contender::Dd(1 << 20)]);
                if args.memcpy && wname == "hot-new" {
                    c.push(Contender::Memcpy);
                }
                Workload { name: wname.clone(), contenders: c, baseline: Contender::RwLoop(128 << 10) }
            }
            "hot-overwrite" => {
                let mut c: Vec<Contender> =
                    ferry_modes.iter().map(|&mode| Contender::Ferry { mode, fallback: false }).collect();
                c.extend([Contender::RwLoop(128 << 10), Contender::RwLoop(1 << 20), Contender::Dd(1 << 20)]);
                if args.memcpy {
                    c.push(Contender::Memcpy);
                }
                Workload { name: wname.clone(), contenders: c, baseline: Contender::RwLoop(128 << 10) }
            }
            "direct" => {
                let mut c = vec![Contender::Ferry { mode: Mode::Buffered, fallback: false }];
                if uring {
                    c.insert(0, Contender::Ferry { mode: Mode::UringFixed, fallback: false });
                }
                let chunk = engines.uring.info().chunk;
                let depth = engines.uring.info().depth;
                c.extend([Contender::RwLoop(chunk), Contender::Dd(1 << 20), Contender::Fio { bs: chunk, qd: depth }]);
                Workload { name: wname.clone(), contenders: c, baseline: Contender::RwLoop(chunk) }
            }
            "small-files" => Workload {
                name: wname.clone(),
                contenders: vec![
                    Contender::FerryTree { in_place: false },
                    Contender::FerryTree { in_place: true },
                    Contender::CpR,
                ],
                baseline: Contender::CpR,
            },
            "net-send" | "net-recv" => {
                let sending = wname == "net-send";
                let mut c: Vec<Contender> = net_modes
                    .iter()
                    .filter(|m| m.supports(!sending, sending))
                    .map(|&mode| Contender::Ferry { mode, fallback: false })
                    .collect();
                c.push(Contender::Ferry { mode: Mode::Auto, fallback: true });
                c.push(Contender::RwLoop(128 << 10));
                if sending {
                    c.extend([
                        Contender::SendfileLoop,
                        Contender::Iperf { zero_copy: true },
                        Contender::Iperf { zero_copy: false },
                    ]);
                }
                Workload { name: wname.clone(), contenders: c, baseline: Contender::RwLoop(128 << 10) }
            }
            "concurrency" => Workload {
                name: wname.clone(),
                contenders: vec![
                    Contender::Ferry { mode: Mode::Auto, fallback: false },
                    Contender::Ferry { mode: if uring { Mode::UringFixed } else { Mode::Buffered }, fallback: false },
                    Contender::RwLoop(128 << 10),
                    Contender::Cp,
                ],
                baseline: Contender::RwLoop(128 << 10),
            },
            _ => unreachable!(),
        };
        let contenders: Vec<Contender> = w.contenders.iter().filter(|c| c.available()).cloned().collect();
        for c in w.contenders.iter().filter(|c| !c.available()) {
            eprintln!("  {}: {} not installed, row skipped", w.name, c.name());
        }

        // Each workload variant: (label, setup+task runner).
        let variants: Vec<String> = match wname.as_str() {
            "small-files" => {
                let mut v = vec![format!("small-files {} x 4KiB ({})", nsmall, report::fs_type(&scratch))];
                if Path::new("/dev/shm").is_dir() {
                    v.push(format!("small-files {} x 4KiB (tmpfs)", nsmall));
                }
                v
            }
            "concurrency" => [1usize, 4, 16].iter().map(|n| format!("concurrency {n}")).collect(),
            "net-send" | "net-recv" => vec![format!("{wname} 1 stream"), format!("{wname} 16 streams")],
            _ => vec![wname.clone()],
        };
        for label in variants {
            let wl = Workload { name: label.clone(), contenders: contenders.clone(), baseline: w.baseline.clone() };
            eprintln!("== {} ({} contenders)", wl.name, wl.contenders.len());
            let r = run_workload(&wl, wname, &engines, &scratch, &src, &dst, src_hash, size, nsmall, reps, &args)?;
            rows.extend(r);
            workloads_run.push((wl.name.clone(), wl.baseline.name()));
        }
    }
    drop(engines);
    let _ = std::fs::remove_dir_all(&scratch);
    let summary = report::summarize(&rows, &workloads_run);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report::fio_json(&summary, &rows))?);
    } else {
        print!("{}{}", report::verdicts(&summary), report::table(&summary));
    }
    let dir = report::write_results(&args, &rows, &summary, size, reps, nsmall, t_start.elapsed())?;
    eprintln!("results written to {}", dir.display());
    Ok(())
}

fn tempdir_in(base: &Path) -> Result<PathBuf> {
    let p = base.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

fn make_tree(root: &Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(root)?;
    let per_dir = 500;
    let buf: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    for i in 0..n {
        let d = root.join(format!("d{:03}", i / per_dir));
        if i % per_dir == 0 {
            std::fs::create_dir_all(&d)?;
        }
        let mut b = buf.clone();
        b[..8].copy_from_slice(&(i as u64).to_le_bytes());
        std::fs::write(d.join(format!("f{i:05}")), &b)?;
    }
    Ok(())
}

fn verify_tree(src: &Path, dst: &Path) -> Result<u64> {
    let mut n = 0;
    for d in std::fs::read_dir(src)? {
        let d = d?;
        for f in std::fs::read_dir(d.path())? {
            let f = f?;
            let rel = dst.join(d.file_name()).join(f.file_name());
            if std::fs::read(f.path())? != std::fs::read(&rel).with_context(|| format!("verify {}", rel.display()))? {
                bail!("VERIFY FAILED: {} differs from its source", rel.display());
            }
            n += 1;
        }
    }
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn run_workload(
    w: &Workload,
    kind: &str,
    engines: &Engines,
    scratch: &Path,
    src: &Path,
    dst: &Path,
    src_hash: u128,
    size: u64,
    nsmall: usize,
    reps: usize,
    args: &Args,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Workload-specific material.
    let tree_root = if w.name.contains("tmpfs") {
        PathBuf::from("/dev/shm").join(format!("ferry-bench-{}", std::process::id()))
    } else {
        scratch.join("tree")
    };
    let conc_n: usize = w.name.strip_prefix("concurrency ").map(|n| n.parse().unwrap_or(1)).unwrap_or(0);
    // Network: one stream carries the whole file; 16 streams carry a 16th each.
    let streams = if w.name.ends_with("16 streams") { 16 } else { 1 };
    let net_src = scratch.join(format!("net-src-{streams}"));
    let net_hash = if kind.starts_with("net-") {
        make_file(&net_src, (size / streams as u64).max(1), 77 + streams as u64)?;
        hash_file(&net_src)?
    } else {
        0
    };
    let mut pairs = Vec::new();
    if kind == "small-files" {
        let t = Instant::now();
        make_tree(&tree_root.join("src"), nsmall)?;
        eprintln!("   made {nsmall} files in {:.1}s", t.elapsed().as_secs_f64());
    }
    if conc_n > 0 {
        let each = (size / conc_n as u64).max(4096);
        for i in 0..conc_n {
            let s = scratch.join(format!("c-src-{i}"));
            make_file(&s, each, 100 + i as u64)?;
            pairs.push((s, scratch.join(format!("c-dst-{i}"))));
        }
    }
    let pair_hashes: Vec<u128> = pairs.iter().map(|(s, _)| hash_file(s)).collect::<Result<_>>()?;
    let total = (reps + 1) * w.contenders.len();
    let mut done = 0;
    for rep in 0..=reps {
        for c in &w.contenders {
            done += 1;
            // Prepare the destination state this workload asks for.
            let in_place = kind == "hot-overwrite";
            let direct = kind == "direct";
            match kind {
                // Every small-files sample writes a fresh tree, removed only when the workload
                // ends: deleting 20,000 files right before a sample puts ext4 mounted with
                // `discard` (as here) into a state where creates crawl for tens of seconds,
                // which would measure the previous sample's cleanup, not the contender.
                "small-files" => {}
                "concurrency" => {
                    for (_, d) in &pairs {
                        let _ = std::fs::remove_file(d);
                    }
                }
                "net-recv" => {
                    for i in 0..streams {
                        let _ = std::fs::remove_file(scratch.join(format!("recv-{i}")));
                    }
                }
                "hot-overwrite" => {
                    if std::fs::metadata(dst).map(|m| m.len()).ok() != Some(size) {
                        let _ = std::fs::remove_file(dst);
                        make_file(dst, size, 7)?;
                    }
                }
                _ => {
                    let _ = std::fs::remove_file(dst);
                }
            }
            if kind == "cold" || kind == "direct" {
                sys::drop_cache(src)?;
            }
            let (tsrc, tdst) = (tree_root.join("src"), tree_root.join(format!("dst-{rep}-{done}")));
            let task = match kind {
                "small-files" => Task::Tree { src: &tsrc, dst: &tdst },
                "concurrency" => Task::Many { pairs: &pairs },
                "net-send" => Task::Send { src: &net_src, streams, hash: net_hash },
                "net-recv" => Task::Recv { src: &net_src, dst_dir: scratch, streams },
                _ => Task::File { src, dst, in_place, direct },
            };
            let s = match c.run(&task, engines, scratch) {
                Ok(s) => s,
                Err(e) if c.is_limit() => {
                    eprintln!("   {}: {e:#} (limit row skipped)", c.name());
                    continue;
                }
                Err(e) => return Err(e.context(format!("{} / {}", w.name, c.name()))),
            };
            // Verify before the sample counts.
            if !c.is_limit() {
                match kind {
                    "small-files" => {
                        let n = verify_tree(&tsrc, &tdst)?;
                        if n != nsmall as u64 {
                            bail!("VERIFY FAILED: {} copied {n} of {nsmall} files", c.name());
                        }
                    }
                    // Verified inside the run, by the receiving threads' hashes.
                    "net-send" => {}
                    "net-recv" => {
                        for i in 0..streams {
                            let d = scratch.join(format!("recv-{i}"));
                            if hash_file(&d)? != net_hash {
                                bail!("VERIFY FAILED: {} received {} wrong", c.name(), d.display());
                            }
                        }
                    }
                    "concurrency" => {
                        for ((_, d), h) in pairs.iter().zip(&pair_hashes) {
                            if hash_file(d)? != *h {
                                bail!("VERIFY FAILED: {} wrote {} wrong", c.name(), d.display());
                            }
                        }
                    }
                    _ => {
                        if hash_file(dst)? != src_hash || std::fs::metadata(dst)?.len() != size {
                            bail!("VERIFY FAILED: {} produced a destination that differs from the source", c.name());
                        }
                    }
                }
            }
            let bytes = if kind == "small-files" { nsmall as u64 * 4096 } else { s.bytes };
            if rep > 0 {
                eprintln!(
                    "   [{done}/{total}] rep {rep} {:<34} {:>9.1} MB/s{}",
                    c.name(),
                    bytes as f64 / s.wall.as_secs_f64() / 1e6,
                    if kind == "small-files" {
                        format!(" {:>8.0} files/s", s.files as f64 / s.wall.as_secs_f64())
                    } else {
                        String::new()
                    }
                );
                let mut s = s;
                s.bytes = bytes;
                rows.push(Row { workload: w.name.clone(), contender: c.name(), rep, sample: s });
            }
        }
    }
    if kind == "small-files" {
        let _ = std::fs::remove_dir_all(&tree_root);
    }
    for (s, d) in &pairs {
        let _ = std::fs::remove_file(s);
        let _ = std::fs::remove_file(d);
    }
    let _ = std::fs::remove_file(&net_src);
    for i in 0..streams {
        let _ = std::fs::remove_file(scratch.join(format!("recv-{i}")));
    }
    let _ = std::fs::remove_file(dst);
    let _ = args;
    Ok(rows)
}
