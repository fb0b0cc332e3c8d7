use std::path::{Path, PathBuf};

use tokio::process::Command;

/// A small tmpfs mounted over a directory, to fill it: a full disk on demand. Mounting needs
/// root (as the CI machine has). Unmounted, lazily, on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`600k`, `64m`) on `path`, creating it.
    pub async fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let mut mount = Command::new("mount");
        mount
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path);
        run_mount(&mut mount).await;
        Self(path.to_path_buf())
    }

    /// Grows or shrinks it: a disk whose space came back.
    pub async fn resize(&self, size: &str) {
        let mut mount = Command::new("mount");
        mount
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0);
        run_mount(&mut mount).await;
    }
}

async fn run_mount(command: &mut Command) {
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed (a full-disk test mounts a small tmpfs, which needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
