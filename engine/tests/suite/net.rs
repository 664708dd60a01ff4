//! File <-> socket and socket <-> socket over real loopback TCP, every mode the pair allows, on
//! both backends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use ferry::{Backend, Engine, ErrorKind, Mode, Options, Sink, Source};

use crate::common::*;

const SIZES: &[u64] = &[0, 1, 4095, 4096, 4097, (1 << 20) + 1, (64 << 20) + 7];

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

pub fn net_modes(b: Backend, src_socket: bool, dst_socket: bool) -> Vec<Mode> {
    all_modes(b).into_iter().filter(|m| m.supports(src_socket, dst_socket)).collect()
}

/// Reads everything from `s` in a thread and returns its sha256 and length.
fn drain(mut s: TcpStream) -> std::thread::JoinHandle<([u8; 32], u64)> {
    std::thread::spawn(move || {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        (h.finalize().into(), n)
    })
}

#[test]
fn file_to_socket_every_size_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, engine) in engines() {
        for mode in net_modes(backend, false, true) {
            for (i, &size) in SIZES.iter().enumerate() {
                let src = dir.path().join(format!("s{size}"));
                if !src.exists() {
                    write_pattern(&src, size, i as u64 + 3);
                }
                let (a, b) = pair();
                let reader = drain(b);
                let r = engine
                    .copy(Source::file(&src), Sink::socket(a), Options { mode, ..Options::default() })
                    .unwrap()
                    .wait()
                    .unwrap_or_else(|e| panic!("{backend} {mode} {size}: {e}"));
                let (h, n) = reader.join().unwrap();
                assert_eq!(n, size, "{backend} {mode}");
                assert_eq!(h, sha(&src), "{backend} {mode} {size}");
                assert_eq!(r.bytes, size);
                if mode != Mode::Auto {
                    assert_eq!(r.mode, mode);
                }
            }
        }
    }
}

#[test]
fn socket_to_file_every_size_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, engine) in engines() {
        for mode in net_modes(backend, true, false) {
            for (i, &size) in SIZES.iter().enumerate() {
                let src = dir.path().join(format!("s{size}"));
                if !src.exists() {
                    write_pattern(&src, size, i as u64 + 5);
                }
                let (a, b) = pair();
                let sender = {
                    let src = src.clone();
                    std::thread::spawn(move || {
                        let mut a = a;
                        a.write_all(&std::fs::read(src).unwrap()).unwrap();
                    })
                };
                let dst = dir.path().join("d");
                // Until EOF for even sizes, an exact length for odd ones.
                let source = if size % 2 == 0 { Source::socket(b) } else { Source::socket_exact(b, size) };
                let r = engine
                    .copy(source, Sink::file(&dst), Options { mode, ..Options::default() })
                    .unwrap()
                    .wait()
                    .unwrap_or_else(|e| panic!("{backend} {mode} {size}: {e}"));
                sender.join().unwrap();
                assert_eq!(r.bytes, size);
                assert_eq!(sha(&dst), sha(&src), "{backend} {mode} {size}");
                assert!(temp_files(dir.path()).is_empty());
            }
        }
    }
}

#[test]
fn socket_to_socket_relay() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, (8 << 20) + 3, 9);
    for (backend, engine) in engines() {
        for mode in net_modes(backend, true, true) {
            eprintln!("relay {backend} {mode}");
            let (a, b) = pair();
            let (c, d) = pair();
            let reader = drain(d);
            let data = std::fs::read(&src).unwrap();
            let w = std::thread::spawn(move || {
                let mut a = a;
                a.write_all(&data).unwrap();
            });
            engine
                .copy(Source::socket(b), Sink::socket(c), Options { mode, ..Options::default() })
                .unwrap()
                .wait()
                .unwrap();
            w.join().unwrap();
            let (h, n) = reader.join().unwrap();
            assert_eq!(n, (8 << 20) + 3, "{backend} {mode}");
            assert_eq!(h, sha(&src), "{backend} {mode}");
        }
    }
}

