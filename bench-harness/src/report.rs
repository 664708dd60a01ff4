//! Turning samples into a table, fio-like JSON, raw.csv, summary.md, SETUP.md and plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::{Args, Row};

/// One contender in one workload.
#[derive(Debug, Clone)]
pub struct Summary {
    pub workload: String,
    pub contender: String,
    pub baseline: String,
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Median over repetitions of (this / baseline) within the same repetition.
    pub ratio: Option<f64>,
    pub files_per_sec: Option<f64>,
    pub cpu_s_per_gib: f64,
    pub peak_rss_mib: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: Option<f64>,
    pub backend: String,
    pub mode: String,
    pub wide: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bps(r: &Row) -> f64 {
    r.sample.bytes as f64 / r.sample.wall.as_secs_f64().max(1e-9)
}

pub fn summarize(rows: &[Row], workloads: &[(String, String)]) -> Vec<Summary> {
    let mut out = Vec::new();
    for (w, baseline) in workloads {
        let mut order: Vec<String> = Vec::new();
        for r in rows.iter().filter(|r| &r.workload == w) {
            if !order.contains(&r.contender) {
                order.push(r.contender.clone());
            }
        }
        let base: BTreeMap<usize, f64> =
            rows.iter().filter(|r| &r.workload == w && &r.contender == baseline).map(|r| (r.rep, bps(r))).collect();
        for c in order {
            let rs: Vec<&Row> = rows.iter().filter(|r| &r.workload == w && r.contender == c).collect();
            let mut t: Vec<f64> = rs.iter().map(|r| bps(r)).collect();
            let mut ratios: Vec<f64> = rs.iter().filter_map(|r| base.get(&r.rep).map(|b| bps(r) / b)).collect();
            let gib_total: f64 = rs.iter().map(|r| r.sample.bytes as f64).sum::<f64>() / (1u64 << 30) as f64;
            let cpu_total: f64 = rs.iter().map(|r| r.sample.cpu.as_secs_f64()).sum();
            let lat = |f: fn(&ferry::Latency) -> u64| -> Option<f64> {
                let mut v: Vec<f64> = rs
                    .iter()
                    .filter_map(|r| r.sample.latency.filter(|l| l.count > 0).map(|l| f(&l) as f64 / 1e3))
                    .collect();
                (!v.is_empty()).then(|| median(&mut v))
            };
            let mut fps: Vec<f64> = rs.iter().map(|r| r.sample.files as f64 / r.sample.wall.as_secs_f64()).collect();
            let min = t.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = t.iter().cloned().fold(0.0, f64::max);
            let med = median(&mut t);
            out.push(Summary {
                workload: w.clone(),
                contender: c.clone(),
                baseline: baseline.clone(),
                n: rs.len(),
                min,
                median: med,
                max,
                ratio: (!ratios.is_empty()).then(|| median(&mut ratios)),
                files_per_sec: w.starts_with("small-files").then(|| median(&mut fps)),
                cpu_s_per_gib: cpu_total / gib_total.max(1e-12),
                peak_rss_mib: rs.iter().map(|r| r.sample.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
                p50_us: lat(|l| l.p50_ns),
                p99_us: lat(|l| l.p99_ns),
                p999_us: lat(|l| l.p999_ns),
                max_us: lat(|l| l.max_ns),
                backend: rs.last().map(|r| r.sample.backend.clone()).unwrap_or_default(),
                mode: rs.last().map(|r| r.sample.mode.clone()).unwrap_or_default(),
                wide: med > 0.0 && (max - min) / med > 0.5,
            });
        }
    }
    out
}

pub fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{} KiB", b >> 10)
    }
}

