//! Shared integration-test helpers. Each test binary compiles all of them and uses some, so
//! unused-item warnings are off here.

#![allow(dead_code)]

pub mod fake_sam;
pub mod http;
pub mod i2p;
pub mod i2pd;
pub mod process;
pub mod proxy;
pub mod rng;
pub mod sam_client;
pub mod setup;
pub mod udp_client;

/// A scratch directory under the system temp dir, unique to this process and
/// `tag`, emptied on creation and removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("i2psocks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
