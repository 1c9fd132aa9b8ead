//! The real-router half of the bulk integrity checks (the fake-bridge half is
//! tests/hardening.rs): real i2pd (tests/common/i2pd.rs), the real i2psocks, real curl.
//!
//! [`concurrent_streams`]: 10 curl processes at once through i2psocks to the local site, each
//! fetching a different `/bytes/<n>` of 1-2 MiB, all byte-exact by sha256. i2pd only: its
//! streaming runs at ~9 MiB/s here, emissary's at ~20 KiB/s. The router restart under a
//! running proxy runs on every router (tests/e2e/cases.rs).

use crate::common::http::{expected_sha256, sha256_hex};
use crate::common::i2pd::{curl, Router};
use crate::common::proxy::Proxy;
use crate::common::router::RealRouter;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

/// Concurrent streams of [`concurrent_streams`].
const STREAMS: usize = 10;
/// Their sizes: 1 MiB + k * STEP, all distinct, up to ~1.9 MiB.
const STEP: usize = 99_991;
/// One stream's curl `--max-time`, seconds (10 × ~1.5 MiB at i2pd's ~9 MiB/s takes ~2 s).
const STREAM_MAX_TIME: &str = "120";

/// 10 curls at once, each a different size, each byte-exact.
pub fn concurrent_streams(router: &Router, proxy: &Proxy) {
    let p = proxy.addr().to_string();
    let start = Arc::new(Barrier::new(STREAMS));
    let t = Instant::now();
    let workers: Vec<_> = (0..STREAMS)
        .map(|k| {
            let n = (1 << 20) + k * STEP;
            let url = format!("http://{}/bytes/{n}", router.site_b32());
            let (p, start) = (p.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                let out = curl(&["--socks5-hostname", &p, "--max-time", STREAM_MAX_TIME, &url]);
                (n, out, t.elapsed())
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        let (n, out, took) = w.join().unwrap();
        assert!(
            out.status.success(),
            "stream of {n} B: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), n, "stream of {n} B: length");
        assert_eq!(sha256_hex(&out.stdout), expected_sha256(n), "stream of {n} B: sha256");
        eprintln!("  stream of {n} B in {took:?}");
        total += n;
    }
    let took = t.elapsed();
    eprintln!(
        "{STREAMS} concurrent streams, {total} B byte-exact through i2psocks in {took:?} ({:.1} MiB/s)",
        total as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
}
