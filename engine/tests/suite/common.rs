use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ferry::{Backend, BackendChoice, Engine, Mode};
use sha2::{Digest, Sha256};

/// Both backends, explicitly (the builder choice wins over FERRY_BACKEND).
pub fn engines() -> Vec<(Backend, Engine)> {
    let mut v = Vec::new();
    match Engine::builder().backend(BackendChoice::Uring).build() {
        Ok(e) => v.push((Backend::Uring, e)),
        Err(e) => require_feature(&format!("io_uring backend unavailable: {e}")),
    }
    v.push((Backend::Syscall, Engine::builder().backend(BackendChoice::Syscall).build().unwrap()));
    v
}

/// Every mode a backend can run.
pub fn all_modes(b: Backend) -> Vec<Mode> {
    Mode::ALL.into_iter().filter(|m| b == Backend::Uring || !m.needs_uring()).collect()
}

/// The file -> file modes a backend can run.
pub fn modes(b: Backend) -> Vec<Mode> {
    all_modes(b).into_iter().filter(|m| m.supports(false, false)).collect()
}

/// A skipped check says why; under CI=true a missing kernel feature fails the run instead.
pub fn require_feature(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("required feature missing under CI: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// Deterministic, non-repeating content (xorshift), so misplaced chunks are caught.
pub fn write_pattern(path: &Path, size: u64, seed: u64) {
    let mut f = File::create(path).unwrap();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// A sparse file: data, hole, data, trailing hole.
pub fn write_sparse(path: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let f = File::create(path).unwrap();
    let block = vec![0xabu8; 256 * 1024];
    f.write_all_at(&block, 0).unwrap();
    f.write_all_at(&block[..5000], 8 << 20).unwrap();
    f.write_all_at(&block, 20 << 20).unwrap();
    let size = 40 << 20;
    f.set_len(size).unwrap();
    size
}

pub fn sha(path: &Path) -> [u8; 32] {
    let mut f = File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

pub fn sha_range(path: &Path, off: u64, len: u64) -> [u8; 32] {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    let mut h = Sha256::new();
    let mut take = f.take(len);
    std::io::copy(&mut take, &mut h).unwrap();
    h.finalize().into()
}

pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Files whose name marks a ferry temp file.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".ferry-"))
                .collect()
        })
        .unwrap_or_default()
}

pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Re-runs this test binary for one ignored entry-point test, with `env` set.
pub fn run_child(test: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child {test} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout
}