#[test]
fn peer_that_closes_early_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 64 << 20, 2);
    for (backend, engine) in engines() {
        for mode in net_modes(backend, false, true) {
            let (a, b) = pair();
            let reader = std::thread::spawn(move || {
                let mut b = b;
                let mut buf = vec![0u8; 100_000];
                b.read_exact(&mut buf).unwrap();
                drop(b);
            });
            let e = engine
                .copy(Source::file(&src), Sink::socket(a), Options { mode, ..Options::default() })
                .unwrap()
                .wait()
                .unwrap_err();
            reader.join().unwrap();
            assert_eq!(e.kind(), ErrorKind::Peer, "{backend} {mode}: {e}");
            assert!(e.to_string().contains("tcp 127.0.0.1:"), "{e}");
        }
        // A sender that stops short of the promised length.
        for mode in net_modes(backend, true, false) {
            let (a, b) = pair();
            let dst = dir.path().join("d");
            let w = std::thread::spawn(move || {
                let mut a = a;
                a.write_all(&[7u8; 1000]).unwrap();
            });
            let e = engine
                .copy(Source::socket_exact(b, 5000), Sink::file(&dst), Options { mode, ..Options::default() })
                .unwrap()
                .wait()
                .unwrap_err();
            w.join().unwrap();
            assert_eq!(e.kind(), ErrorKind::Peer, "{backend} {mode}: {e}");
            assert!(e.to_string().contains("after 1000 of 5000 bytes"), "{e}");
            assert!(!dst.exists() && temp_files(dir.path()).is_empty());
        }
    }
}

#[test]
fn peer_that_never_reads_hits_the_deadline_and_cancel_completes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 64 << 20, 2);
    for (backend, engine) in engines() {
        for mode in net_modes(backend, false, true) {
            eprintln!("never-reads {backend} {mode}");
            let (a, b) = pair();
            let opts = Options { mode, deadline: Some(Duration::from_millis(300)), ..Options::default() };
            let e = engine.copy(Source::file(&src), Sink::socket(a), opts).unwrap().wait().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{backend} {mode}: {e}");
            drop(b);
            // Idle timeout: the same silent peer, caught by lack of progress instead.
            let (a, b) = pair();
            let opts = Options { mode, idle_timeout: Some(Duration::from_millis(300)), ..Options::default() };
            let e = engine.copy(Source::file(&src), Sink::socket(a), opts).unwrap().wait().unwrap_err();
            assert!(e.to_string().contains("idle timeout"), "{backend} {mode}: {e}");
            drop(b);
        }
        for w in engine.metrics() {
            assert_eq!(w.active, 0);
        }
    }
}

#[test]
fn hundred_connections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, 300_001, 4);
    let want = sha(&src);
    for (backend, engine) in engines() {
        let modes = net_modes(backend, false, true);
        let mut readers = Vec::new();
        let mut transfers = Vec::new();
        for i in 0..100 {
            let (a, b) = pair();
            readers.push(drain(b));
            let mode = modes[i % modes.len()];
            transfers.push(
                engine.copy(Source::file(&src), Sink::socket(a), Options { mode, ..Options::default() }).unwrap(),
            );
        }
        for t in transfers {
            t.wait().unwrap();
        }
        for r in readers {
            let (h, n) = r.join().unwrap();
            assert_eq!((h, n), (want, 300_001), "{backend}");
        }
    }
}

#[test]
fn wrong_mode_for_the_pair_names_the_ones_that_work() {
    let engine = Engine::new().unwrap();
    let (a, _b) = pair();
    let e = engine
        .copy(Source::socket(a), Sink::file("/tmp/x"), Options { mode: Mode::Sendfile, ..Options::default() })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("cannot move socket -> file") && e.to_string().contains("splice"), "{e}");
}

#[test]
fn header_goes_first_then_the_body_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_pattern(&src, (3 << 20) + 17, 12);
    let body = std::fs::read(&src).unwrap();
    let header = b"HTTP/1.1 200 OK\r\nContent-Length: 3145745\r\n\r\n".to_vec();
    for (backend, engine) in engines() {
        for mode in net_modes(backend, false, true) {
            let (a, b) = pair();
            let reader = std::thread::spawn(move || {
                let mut b = b;
                let mut got = Vec::new();
                b.read_to_end(&mut got).unwrap();
                got
            });
            let opts =
                Options { mode, header: Some(header.clone()), socket_buffer: Some(1 << 20), ..Options::default() };
            let r = engine.copy(Source::file(&src), Sink::socket(a), opts).unwrap().wait().unwrap();
            let got = reader.join().unwrap();
            assert_eq!(r.bytes, body.len() as u64, "{backend} {mode}: header counted as body");
            assert_eq!(&got[..header.len()], &header[..], "{backend} {mode}");
            assert!(got[header.len()..] == body[..], "{backend} {mode}: body differs");
        }
    }
    let e = Engine::new()
        .unwrap()
        .copy(
            Source::file(&src),
            Sink::file(dir.path().join("x")),
            Options { header: Some(vec![1]), ..Options::default() },
        )
        .unwrap_err();
    assert!(e.to_string().contains("header applies to a socket sink"), "{e}");
}
