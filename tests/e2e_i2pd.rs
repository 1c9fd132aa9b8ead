//! End-to-end tests against a real I2P router (Debian's i2pd, offline on loopback; see
//! tests/common/i2pd.rs). One `#[test]` on purpose: the router and its ~20 s session setups
//! are shared by every case, run in sequence inside it. Needs `i2pd` and `curl`
//! (tests/deps.sh). Baseline first: the fixture services through i2pd's own SOCKS proxy.
//! Then the cases every router runs (tests/e2e/cases.rs, also on emissary in
//! tests/e2e_emissary.rs; the datagram one in tests/e2e_udp.rs, on a router of its own)
//! beside the ones that need i2pd's speed or its server tunnels: a
//! 10 MiB download, tests/e2e/listeners.rs (a second proxy with two TCP listeners and a
//! Unix socket, started beside the first so their sessions build together),
//! tests/e2e/spares.rs (two more proxies beside them, one in a thread while the
//! compatibility matrix, tests/e2e/compat.rs, runs), tests/e2e/encryption.rs (the router
//! never got type 6). After the matrix, the status report's counts are checked against
//! known traffic, and the persistent identities' proxy (started before the matrix, so that
//! its sessions build meanwhile) is checked and restarted. Last, concurrent streams (tests/e2e/faults.rs), then the router
//! restarted under the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "e2e/cases.rs"]
mod cases;
mod common;
#[path = "e2e/compat.rs"]
mod compat;
#[path = "e2e/encryption.rs"]
mod encryption;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/listeners.rs"]
mod listeners;
#[path = "e2e/spares.rs"]
mod spares;

use cases::{curl_ok, IdentityProxies, Scale};
use common::http::{expected_sha256, sha256_hex, MARKER};
use common::i2p::{b64_decode, b64_encode, public_len};
use common::i2pd::{socks5_stream, Build, Router};
use common::proxy::Proxy;
use common::rng::random_bytes;
use common::router::RealRouter;
use common::sam_client::Sam;
use common::status;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Size of the bulk download checked byte for byte.
const BULK: usize = 1 << 20;
/// Each identity costs a 20 s SESSION CREATE on i2pd 2.45: credentials only. `--isolate
/// client` and SIGHUP are tests/e2e/spares.rs's here; with their proxies, and the datagram
/// sessions, on this router too, i2pd 2.45 dropped every SAM socket at once now and then.
const SCALE: Scale = Scale { credentials: 2, clients: 0 };

#[test]
fn real_router() {
    let t0 = Instant::now();
    let mut router = Router::start_shared(Build::System, "error");
    eprintln!("router up in {:?}", t0.elapsed());

    baseline_site(&router);
    baseline_echo(&router);
    sam_basics(&router);

    // i2psocks on the same router: the proxy under test, one with several listeners and the
    // spares' own two, whose sessions build meanwhile.
    let several = listeners::start(&router);
    let mut spares = spares::Spares::start(&router);
    let mut proxy = cases::start_proxy(&router, &[]);
    let others = IdentityProxies::start(&router, SCALE);
    spares.idle_cost(&router);
    let isolating = spares.isolate_client(&router);
    spares.new_credentials(&router);
    cases::connect(&router, &proxy);
    bulk(&router, &proxy);
    // Its credentialed sessions build alongside the identity cases' own.
    let pending = listeners::begin(&router, &several);
    cases::identities(&router, &proxy, others, SCALE);
    let t = Instant::now();
    listeners::run(&router, &several, pending);
    eprintln!("several listeners checked in {:?} after the identity cases", t.elapsed());
    router.retire(several.proxy);
    // Its five sessions build while the matrix runs.
    let persistent = cases::PersistentProxy::start(&router);
    compat::run(&router, &proxy, compat::Clients::Smoke);
    status_matches_traffic(&router, &proxy);
    spares.sighup(&router);
    let (burst, isolating) = isolating.join().expect("the --isolate client run");
    eprintln!("spares: burst first bytes {burst:?}");
    router.retire(isolating);
    spares.retire(&router);
    let timing = cases::persistent(&router, persistent);
    eprintln!("persistent identities: {timing:?}");
    encryption::run(&router);
    faults::concurrent_streams(&router, &proxy);
    // Last: it restarts the router under the proxy.
    cases::router_restarted(&mut router, &mut proxy);
    drop(proxy); // close its SAM sessions before stopping the router

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
    let mut s =
        socks5_stream(router.socks_addr(), router.echo_name(), 7).expect("SOCKS5 CONNECT echo.i2p via i2pd");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let msg = random_bytes(50_000, 251);
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
    assert_eq!(b64_encode(&key[..public_len(&key).expect("a whole public destination")]), public);
}

/// 10 MiB through i2psocks, byte for byte.
fn bulk(router: &Router, proxy: &Proxy) {
    const TEN_MIB: usize = 10 << 20;
    let p = proxy.addr().to_string();
    let t = Instant::now();
    let url = format!("http://{}/bytes/{TEN_MIB}", router.site_b32());
    let body = curl_ok(&["--socks5-hostname", &p, "--max-time", "120", &url]);
    assert_eq!(body.len(), TEN_MIB);
    assert_eq!(sha256_hex(&body), expected_sha256(TEN_MIB));
    eprintln!("10 MiB through i2psocks in {:?}", t.elapsed());
}

/// After the compatibility matrix: the status report's stream and byte counts move by
/// exactly what two known exchanges move through the proxy (an echo, and an HTTP GET
/// read to its end).
fn status_matches_traffic(router: &Router, proxy: &Proxy) {
    const ASK: Duration = Duration::from_secs(10);
    // Streams of the matrix may still be ending (a held FIN lasts --half-close-wait).
    let quiet = |since: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = status::ask(proxy, ASK);
            if r.count("streams", "now") == 0 && r.count("streams", "since start") >= since {
                return r;
            }
            assert!(Instant::now() < deadline, "streams still open: {:?}", r.0);
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let before = quiet(0);

    let msg = random_bytes(123_457, 17);
    let mut s = socks5_stream(proxy.addr(), router.echo_b32(), 7).expect("echo via i2psocks");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
    drop(s);

    let request = format!("GET /bytes/65536 HTTP/1.0\r\nHost: {}\r\n\r\n", router.site_b32());
    let mut s = socks5_stream(proxy.addr(), router.site_b32(), 80).expect("site via i2psocks");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.") && response.len() > 65536, "{} bytes", response.len());
    drop(s);

    let after = quiet(before.count("streams", "since start") + 2);
    let delta = |label: &str| after.count("streams", label) - before.count("streams", label);
    assert_eq!(delta("since start"), 2, "{:?}", after.0);
    assert_eq!(delta("bytes out"), (msg.len() + request.len()) as u64, "{:?}", after.0);
    assert_eq!(delta("bytes in"), (msg.len() + response.len()) as u64, "{:?}", after.0);
    assert_eq!(delta("failed to open"), 0);
    eprintln!("status report after the matrix: {:?}", after.0);
}
