//! End-to-end tests against the i2pd releases people run today, beside the 2.45.1 of
//! tests/e2e_i2pd.rs: Debian 13's 2.56 and Debian unstable's newest (2.58 or later; its
//! version is printed), both unpacked by tests/deps.sh and run offline on loopback like 2.45
//! (tests/common/i2pd.rs, [`Build`]). One `#[test]` per router, so the two run at the same
//! time; inside each, the router and the proxy's sessions are shared by the cases, run in
//! sequence.
//!
//! Each runs the cases every router runs (tests/e2e/cases.rs: CONNECT by address and name,
//! unknown targets, identities, SIGHUP, `--isolate client`, datagrams, the router restarted
//! under the proxy) and first checks the HELLO answers that set it apart. 2.56 negotiates
//! SAM 3.1 and exits on encryption type 6: `auto` must never send it there
//! (tests/e2e/encryption.rs, [`encryption::run`]). The newest negotiates 3.3 and has
//! post-quantum keys: it logs at info level so the test sees which key types each
//! destination got ([`encryption::post_quantum`]), and it runs the whole compatibility
//! matrix (tests/e2e/compat.rs), as the router users have.
//! Needs the packages of tests/deps.sh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "e2e/cases.rs"]
mod cases;
mod common;
#[path = "e2e/compat.rs"]
mod compat;
#[path = "e2e/encryption.rs"]
mod encryption;

use cases::{EchoPeer, IdentityProxies, Scale};
use common::i2pd::{Build, Router};
use common::proxy::Proxy;
use common::router::RealRouter;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sessions take ~12 s on these routers and build in parallel: a few of each kind.
const SCALE: Scale = Scale { credentials: 4, clients: 4 };
/// The oldest i2pd that negotiates SAM 3.3 and makes ML-KEM keys (its ChangeLog).
const NEWEST_AT_LEAST: (u32, u32) = (2, 58);
/// A HELLO reply's wait.
const HELLO_WAIT: Duration = Duration::from_secs(10);

#[test]
fn i2pd_2_56() {
    let t0 = Instant::now();
    let mut router = Router::start_shared(Build::Trixie, "error");
    eprintln!("{} up in {:?}", router.label(), t0.elapsed());
    // Its version matching takes the lowest version both sides know.
    assert_eq!(hello(&router, "3.0", "3.3"), "3.0");
    assert_eq!(hello(&router, "3.1", "3.3"), "3.1");

    let mut proxy = cases::start_proxy(&router, &[]);
    let peer = EchoPeer::start(&router);
    everyone(&mut router, &mut proxy, &peer, |router, _| encryption::run(router));
    peer.stop();
    finish(router, proxy, t0);
}

#[test]
fn i2pd_newest() {
    let t0 = Instant::now();
    let release = Build::Sid.release();
    assert!(
        release >= NEWEST_AT_LEAST,
        "Debian unstable's i2pd is {release:?}, older than {NEWEST_AT_LEAST:?}"
    );
    let mut router = Router::start_shared(Build::Sid, "info");
    eprintln!("{} up in {:?}", router.label(), t0.elapsed());
    assert_eq!(hello(&router, "3.0", "3.3"), "3.3");
    assert_eq!(hello(&router, "3.1", "3.3"), "3.3");

    let mut proxy = cases::start_proxy(&router, &[]);
    let peer = EchoPeer::start(&router);
    everyone(&mut router, &mut proxy, &peer, |router, proxy| {
        encryption::post_quantum(router, proxy);
        compat::run(router, proxy, compat::Clients::All);
    });
    peer.stop();
    finish(router, proxy, t0);
}

/// The cases every router runs, with `own` (this router's) before the restart.
fn everyone(router: &mut Router, proxy: &mut Proxy, peer: &EchoPeer, own: impl FnOnce(&Router, &Proxy)) {
    cases::connect(router, proxy);
    cases::identities(router, proxy, IdentityProxies::start(router, SCALE), SCALE);
    cases::datagrams(router, proxy, peer);
    own(router, proxy);
    // Last: the router restarts under the proxy.
    cases::router_restarted(router, proxy);
}

/// The proxy first (its SAM sessions close), then the router, which must stop on SIGTERM.
fn finish(mut router: Router, proxy: Proxy, t0: Instant) {
    drop(proxy);
    let stopped = router.stop();
    eprintln!("{} cases done in {:?}; stopped {stopped:?}", router.label(), t0.elapsed());
    assert!(stopped.graceful, "{} needed SIGKILL: {stopped:?}", router.label());
}

/// The VERSION a fresh SAM socket gets for `HELLO VERSION MIN=<min> MAX=<max>`.
fn hello(router: &Router, min: &str, max: &str) -> String {
    let mut s = TcpStream::connect(router.sam_addr()).unwrap();
    s.set_read_timeout(Some(HELLO_WAIT)).unwrap();
    s.write_all(format!("HELLO VERSION MIN={min} MAX={max}\n").as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    eprintln!("{}: HELLO VERSION MIN={min} MAX={max} -> {line}", router.label());
    common::i2p::param(&line, "VERSION").unwrap_or_else(|| panic!("no VERSION in {line}")).to_string()
}
