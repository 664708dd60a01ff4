use std::path::Path;
use std::process::Command;

use ferry::{ErrorKind, Options};

use crate::common::*;

/// A small tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let d = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(d.path())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Tmpfs(d))
        } else {
            require_feature("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
            None
        }
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn enospc_on_a_full_tmpfs_is_clear_and_leaves_nothing() {
    let Some(fs) = Tmpfs::mount("2m") else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    write_pattern(&src, 8 << 20, 4);
    for (backend, engine) in engines() {
        for mode in modes(backend) {
            for prealloc in [false, true] {
                let dst = fs.path().join("out");
                let e = engine.copy_wait(&src, &dst, Options { mode, prealloc, ..Options::default() }).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Io, "{backend} {mode}: {e}");
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{backend} {mode}: {e}");
                assert!(e.to_string().contains("out") && e.to_string().contains("No space left"), "{e}");
                let left: Vec<_> = std::fs::read_dir(fs.path()).unwrap().flatten().map(|e| e.path()).collect();
                assert!(left.is_empty(), "{backend} {mode}: left behind {left:?}");
            }
        }
    }
}
