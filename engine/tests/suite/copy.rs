use std::time::Duration;

use ferry::{Backend, ErrorKind, Mode, Options, RateLimit, Sink, Source};

use crate::common::*;

const SIZES: &[u64] = &[0, 1, 4095, 4096, 4097, (1 << 20) + 1, (64 << 20) + 7];

#[test]
fn every_size_every_mode_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let mut srcs = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let p = dir.path().join(format!("src-{size}"));
        write_pattern(&p, size, i as u64 + 1);
        srcs.push((p, size));
    }
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            for (src, size) in &srcs {
                let dst = dir.path().join(format!("dst-{backend}-{mode}-{size}"));
                let opts = Options { mode, ..Options::default() };
                let r = engine
                    .copy(Source::file(src), Sink::file(&dst), opts)
                    .unwrap()
                    .wait()
                    .unwrap_or_else(|e| panic!("{backend} {mode} {size}: {e}"));
                assert_eq!(r.bytes, *size, "{backend} {mode} {size}");
                assert_eq!(r.backend, backend);
                if mode != Mode::Auto {
                    assert_eq!(r.mode, mode);
                }
                assert_eq!(sha(src), sha(&dst), "{backend} {mode} {size}: content differs");
                std::fs::remove_file(&dst).unwrap();
            }
        }
        assert!(temp_files(dir.path()).is_empty());
    }
}

#[test]
fn sparse_stays_sparse_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse");
    let size = write_sparse(&src);
    assert!(allocated(&src) < size / 4, "filesystem did not make a sparse file");
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            let dst = dir.path().join(format!("out-{backend}-{mode}"));
            let r = engine.copy_wait(&src, &dst, Options { mode, ..Options::default() }).unwrap();
            assert_eq!(std::fs::metadata(&dst).unwrap().len(), size);
            assert_eq!(sha(&src), sha(&dst), "{backend} {mode}");
            assert!(allocated(&dst) <= allocated(&src) + (1 << 20), "{backend} {mode}: holes were filled");
            assert!(r.bytes < size, "holes were counted as data");
        }
    }
}

#[test]
fn ranges_copy_exactly_the_slice() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, (3 << 20) + 123, 9);
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            for (off, len) in [(0u64, Some(1u64)), (4095, Some(70_000)), (1 << 20, None), ((3 << 20) + 123, None)] {
                let dst = dir.path().join("dst");
                let opts = Options { mode, range: Some((off, len)), ..Options::default() };
                engine.copy_wait(&src, &dst, opts).unwrap();
                let want = len.unwrap_or((3 << 20) + 123 - off);
                assert_eq!(std::fs::metadata(&dst).unwrap().len(), want);
                assert_eq!(sha(&dst), sha_range(&src, off, want), "{backend} {mode} {off}+{len:?}");
            }
        }
        let e = engine
            .copy_wait(&src, dir.path().join("x"), Options { range: Some((1 << 30, None)), ..Options::default() })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("past the end"), "{e}");
    }
}

#[test]
fn in_place_overwrite_truncates_to_the_new_length() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dst = dir.path().join("dst");
    write_pattern(&src, 1_000_000, 3);
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            write_pattern(&dst, 3_000_000, 4);
            let opts = Options { mode, in_place: true, prealloc: true, fsync: true, ..Options::default() };
            engine.copy_wait(&src, &dst, opts).unwrap();
            assert_eq!(sha(&src), sha(&dst), "{backend} {mode}");
        }
    }
}

#[test]
fn direct_io_where_the_filesystem_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, (5 << 20) + 4097, 5);
    for (backend, engine) in engines() {
        for mode in [Mode::Auto, Mode::UringFixed, Mode::Buffered] {
            if mode.needs_uring() && backend != Backend::Uring {
                continue;
            }
            let dst = dir.path().join("dst");
            let opts = Options { mode, direct: true, ..Options::default() };
            match engine.copy_wait(&src, &dst, opts) {
                Ok(_) => assert_eq!(sha(&src), sha(&dst), "{backend} {mode}"),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    assert!(e.to_string().contains("--direct"), "{e}");
                    require_feature(&format!("O_DIRECT refused here: {e}"));
                }
                Err(e) => panic!("{backend} {mode}: {e}"),
            }
        }
        // Splice and copy_file_range cannot honour O_DIRECT: say so instead of ignoring it.
        let e = engine
            .copy_wait(&src, dir.path().join("d2"), Options { mode: Mode::Splice, direct: true, ..Options::default() })
            .unwrap_err();
        assert!(e.to_string().contains("--direct"), "{e}");
    }
}

#[test]
fn hundred_transfers_in_flight_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            let mut handles = Vec::new();
            for i in 0..100u64 {
                let src = dir.path().join(format!("s{i}"));
                if !src.exists() {
                    write_pattern(&src, 1000 + i * 7919, i + 11);
                }
                let dst = dir.path().join(format!("d{i}"));
                let t =
                    engine.copy(Source::file(&src), Sink::file(&dst), Options { mode, ..Options::default() }).unwrap();
                handles.push((t, src, dst));
            }
            for (t, src, dst) in handles {
                t.wait().unwrap();
                assert_eq!(sha(&src), sha(&dst), "{backend} {mode}");
                std::fs::remove_file(dst).unwrap();
            }
        }
        let m = engine.metrics();
        assert_eq!(m.iter().map(|w| w.cq_overflow).sum::<u64>(), 0, "CQ overflowed: {m:?}");
        assert!(m.iter().all(|w| w.active == 0));
    }
}

