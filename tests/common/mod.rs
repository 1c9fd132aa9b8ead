//! Shared integration-test helpers, one job per file; the bench (benches/proxy.rs)
//! includes them too. Each test binary compiles all of them and uses some, so unused-item
//! warnings are off here.

#![allow(dead_code)]

pub mod emissary;
pub mod fake_sam;
pub mod http;
pub mod i2p;
pub mod i2pd;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod rng;
pub mod router;
pub mod sam_client;
pub mod sam_forward;
pub mod setup;
pub mod status;
pub mod udp_client;

use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the [`TempDir`]s of this process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A scratch directory under the system temp dir, unique to this call (process id,
/// `tag`, a counter), emptied on creation and removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("i2psocks-{tag}-{}-{n}", std::process::id()));
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
