//! Tests that need a process of their own: a seccomp filter, a peak-RSS reading, and a
//! descriptor count that other tests' threads must not disturb. The parent re-runs this binary
//! for one ignored entry point; the entry point does the work and prints a line to check.

use std::time::Duration;

use ferry::{Backend, BackendChoice, Engine, ErrorKind, Mode, Options, Sink, Source};
use rand::{Rng, SeedableRng};

use crate::common::*;

#[test]
fn fallback_when_seccomp_denies_io_uring_setup() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_child(
        "children::seccomp_child",
        &[("FERRY_TEST_DIR", dir.path().to_str().unwrap()), ("FERRY_BACKEND", "")],
    );
    assert!(out.contains("SECCOMP-OK backend=syscall"), "{out}");
}

#[test]
#[ignore = "entry point for fallback_when_seccomp_denies_io_uring_setup"]
fn seccomp_child() {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    let dir = std::path::PathBuf::from(std::env::var("FERRY_TEST_DIR").unwrap());
    // Make io_uring_setup fail with EPERM, as Docker's default profile does.
    let filter = SeccompFilter::new(
        [(libc::SYS_io_uring_setup, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter_all_threads(&prog).unwrap();

    let probed = ferry::probe_report();
    let why = probed.uring.as_ref().unwrap_err();
    assert!(why.contains("Operation not permitted") && why.contains("seccomp"), "{why}");
    let forced = Engine::builder().backend(BackendChoice::Uring).build().err().expect("forced uring must fail");
    assert_eq!(forced.kind(), ErrorKind::BackendUnavailable);
    assert!(forced.to_string().contains("seccomp"), "{forced}");

    let engine = Engine::new().unwrap();
    assert_eq!(engine.backend(), Backend::Syscall);
    assert!(engine.info().backend_reason.contains("unavailable"));
    let src = dir.join("src");
    let dst = dir.join("dst");
    write_pattern(&src, (8 << 20) + 5, 77);
    let r = engine.copy_wait(&src, &dst, Options::default()).unwrap();
    assert_eq!(r.backend, Backend::Syscall);
    assert_eq!(sha(&src), sha(&dst));
    println!("SECCOMP-OK backend={} mode={}", r.backend, r.mode);
}

#[test]
fn peak_rss_of_a_2gib_copy_stays_under_64mib() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    write_pattern(&src, 2 << 30, 5);
    let mut modes = vec!["auto", "buffered", "splice"];
    if ferry::probe_report().uring_usable() {
        modes.extend(["uring-fixed", "uring-splice"]);
    }
    for mode in modes {
        let out = run_child(
            "children::rss_child",
            &[("FERRY_TEST_DIR", dir.path().to_str().unwrap()), ("FERRY_TEST_MODE", mode)],
        );
        let at = out.find("RSS-KIB ").unwrap_or_else(|| panic!("{out}"));
        let kib: u64 = out[at..].split_whitespace().nth(1).unwrap().parse().unwrap();
        eprintln!("{mode}: peak RSS {kib} KiB");
        assert!(kib < 64 * 1024, "{mode}: peak RSS {kib} KiB >= 64 MiB");
    }
}

#[test]
#[ignore = "entry point for peak_rss_of_a_2gib_copy_stays_under_64mib"]
fn rss_child() {
    let dir = std::path::PathBuf::from(std::env::var("FERRY_TEST_DIR").unwrap());
    let mode: Mode = std::env::var("FERRY_TEST_MODE").unwrap().parse().unwrap();
    let choice = if mode.needs_uring() { BackendChoice::Uring } else { BackendChoice::Auto };
    let engine = Engine::builder().backend(choice).build().unwrap();
    let dst = dir.join(format!("copy-{mode}"));
    let r = engine.copy_wait(dir.join("big"), &dst, Options { mode, ..Options::default() }).unwrap();
    assert_eq!(r.bytes, 2 << 30);
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 2 << 30);
    std::fs::remove_file(&dst).unwrap();
    println!("RSS-KIB {}", status_kib("VmHWM:"));
}

#[test]
fn cancel_500_times_at_random_points_leaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_child("children::cancel_child", &[("FERRY_TEST_DIR", dir.path().to_str().unwrap())]);
    assert!(out.contains("CANCEL-OK"), "{out}");
}

