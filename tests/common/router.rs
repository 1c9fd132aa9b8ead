//! What the end-to-end cases (tests/e2e/cases.rs) need of a real router, whichever runs them:
//! Debian's i2pd (tests/common/i2pd.rs) or the two-router emissary network
//! (tests/common/emissary.rs).
//!
//! Both publish the same two local services under the same fixture keys (tests/fixtures/README),
//! so the same addresses and address-book names reach them: an HTTP site that shows the
//! client's destination in an `X-I2P-DestB32` header, and a TCP echo. What differs between
//! the routers is said here, as methods: the tunnel length they build offline, the options a
//! session held by a test needs, how much a datagram and a quick stream may carry, and how
//! the whole router (both routers, for emissary) goes down and comes back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::i2p::b32_of_blob;
use super::proxy::Proxy;
use std::net::SocketAddr;
use std::path::Path;

/// The fixture site's address (tests/fixtures/README); checked against site.dat at start.
pub const SITE_B32: &str = "fg3kfzacq4hbmewlxs4iczdupwtes65cby2sqok5lz7h7i2mau4a.b32.i2p";
/// The fixture echo service's address; checked against echo.dat at start.
pub const ECHO_B32: &str = "vidbb2wrq6qnjlqu5aty6aawtlopa2tad64qqqrzaxkvdtr6johq.b32.i2p";
/// The site's name in the router's address book.
pub const SITE_NAME: &str = "testsite.i2p";
/// The echo service's name in the router's address book.
pub const ECHO_NAME: &str = "echo.i2p";

/// A running router with the two fixture services behind it.
pub trait RealRouter {
    /// Name and version, for messages and tables: `i2pd 2.45.1`.
    fn label(&self) -> &'static str;

    /// The SAM v3 bridge (TCP).
    fn sam_addr(&self) -> SocketAddr;

    /// The SAM datagram port (UDP): the TCP port - 1 on both, the proxy's default.
    fn sam_udp_addr(&self) -> SocketAddr;

    /// The tunnel length the router builds offline: the proxy's `--hops`.
    fn hops(&self) -> u8;

    /// SESSION CREATE options (after SIGNATURE_TYPE) for a session a test holds as a peer.
    fn peer_options(&self) -> String;

    /// The largest datagram payload that arrives whole.
    fn max_datagram(&self) -> usize;

    /// Bytes one stream carries in well under a second (emissary's streaming is slow).
    fn quick_stream(&self) -> usize;

    /// Whether datagrams get lost even here on loopback, so a test must send them again.
    fn loses_datagrams(&self) -> bool;

    /// Whether the router sometimes keeps the last bytes or the close of a stream from a SAM
    /// client (doc/i2pd-stream-end.md), so a transfer that stops short after a correct prefix
    /// is that named fault rather than a proxy failure.
    fn loses_stream_ends(&self) -> bool;

    /// Whether the router sometimes answers CANT_REACH_PEER to a session built a moment
    /// before, for a site every other session reaches (the newest i2pd: once in 589 requests
    /// of tests/soak.rs, once in an identity case; i2pd 2.56 once in an identity case), so
    /// that one request so answered may be asked again.
    fn refuses_a_new_sessions_connect(&self) -> bool;

    /// Stops the router (both routers of a network) at once, as a crash or an admin would.
    fn stop_all(&mut self);

    /// Starts it again on the same ports, keys and address book after [`RealRouter::stop_all`],
    /// and returns once the fixture services answer again.
    fn start_all_again(&mut self);

    /// Takes a proxy a case is done with. Stopping it here closes its SAM sessions, which is
    /// harmless on emissary; i2pd keeps it running until the router stops instead.
    fn retire(&self, proxy: Proxy) {
        drop(proxy);
    }

    /// `<52 chars>.b32.i2p` of the HTTP site.
    fn site_b32(&self) -> &'static str {
        SITE_B32
    }

    /// `testsite.i2p`.
    fn site_name(&self) -> &'static str {
        SITE_NAME
    }

    /// `<52 chars>.b32.i2p` of the echo service.
    fn echo_b32(&self) -> &'static str {
        ECHO_B32
    }

    /// `echo.i2p`.
    fn echo_name(&self) -> &'static str {
        ECHO_NAME
    }
}

/// A fixture key file of tests/fixtures (an i2pd key file, which is also the SAM private-key
/// format), checked against the address it must have.
pub fn fixture_key(name: &str, b32: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let key = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        b32_of_blob(&key).as_deref(),
        Some(b32),
        "{} does not match tests/fixtures/README",
        path.display()
    );
    key
}
