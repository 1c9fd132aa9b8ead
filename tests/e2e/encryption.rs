//! `--encryption` against the real i2pd 2.45.1 (tests/common/i2pd.rs), which negotiates SAM
//! 3.1 and exits when a SESSION CREATE asks for encryption type 6. The default setup has
//! built a dozen sessions on it by the time this runs: the router is still up and its log
//! has no word of type 6. `--encryption pq` makes no session at all (no SESSION CREATE is
//! sent), warns, refuses clients with 0x01, and `--check` exits 69.
//!
//! Part of `real_router()` in tests/e2e_i2pd.rs; it costs no SESSION CREATE.

use crate::common::i2pd::Router;
use crate::common::proxy::{bridge_args, run_to_exit, s5_reply, socks5_connect, Proxy};
use crate::common::router::RealRouter;
use std::time::{Duration, Instant};

/// How long the pq proxy gets to warn (its first attempt is at once).
const WARN_WAIT: Duration = Duration::from_secs(10);

pub fn run(router: &Router) {
    let log = std::fs::read_to_string(router.log_path()).unwrap_or_default();
    assert!(!log.contains("Crypto key type 6"), "i2pd was asked for type 6:\n{log}");
    let out = router.curl_via_i2pd(&[&format!("http://{}/", router.site_b32())]);
    assert!(out.status.success(), "the router stopped serving");

    let sam = router.sam_addr().to_string();
    let f = run_to_exit(&["-s", &sam, "--encryption", "pq", "--check"], WARN_WAIT);
    assert_eq!(f.status.code(), Some(69), "{f:?}");
    assert!(f.stderr.contains("SAM 3.1"), "{:?}", f.stderr);
    eprintln!("encryption: --check --encryption pq on i2pd 2.45: {}", f.stderr.trim());

    let p = Proxy::start(&bridge_args(&sam, &["--encryption", "pq"]));
    let warn = p.wait_for_line("post-quantum encryption is required", WARN_WAIT).expect("no warning");
    assert!(warn.contains("warn: "), "{warn}");
    let t = Instant::now();
    let (_s, reply) = socks5_connect(p.addr(), router.site_b32(), 80, None);
    assert_eq!(reply, s5_reply(1));
    assert!(t.elapsed() < Duration::from_secs(2), "refused after {:?}", t.elapsed());
    drop(p);
    let out = router.curl_via_i2pd(&[&format!("http://{}/", router.site_b32())]);
    assert!(out.status.success(), "the router stopped serving");
}
