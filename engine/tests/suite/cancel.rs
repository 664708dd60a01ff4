use std::time::Duration;

use ferry::{ErrorKind, Options, RateLimit, Sink, Source};

use crate::common::*;

#[test]
fn cancel_resolves_after_every_op_and_removes_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 32 << 20, 1);
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            let dst = dir.path().join("dst");
            let opts = Options { mode, rate: Some(RateLimit::new(8 << 20, 1 << 20)), ..Options::default() };
            let t = engine.copy(Source::file(&src), Sink::file(&dst), opts).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            assert!(t.progress().done < 32 << 20);
            t.cancel();
            let e = t.wait().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Cancelled, "{backend} {mode}: {e}");
            assert!(!dst.exists(), "{backend} {mode}");
            assert!(temp_files(dir.path()).is_empty(), "{backend} {mode}: temp file left");
        }
    }
}

#[test]
fn engine_shutdown_cancels_in_flight_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 16 << 20, 1);
    for (_backend, engine) in engines() {
        let mut ts = Vec::new();
        for i in 0..8 {
            let opts = Options { rate: Some(RateLimit::new(4 << 20, 1 << 20)), ..Options::default() };
            ts.push(engine.copy(Source::file(&src), Sink::file(dir.path().join(format!("d{i}"))), opts).unwrap());
        }
        std::thread::sleep(Duration::from_millis(30));
        engine.shutdown();
        for t in ts {
            assert_eq!(t.wait().unwrap_err().kind(), ErrorKind::Cancelled);
        }
        assert!(temp_files(dir.path()).is_empty());
    }
}
