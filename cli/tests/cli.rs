//! The `ferry` binary, run for real: exit codes, messages, JSON, signals.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sha2::{Digest, Sha256};

fn ferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .unwrap()
}

fn write(path: &Path, size: usize, seed: u8) {
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(path, data).unwrap();
}

fn sha(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cp_copies_in_every_mode_and_reports_json() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    write(&src, 3_000_001, 1);
    for mode in [
        "auto",
        "uring-fixed",
        "uring-splice",
        "copy-file-range",
        "splice",
        "buffered",
    ] {
        let dst = d.path().join(format!("dst-{mode}"));
        let out = ferry(&[
            "cp",
            "--mode",
            mode,
            "--backend",
            "uring",
            "--json",
            s(&src),
            s(&dst),
        ]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["bytes"], 3_000_001);
        assert_eq!(v["backend"], "io_uring");
        assert!(v["mode"].as_str().unwrap() != "auto");
        assert_eq!(sha(&src), sha(&dst), "{mode}");
    }
}

#[test]
fn cp_several_sources_into_a_directory_and_trees() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, out) = (d.path().join("a"), d.path().join("b"), d.path().join("out"));
    write(&a, 10, 1);
    write(&b, 70_000, 2);
    std::fs::create_dir(&out).unwrap();
    let o = ferry(&["cp", s(&a), s(&b), s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha(&a), sha(&out.join("a")));
    assert_eq!(sha(&b), sha(&out.join("b")));

    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("x/y")).unwrap();
    write(&tree.join("x/y/f"), 5000, 3);
    std::os::unix::fs::symlink("y/f", tree.join("x/l")).unwrap();
    let o = ferry(&["cp", s(&tree), s(&d.path().join("copy"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory (use -r"));
    let o = ferry(&["cp", "-r", "-p", s(&tree), s(&d.path().join("copy"))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha(&tree.join("x/y/f")), sha(&d.path().join("copy/x/y/f")));
    assert_eq!(
        std::fs::read_link(d.path().join("copy/x/l")).unwrap(),
        Path::new("y/f")
    );
}

#[test]
fn bad_input_is_one_clear_line_and_exit_1() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    write(&src, 100, 1);
    let cases: &[(&[&str], &str)] = &[
        (&["cp", "/no/such/file", "/tmp/x"], "/no/such/file"),
        (&["cp", s(&src), "/no/such/dir/x"], "/no/such/dir/x"),
        (
            &["cp", "--mode", "teleport", s(&src), "/tmp/x"],
            "unknown mode",
        ),
        (&["cp", "--chunk", "lots", s(&src), "/tmp/x"], "not a size"),
        (
            &["cp", "--range", "1GiB:", s(&src), "/tmp/ferry-range-x"],
            "past the end",
        ),
    ];
    for (args, want) in cases {
        let o = ferry(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn sigint_cancels_removes_the_temp_file_and_exits_130() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    write(&src, 32 << 20, 1);
    for backend in ["uring", "syscall"] {
        let dst = d.path().join("dst");
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "cp",
                "--backend",
                backend,
                "--rate-limit",
                "4MiB/s",
                s(&src),
                s(&dst),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        // SIGINT, as Ctrl-C sends.
        let st = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!dst.exists(), "{backend}");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "{backend}: {left:?}");
    }
}

#[test]
fn doctor_reports_the_kernel_and_backend() {
    let o = ferry(&["doctor", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["kernel"].as_str().unwrap().contains('.'));
    assert!(v["engine"]["backend"].is_string());
    let o = ferry(&["doctor"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("backend"));
}