#[test]
#[ignore = "entry point for cancel_500_times_at_random_points_leaks_nothing"]
fn cancel_child() {
    let dir = std::path::PathBuf::from(std::env::var("FERRY_TEST_DIR").unwrap());
    let src = dir.join("src");
    write_pattern(&src, 4 << 20, 3);
    let want = sha(&src);
    let fds_before = fd_count();
    let mut rng = rand::rngs::StdRng::seed_from_u64(500);
    let mut rss_at_100 = 0;
    let (mut cancelled, mut completed) = (0, 0);
    {
        let engines = engines();
        for i in 0..500 {
            let (backend, engine) = &engines[i % engines.len()];
            let ms = modes(*backend);
            let mode = ms[rng.gen_range(0..ms.len())];
            let dst = dir.join("dst");
            let t = engine.copy(Source::file(&src), Sink::file(&dst), Options { mode, ..Options::default() }).unwrap();
            let wait_us = rng.gen_range(0..3000);
            if wait_us > 0 {
                std::thread::sleep(Duration::from_micros(wait_us));
            }
            t.cancel();
            match t.wait() {
                Ok(_) => {
                    completed += 1;
                    assert_eq!(sha(&dst), want, "{backend} {mode}: completed copy differs");
                    std::fs::remove_file(&dst).unwrap();
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Cancelled, "{backend} {mode}: {e}");
                    assert!(!dst.exists(), "{backend} {mode}: cancelled copy left a destination");
                    cancelled += 1;
                }
            }
            assert!(temp_files(&dir).is_empty(), "iteration {i}: temp file left");
            if i == 100 {
                rss_at_100 = status_kib("VmRSS:");
            }
        }
        let rss_end = status_kib("VmRSS:");
        assert!(rss_end < rss_at_100 + 16 * 1024, "memory grew: {rss_at_100} KiB -> {rss_end} KiB");
        for (_, e) in &engines {
            for w in e.metrics() {
                assert_eq!(w.active, 0);
                assert_eq!(w.cq_overflow, 0);
            }
        }
    }
    // Engines dropped: every ring, eventfd, pipe and file descriptor must be closed again.
    let fds_after = fd_count();
    assert_eq!(fds_before, fds_after, "descriptors leaked");
    assert!(cancelled > 50, "cancel never hit an in-flight copy ({cancelled} of 500)");
    println!("CANCEL-OK cancelled={cancelled} completed={completed}");
}

#[test]
fn network_cancel_500_times_leaks_no_fd_or_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_child("children::net_cancel_child", &[("FERRY_TEST_DIR", dir.path().to_str().unwrap())]);
    assert!(out.contains("NET-CANCEL-OK"), "{out}");
}

#[test]
#[ignore = "entry point for network_cancel_500_times_leaks_no_fd_or_pipe"]
fn net_cancel_child() {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let dir = std::path::PathBuf::from(std::env::var("FERRY_TEST_DIR").unwrap());
    let src = dir.join("src");
    write_pattern(&src, 8 << 20, 3);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fds_before = fd_count();
    let mut rng = rand::rngs::StdRng::seed_from_u64(501);
    let (mut cancelled, mut completed) = (0, 0);
    {
        let engines = engines();
        for i in 0..500 {
            let (backend, engine) = &engines[i % engines.len()];
            let ms: Vec<Mode> = all_modes(*backend).into_iter().filter(|m| m.supports(false, true)).collect();
            let mode = ms[rng.gen_range(0..ms.len())];
            let a = TcpStream::connect(addr).unwrap();
            let (mut b, _) = listener.accept().unwrap();
            let reader = std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut n = 0u64;
                while let Ok(k) = b.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                n
            });
            let t = engine.copy(Source::file(&src), Sink::socket(a), Options { mode, ..Options::default() }).unwrap();
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
            t.cancel();
            match t.wait() {
                Ok(r) => {
                    completed += 1;
                    assert_eq!(r.bytes, 8 << 20);
                    assert_eq!(reader.join().unwrap(), 8 << 20, "{backend} {mode}");
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Cancelled, "{backend} {mode}: {e}");
                    cancelled += 1;
                    // The engine closed its end: the reader sees EOF and ends.
                    // Bytes may all have left before the cancel landed; the peer still sees EOF.
                    assert!(reader.join().unwrap() <= 8 << 20);
                }
            }
        }
    }
    assert_eq!(fds_before, fd_count(), "descriptors (sockets or pipes) leaked");
    assert!(cancelled > 50, "cancel never hit an in-flight transfer ({cancelled} of 500)");
    println!("NET-CANCEL-OK cancelled={cancelled} completed={completed}");
}