fn gbs(v: f64) -> String {
    format!("{:.2}", v / 1e9)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// The table, as Markdown (also readable on a terminal).
pub fn table(s: &[Summary]) -> String {
    let mut out = String::new();
    let mut last = "";
    for r in s {
        if r.workload != last {
            last = &r.workload;
            let _ = writeln!(out, "\n### {}  (ratio vs {})\n", r.workload, r.baseline);
            let _ = writeln!(out, "| contender | median GB/s | min | max | ratio | files/s | CPU s/GiB | peak RSS MiB | p50 µs | p99 µs | p99.9 µs | backend / mode |");
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        }
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} |",
            r.contender,
            if r.wide { " (wide spread)" } else { "" },
            gbs(r.median),
            gbs(r.min),
            gbs(r.max),
            opt(r.ratio, 2).to_string() + if r.ratio.is_some() { "x" } else { "" },
            opt(r.files_per_sec, 0),
            r.cpu_s_per_gib,
            r.peak_rss_mib,
            opt(r.p50_us, 0),
            opt(r.p99_us, 0),
            opt(r.p999_us, 0),
            [r.backend.as_str(), r.mode.as_str()]
                .iter()
                .filter(|x| !x.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    out
}

/// fio-like JSON: one "job" per contender and workload.
pub fn fio_json(s: &[Summary], rows: &[Row]) -> serde_json::Value {
    let jobs: Vec<_> = s
        .iter()
        .map(|r| {
            let rs: Vec<_> = rows.iter().filter(|x| x.workload == r.workload && x.contender == r.contender).collect();
            let runtime_ms: f64 =
                rs.iter().map(|x| x.sample.wall.as_secs_f64() * 1e3).sum::<f64>() / rs.len().max(1) as f64;
            serde_json::json!({
                "jobname": format!("{} / {}", r.workload, r.contender),
                "workload": r.workload, "contender": r.contender,
                "bw_bytes": r.median as u64, "bw_min": r.min as u64, "bw_max": r.max as u64,
                "iops": r.files_per_sec, "runtime": runtime_ms,
                "ratio_vs_baseline": r.ratio, "baseline": r.baseline,
                "cpu_s_per_gib": r.cpu_s_per_gib, "peak_rss_mib": r.peak_rss_mib,
                "clat_ns": {"percentile": {
                    "50.000000": r.p50_us.map(|v| (v * 1e3) as u64),
                    "99.000000": r.p99_us.map(|v| (v * 1e3) as u64),
                    "99.900000": r.p999_us.map(|v| (v * 1e3) as u64)},
                    "max": r.max_us.map(|v| (v * 1e3) as u64)},
                "backend": r.backend, "mode": r.mode, "samples": r.n,
            })
        })
        .collect();
    serde_json::json!({"fio version": "ferry-bench", "jobs": jobs})
}

pub fn fs_type(p: &Path) -> String {
    // findmnt names ext4 as ext4 (stat -f says "ext2/ext3" for all three).
    let out = std::process::Command::new("findmnt").args(["-n", "-o", "FSTYPE", "--target"]).arg(p).output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into())
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("({cmd}: {e})"))
}

#[allow(clippy::too_many_arguments)]
pub fn write_results(
    args: &Args,
    rows: &[Row],
    summary: &[Summary],
    size: u64,
    reps: usize,
    nsmall: usize,
    took: Duration,
) -> Result<PathBuf> {
    let date = cmd_out("date", &["+%Y-%m-%d"]).trim().to_string();
    let dir = args.out.join(format!("{date}-{}{}", host(), if args.quick { "-quick" } else { "" }));
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from(
        "workload,contender,rep,bytes,files,wall_s,cpu_s,peak_rss_kib,p50_ns,p99_ns,p999_ns,max_ns,backend,mode\n",
    );
    for r in rows {
        let l = r.sample.latency.unwrap_or_default();
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{:.6},{:.6},{},{},{},{},{},{},{}",
            r.workload,
            r.contender,
            r.rep,
            r.sample.bytes,
            r.sample.files,
            r.sample.wall.as_secs_f64(),
            r.sample.cpu.as_secs_f64(),
            r.sample.peak_rss_kib,
            l.p50_ns,
            l.p99_ns,
            l.p999_ns,
            l.max_ns,
            r.sample.backend,
            r.sample.mode
        );
    }
    std::fs::write(dir.join("raw.csv"), csv)?;
    let cmdline: Vec<String> = std::env::args().collect();
    let mut md = format!(
        "# ferry-bench summary\n\n`{}`: big file {}, {} small files, {} repetitions after one warm-up, contenders interleaved; \
         {} in all. Throughput is bytes of the copy / wall time, page cache included (no fsync) except the direct workload. \
         Every copy was verified (xxh3-128 of destination = source) before it counted; \"limit\" rows move no file.\n",
        cmdline.join(" "),
        human_bytes(size),
        nsmall,
        reps,
        humantime(took)
    );
    md.push_str(&verdicts(summary));
    md.push_str(&table(summary));
    std::fs::write(dir.join("summary.md"), &md)?;
    let doctor = cmd_out(
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("ferry")))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .as_deref()
            .unwrap_or("ferry"),
        &["doctor"],
    );
    let setup = format!(
        "# Setup\n\n- command: `{}`\n- date: {}\n- kernel: {}\n- CPU: {} ({} online)\n- memory: {}\n- filesystem under test: {} ({})\n\
         - tools: {} / {} / {}\n\n## ferry doctor\n\n```\n{}```\n",
        cmdline.join(" "),
        date,
        ferry::system::kernel_release(),
        cmd_out("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).trim(),
        cmd_out("nproc", &[]).trim(),
        cmd_out("sh", &["-c", "grep MemTotal /proc/meminfo"]).trim(),
        args.dir.display(),
        fs_type(&args.dir),
        cmd_out("sh", &["-c", "cp --version | head -1"]).trim(),
        cmd_out("sh", &["-c", "dd --version | head -1"]).trim(),
        cmd_out("sh", &["-c", "fio --version 2>/dev/null || echo 'fio not installed'"]).trim(),
        doctor
    );
    std::fs::write(dir.join("SETUP.md"), setup)?;
    if let Err(e) = plots(&dir, summary) {
        eprintln!("plots skipped: {e:#}");
    }
    Ok(dir)
}

