//! `ferry-bench --quick` end to end: every workload runs, every copy is verified (a mismatch
//! would fail the run), and the results folder has its raw data, summary, setup and plots.

use std::process::Command;

#[test]
fn quick_run_writes_verified_results() {
    let scratch = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(["--quick", "--memcpy", "--dir"])
        .arg(scratch.path())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&o.stdout);
    for w in [
        "hot-new",
        "hot-overwrite",
        "cold",
        "direct",
        "small-files",
        "concurrency 16",
        "net-send 1 stream",
        "net-recv 16 streams",
    ] {
        assert!(table.contains(&format!("### {w}")), "workload {w} missing:\n{table}");
    }
    assert!(table.contains("| ferry auto |"), "{table}");
    let dir = std::fs::read_dir(out.path()).unwrap().next().unwrap().unwrap().path();
    let raw = std::fs::read_to_string(dir.join("raw.csv")).unwrap();
    assert!(raw.lines().count() > 50, "{raw}");
    assert!(raw.lines().skip(1).all(|l| l.split(',').count() == 14));
    for f in ["summary.md", "SETUP.md", "hot-new-throughput.png", "hot-new-throughput.svg", "hot-new-cpu.png"] {
        let p = dir.join(f);
        assert!(p.exists() && std::fs::metadata(&p).unwrap().len() > 100, "{f} missing or empty");
    }
    assert!(std::fs::read_to_string(dir.join("SETUP.md")).unwrap().contains("kernel"));
    // The scratch files are cleaned up.
    let left: Vec<_> = walk(scratch.path());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_arguments_are_clear() {
    let o = Command::new(env!("CARGO_BIN_EXE_ferry-bench")).args(["--workloads", "warp-drive"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown workload \"warp-drive\""));
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            let inner = walk(&e.path());
            if !inner.is_empty() {
                v.extend(inner);
            }
        } else {
            v.push(e.path());
        }
    }
    v
}
