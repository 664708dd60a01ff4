use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use ferry::{Options, TreeOptions};

use crate::common::*;

fn make_tree(root: &Path) -> usize {
    let mut files = 0;
    for d in ["a", "a/b", "a/b/c", "empty", "z"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (i, d) in ["", "a", "a/b", "a/b/c", "z"].iter().enumerate() {
        for k in 0..40u64 {
            let p = root.join(d).join(format!("f{k}"));
            write_pattern(&p, (k * 977 + i as u64 * 31) % 20_000, k + 1);
            files += 1;
        }
    }
    write_pattern(&root.join("a/big"), 3 << 20, 3);
    std::fs::set_permissions(root.join("a/big"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("b/c/f1", root.join("a/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    files + 1
}

fn assert_same_tree(a: &Path, b: &Path, times: bool) {
    let ma = std::fs::symlink_metadata(a).unwrap();
    let mb = std::fs::symlink_metadata(b).unwrap();
    assert_eq!(ma.file_type(), mb.file_type(), "{}", b.display());
    if ma.is_symlink() {
        assert_eq!(std::fs::read_link(a).unwrap(), std::fs::read_link(b).unwrap());
        return;
    }
    if ma.is_file() {
        assert_eq!(sha(a), sha(b), "{}", b.display());
        assert_eq!(ma.mode() & 0o7777, mb.mode() & 0o7777, "{}", b.display());
    }
    if times {
        assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()), "{}", b.display());
    }
    if ma.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(a).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        let mut got: Vec<_> = std::fs::read_dir(b).unwrap().map(|e| e.unwrap().file_name()).collect();
        got.sort();
        assert_eq!(names, got, "{}", b.display());
        for n in names {
            assert_same_tree(&a.join(&n), &b.join(&n), times);
        }
    }
}

#[test]
fn tree_copy_keeps_content_links_modes_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = make_tree(&src);
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            let dst = dir.path().join(format!("dst-{backend}-{mode}"));
            let opts = TreeOptions {
                file: Options { mode, ..Options::default() },
                preserve: true,
                max_in_flight: 64,
                cancel: None,
            };
            let r = engine.copy_tree(&src, &dst, &opts, |_| {}).unwrap();
            assert_eq!(r.totals.files as usize, files, "{backend} {mode}");
            assert_eq!(r.totals.symlinks, 2);
            assert_same_tree(&src, &dst, true);
        }
    }
}

#[test]
fn tree_copy_refuses_to_copy_into_itself() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let engine = ferry::Engine::new().unwrap();
    let e = engine.copy_tree(&src, &src.join("a/inside"), &TreeOptions::default(), |_| {}).unwrap_err();
    assert!(e.to_string().contains("into itself"), "{e}");
}
