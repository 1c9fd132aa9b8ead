//! SOCKS5 UDP ASSOCIATE against a real I2P router (Debian's i2pd, offline on loopback; see
//! tests/common/i2pd.rs): the datagram case every router runs (tests/e2e/cases.rs; on
//! emissary in tests/e2e_emissary.rs). A SAM DATAGRAM session held by the test echoes every
//! datagram it receives; datagrams sent through i2psocks right after UDP ASSOCIATE, then 100
//! more and a few of the largest size, must each come back intact, the sender shown as the
//! echo's b32; PySocks does the same once. A router of its own, apart from tests/e2e_i2pd.rs:
//! with the datagram sessions beside that test's many stream sessions, i2pd 2.45 dropped
//! every SAM socket at once now and then. One `#[test]`: i2pd 2.45 takes ~20 s per session,
//! and four are needed (the echo, the proxy's default identity and spare, its datagram
//! session).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "e2e/cases.rs"]
mod cases;
mod common;

use cases::EchoPeer;
use common::i2pd::{Build, Router};
use std::time::Instant;

#[test]
fn real_router_udp() {
    let t0 = Instant::now();
    let mut router = Router::start_shared(Build::System, "error");
    eprintln!("router up in {:?}", t0.elapsed());

    // The proxy's default session and the echo's session are built at the same time.
    let proxy = cases::start_proxy(&router, &["-v"]);
    let peer = EchoPeer::start(&router);
    cases::ready(&proxy);
    eprintln!("sessions ready at {:?}", t0.elapsed());
    cases::datagrams(&router, &proxy, &peer);

    drop(proxy); // close its SAM sessions before stopping the router
    peer.stop();
    let stopped = router.stop();
    assert!(stopped.graceful, "i2pd needed SIGKILL: {stopped:?}");
}
