//! End-to-end tests against a real I2P router (Debian's i2pd, offline on loopback; see
//! tests/common/i2pd.rs). One `#[test]` on purpose: the router and its ~20 s session setups
//! are shared by every case, run in sequence inside it. Needs `i2pd` and `curl`
//! (tests/deps.sh). Baseline first: the fixture services through i2pd's own SOCKS proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::http::{expected_sha256, sha256_hex, MARKER};
use common::i2pd::Router;
use common::sam_client::{b64_decode, b64_encode, public_dest_len, Sam};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Size of the bulk download checked byte for byte.
const BULK: usize = 1 << 20;

#[test]
fn real_router() {
    let t0 = Instant::now();
    let mut router = Router::start();
    eprintln!("router up in {:?}", t0.elapsed());

    baseline_site(&router);
    baseline_echo(&router);
    sam_basics(&router);

    let stopped = router.stop();
    eprintln!("router stopped: {stopped:?}");
    assert!(stopped.graceful, "i2pd needed SIGKILL: {stopped:?}");
}

/// The site by b32 and by address-book name, and a 1 MiB download, via i2pd's SOCKS.
fn baseline_site(router: &Router) {
    for host in [router.site_b32(), router.site_name()] {
        let out = router.curl_via_i2pd(&[&format!("http://{host}/")]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body.contains(MARKER),
            "GET http://{host}/ via i2pd SOCKS: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t = Instant::now();
    let url = format!("http://{}/bytes/{BULK}", router.site_b32());
    let out = router.curl_via_i2pd(&[&url]);
    assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), BULK);
    assert_eq!(sha256_hex(&out.stdout), expected_sha256(BULK));
    eprintln!("1 MiB through i2pd SOCKS in {:?}", t.elapsed());
    let out = router.curl_via_i2pd(&[&format!("http://{}/echo-headers", router.site_b32())]);
    let headers = String::from_utf8_lossy(&out.stdout);
    assert!(headers.contains("X-I2P-DestB32:"), "headers seen by the site: {headers}");
    let seen = router.http.dest_b32s();
    assert!(!seen.is_empty(), "site saw no X-I2P-DestB32 header");
    assert!(seen.iter().all(|b| b.ends_with(".b32.i2p") && b.len() == 60), "{seen:?}");
}

/// The echo service by name through i2pd's SOCKS (no half-close: i2pd 2.45 drops data).
fn baseline_echo(router: &Router) {
    let mut s = common::i2pd::socks5_connect(router.socks_addr(), router.echo_name(), 7)
        .expect("SOCKS5 CONNECT echo.i2p via i2pd");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let msg: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// Session-less SAM commands (no 20 s session wait): the address book and key generation.
fn sam_basics(router: &Router) {
    let mut sam = Sam::connect(router.sam_addr()).expect("SAM HELLO");
    let site = sam.naming_lookup(router.site_name()).expect("lookup testsite.i2p");
    assert_eq!(site, router.site_dest_b64());
    let echo = sam.naming_lookup(router.echo_name()).expect("lookup echo.i2p");
    assert_eq!(echo, router.echo_dest_b64());
    assert!(sam.naming_lookup("no-such-site.i2p").is_err());
    let (public, private) = sam.dest_generate().expect("DEST GENERATE");
    let key = b64_decode(&private).expect("PRIV is I2P base64");
    assert_eq!(b64_encode(&key[..public_dest_len(&key)]), public);
}
