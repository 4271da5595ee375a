//! Scratch directories for files a test hands to a process (certificates, sockets, logs).

use std::path::{Path, PathBuf};

/// A scratch directory, removed with the test.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("roulette-{tag}-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create a scratch directory");
        TempDir(p)
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, contents).expect("write a scratch file");
        p
    }

    /// `path(name)` as a string, for a command-line argument.
    pub fn s(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