#[test]
fn transfer_larger_than_depth_times_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // chunk 16 KiB x depth 2 = 32 KiB in flight; the file is 1000 times that and then some.
    write_pattern(&src, 32 * 1024 * 1000 + 333, 21);
    for (backend, _) in engines() {
        let engine = ferry::Engine::builder()
            .backend(if backend == Backend::Uring {
                ferry::BackendChoice::Uring
            } else {
                ferry::BackendChoice::Syscall
            })
            .chunk(16 * 1024)
            .depth(2)
            .slab(64 * 1024)
            .build()
            .unwrap();
        for mode in modes(backend) {
            let dst = dir.path().join("dst");
            let r = engine.copy_wait(&src, &dst, Options { mode, ..Options::default() }).unwrap();
            assert_eq!(sha(&src), sha(&dst), "{backend} {mode}");
            if matches!(mode, Mode::UringFixed | Mode::Buffered | Mode::UringSplice | Mode::Splice) {
                assert!(r.ops >= 2000, "{mode}: chunking not applied ({} ops)", r.ops);
            }
        }
    }
}

#[test]
fn rate_limit_is_shared_and_respected() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 2 << 20, 8);
    for (backend, engine) in engines() {
        // 4 MiB/s shared by two 2 MiB copies: about a second in all, never much less.
        let rl = RateLimit::new(4 << 20, 256 << 10);
        let t0 = std::time::Instant::now();
        let a = engine
            .copy(
                Source::file(&src),
                Sink::file(dir.path().join("a")),
                Options { rate: Some(rl.clone()), ..Options::default() },
            )
            .unwrap();
        let b = engine
            .copy(
                Source::file(&src),
                Sink::file(dir.path().join("b")),
                Options { rate: Some(rl), mode: Mode::Buffered, ..Options::default() },
            )
            .unwrap();
        a.wait().unwrap();
        b.wait().unwrap();
        // A lower bound only: the limiter must not let 4 MiB through much faster than 4 MiB/s
        // (less the burst). An upper bound would be a timing assertion on a shared machine.
        assert!(t0.elapsed() >= Duration::from_millis(700), "{backend}: {:?}", t0.elapsed());
        assert_eq!(sha(&src), sha(&dir.path().join("a")));
        assert_eq!(sha(&src), sha(&dir.path().join("b")));
    }
}

#[test]
fn deadline_cancels_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 4 << 20, 8);
    for (backend, engine) in engines() {
        let dst = dir.path().join("dst");
        let opts = Options {
            rate: Some(RateLimit::new(1 << 20, 64 << 10)),
            deadline: Some(Duration::from_millis(200)),
            ..Options::default()
        };
        let e = engine.copy_wait(&src, &dst, opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{backend}: {e}");
        assert!(!dst.exists());
        assert!(temp_files(dir.path()).is_empty(), "{backend}: temp file left");
    }
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 10, 1);
    for (backend, engine) in engines() {
        let e = engine.copy_wait(dir.path().join("missing"), dir.path().join("x"), Options::default()).unwrap_err();
        assert!(e.to_string().contains("missing") && e.to_string().contains("No such file"), "{e}");
        let e = engine.copy_wait(dir.path(), dir.path().join("x"), Options::default()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = engine.copy_wait(&src, dir.path().join("no/such/dir/x"), Options::default()).unwrap_err();
        assert!(e.to_string().contains("no/such/dir/x"), "{e}");
        let e = engine.copy_wait(&src, &src, Options::default()).unwrap_err();
        assert!(e.to_string().contains("same file"), "{e}");
        if backend == Backend::Syscall {
            let e = engine
                .copy_wait(&src, dir.path().join("y"), Options { mode: Mode::UringFixed, ..Options::default() })
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BackendUnavailable, "{e}");
        }
        assert!(temp_files(dir.path()).is_empty());
    }
}

#[test]
fn source_that_shrinks_is_an_error_not_a_short_copy() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 64 << 20, 2);
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            write_pattern(&src, 64 << 20, 2);
            let dst = dir.path().join("dst");
            // A slow copy, then cut the source to a quarter while it runs.
            let opts = Options { mode, rate: Some(RateLimit::new(64 << 20, 1 << 20)), ..Options::default() };
            let t = engine.copy(Source::file(&src), Sink::file(&dst), opts).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            std::fs::OpenOptions::new().write(true).open(&src).unwrap().set_len(16 << 20).unwrap();
            match t.wait() {
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::SourceChanged, "{backend} {mode}: {e}");
                    assert!(e.to_string().contains("shrank"), "{e}");
                    assert!(!dst.exists(), "{backend} {mode}: partial destination left");
                }
                Ok(r) => panic!("{backend} {mode}: shrunken source reported success ({} bytes)", r.bytes),
            }
            assert!(temp_files(dir.path()).is_empty());
        }
    }
}

#[test]
fn transfer_is_a_future() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 300_000, 2);
    let engine = ferry::Engine::new().unwrap();
    let t = engine.copy(Source::file(&src), Sink::file(dir.path().join("dst")), Options::default()).unwrap();
    let r = block_on(t).unwrap();
    assert_eq!(r.bytes, 300_000);
}

/// A minimal executor: park the thread until the waker fires.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}