/// Summary rows grouped by workload, in run order.
fn by_workload(summary: &[Summary]) -> Vec<(&str, Vec<&Summary>)> {
    let mut out: Vec<(&str, Vec<&Summary>)> = Vec::new();
    for s in summary {
        match out.iter_mut().find(|(w, _)| *w == s.workload) {
            Some((_, rows)) => rows.push(s),
            None => out.push((&s.workload, vec![s])),
        }
    }
    out
}

/// Per workload: ferry's best row against the best row of everything else (limit rows aside),
/// said plainly either way.
pub fn verdicts(summary: &[Summary]) -> String {
    let mut out = String::from("\n## Where ferry wins and where it loses (best median vs best median)\n\n");
    for (w, rows) in by_workload(summary) {
        let best = |ferry: bool| {
            rows.iter()
                .filter(|s| s.contender.starts_with("ferry") == ferry && !s.contender.contains("(limit)"))
                .max_by(|a, b| a.median.total_cmp(&b.median))
        };
        if let (Some(f), Some(o)) = (best(true), best(false)) {
            let r = f.median / o.median;
            let verdict = if r >= 1.05 {
                "ferry wins"
            } else if r >= 0.95 {
                "a tie (within 5%)"
            } else {
                "**ferry loses**"
            };
            out.push_str(&format!(
                "- {w}: {verdict}: {} {:.2} GB/s vs {} {:.2} GB/s ({r:.2}x)\n",
                f.contender,
                f.median / 1e9,
                o.contender,
                o.median / 1e9
            ));
        }
    }
    out
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

fn plots(dir: &Path, summary: &[Summary]) -> Result<()> {
    let font = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .ok_or_else(|| anyhow::anyhow!("no TrueType font found (install fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("font not usable"))?;
    for (w, rows) in by_workload(summary) {
        let slug: String = w.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        for (kind, what) in [("throughput", false), ("cpu", true)] {
            let png = dir.join(format!("{slug}-{kind}.png"));
            let svg = dir.join(format!("{slug}-{kind}.svg"));
            draw(plotters::prelude::BitMapBackend::new(&png, (1000, 60 + 34 * rows.len() as u32)), w, &rows, what)?;
            draw(plotters::prelude::SVGBackend::new(&svg, (1000, 60 + 34 * rows.len() as u32)), w, &rows, what)?;
        }
    }
    Ok(())
}

fn draw<B: plotters::prelude::DrawingBackend>(backend: B, title: &str, rows: &[&Summary], cpu: bool) -> Result<()>
where
    B::ErrorType: 'static,
{
    use plotters::prelude::*;
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let val = |s: &Summary| if cpu { s.cpu_s_per_gib } else { s.median / 1e9 };
    let hi = rows.iter().map(|s| if cpu { s.cpu_s_per_gib } else { s.max / 1e9 }).fold(0.0, f64::max) * 1.1 + 1e-6;
    let n = rows.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{title}: {}",
                if cpu { "CPU seconds per GiB (lower is better)" } else { "throughput GB/s, median with min-max" }
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(300)
        .build_cartesian_2d(0.0..hi, (0..n).into_segmented())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let names: Vec<String> = rows.iter().map(|s| s.contender.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, s)| {
            let color = if s.contender.starts_with("ferry") { RGBColor(31, 119, 180) } else { RGBColor(160, 160, 160) };
            Rectangle::new([(0.0, SegmentValue::Exact(i)), (val(s), SegmentValue::Exact(i + 1))], color.filled())
        }))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if !cpu {
        chart
            .draw_series(rows.iter().enumerate().map(|(i, s)| {
                PathElement::new(
                    vec![(s.min / 1e9, SegmentValue::CenterOf(i)), (s.max / 1e9, SegmentValue::CenterOf(i))],
                    BLACK.stroke_width(2),
                )
            }))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}
