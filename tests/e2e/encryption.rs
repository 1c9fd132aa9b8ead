//! `--encryption` against real i2pd routers (tests/common/i2pd.rs), as the routers see it.
//!
//! [`run`]: on i2pd 2.45.1 and 2.56.0, which negotiate SAM 3.1 and exit when a SESSION CREATE
//! asks for encryption type 6. The default setup has built a dozen sessions on the router by
//! the time this runs: it is still up and its log has no word of type 6. `--encryption pq`
//! makes no session at all (no SESSION CREATE is sent), warns, refuses clients with 0x01, and
//! `--check` exits 69. It costs no SESSION CREATE.
//!
//! [`post_quantum`]: on the newest i2pd (SAM 3.3, ML-KEM), started logging at info level,
//! where i2pd names the key types it makes for each local destination (`Creating new
//! temporary keys of type 6 for address <b32>`): the default proxy's destinations (`auto`)
//! get type 6, a `--encryption classic` proxy's do not, and a stream and a datagram round
//! trip between the proxy and peers of type 6 (LeaseSet2, `6,4,0`) carry data.

// Each test binary that includes this file runs some of it.
#![allow(dead_code)]

use crate::cases::{self, EchoPeer};
use crate::common::i2p::{b32_of_blob, b64_decode};
use crate::common::i2pd::{socks5_stream, Router};
use crate::common::proxy::{bridge_args, run_to_exit, s5_reply, socks5_connect, Proxy};
use crate::common::rng::random_bytes;
use crate::common::router::RealRouter;
use crate::common::sam_client::{Sam, ZERO_HOPS};
use crate::common::sam_forward::{publish, Backend};
use crate::common::udp_client::{udp_echo_roundtrip, Echo};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// How long the pq proxy gets to warn (its first attempt is at once).
const WARN_WAIT: Duration = Duration::from_secs(10);
/// SESSION CREATE options of a post-quantum peer: zero hops and a LeaseSet2 (the default
/// store type) offering ML-KEM-768 + X25519 first.
const PQ_PEER: &str = "i2cp.leaseSetEncType=6,4,0";
/// How long after a session is ready its key line may take to reach the router's log.
const LOG_WAIT: Duration = Duration::from_secs(10);
/// Bytes echoed through the type-6 stream.
const PQ_ECHO: usize = 100_000;
/// Per-datagram echo wait on the type-6 datagram round trip: the first one may wait for the
/// proxy's datagram session to be built (~12 s).
const ECHO_WAIT: Duration = Duration::from_secs(30);
/// Before the type-6 round trip, one datagram is sent until it comes back: this long per
/// send (the echo of a working pair takes milliseconds; the first send may wait for the
/// datagram session's build, ~12 s), each call sending up to three times, WARM_TRIES calls.
const WARM_WAIT: Duration = Duration::from_secs(5);
const WARM_TRIES: usize = 8;
/// What i2pd 2.59 logs (at warn) when it drops a later New Session Reply from a type-6 peer,
/// and the datagram in it (doc/i2pd-pq-nsr.md).
const PQ_NSR_FAULT: &str = "Reply ML-KEM ciphertext section AEAD decryption failed";

/// The key types i2pd logged for the local destination `b32` (`<52 chars>.b32.i2p`), from its
/// info-level lines `Creating new temporary keys of type N for address <b32>`.
pub fn key_types(router: &Router, b32: &str) -> Vec<u32> {
    let log = std::fs::read_to_string(router.log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(b32))
        .filter_map(|l| l.split("keys of type ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// [`key_types`] once the log has the line for `b32`, within [`LOG_WAIT`].
fn logged_types(router: &Router, b32: &str) -> Vec<u32> {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let types = key_types(router, b32);
        if !types.is_empty() || Instant::now() > deadline {
            return types;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How often the router logged the type-6 reply fault, for a failure message to point at it.
fn nsr_faults(router: &Router) -> String {
    let log = std::fs::read_to_string(router.log_path()).unwrap_or_default();
    format!("the router logged {PQ_NSR_FAULT:?} {} times", log.matches(PQ_NSR_FAULT).count())
}

pub fn run(router: &Router) {
    let log = std::fs::read_to_string(router.log_path()).unwrap_or_default();
    assert!(!log.contains("Crypto key type 6"), "i2pd was asked for type 6:\n{log}");
    let out = router.curl_via_i2pd(&[&format!("http://{}/", router.site_b32())]);
    assert!(out.status.success(), "the router stopped serving");

    let sam = router.sam_addr().to_string();
    let f = run_to_exit(&["-s", &sam, "--encryption", "pq", "--check"], WARN_WAIT);
    assert_eq!(f.status.code(), Some(69), "{f:?}");
    assert!(f.stderr.contains("SAM 3.1"), "{:?}", f.stderr);
    eprintln!("encryption: --check --encryption pq on {}: {}", router.label(), f.stderr.trim());

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

/// Post-quantum destinations on the newest i2pd, seen from the router (see the module doc).
/// `proxy` runs with the default `--encryption auto`.
pub fn post_quantum(router: &Router, proxy: &Proxy) {
    let default = cases::ready(proxy);
    let types = logged_types(router, &default);
    assert!(types.contains(&6), "{}: the auto proxy's destination got key types {types:?}", router.label());
    eprintln!("encryption: {} made key types {types:?} for the default identity (auto)", router.label());

    let classic = cases::start_proxy(router, &["--encryption", "classic"]);
    let plain = cases::ready(&classic);
    assert_eq!(cases::source_b32(router, &["--socks5-hostname", &classic.addr().to_string()]), plain);
    let types = logged_types(router, &plain);
    assert!(!types.contains(&6), "{}: --encryption classic made key types {types:?}", router.label());
    eprintln!("encryption: {} made key types {types:?} for a --encryption classic identity", router.label());
    router.retire(classic);

    // A stream to a type-6 service published here (an echo behind STREAM FORWARD).
    let options = format!("{ZERO_HOPS} {PQ_PEER}");
    let (_, key) =
        Sam::connect(router.sam_addr()).and_then(|mut s| s.dest_generate()).expect("DEST GENERATE");
    let service = b32_of_blob(&b64_decode(&key).unwrap()).unwrap();
    let _published = publish(router.sam_addr(), &key, &options, Backend::Raw(router.echo.addr()))
        .expect("a type-6 service");
    let types = logged_types(router, &service);
    assert!(types.contains(&6), "the type-6 service got key types {types:?}");
    let t = Instant::now();
    let mut s = socks5_stream(proxy.addr(), &service, 7).expect("CONNECT to the type-6 service");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let msg = random_bytes(PQ_ECHO, 66);
    s.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert!(back == msg, "the type-6 stream altered the echo");
    eprintln!("encryption: {PQ_ECHO} B echoed between type-6 destinations in {:?}", t.elapsed());
    drop(s);

    // Datagrams to a type-6 peer, from the datagram session of a proxy of its own (auto: type 6
    // too). A fresh one: on i2pd 2.59 a datagram session that had served another peer once sent
    // nothing to this new one for 90 s.
    let proxy = cases::start_proxy(router, &[]);
    let peer = EchoPeer::start_with(router, &options);
    let types = logged_types(router, &peer.b32);
    assert!(types.contains(&6), "the type-6 datagram peer got key types {types:?}");
    let e = Echo {
        target: &peer.b32,
        port: 7,
        sender: Some(&peer.b32),
        count: 10,
        size: 1024,
        timeout: ECHO_WAIT,
    };
    let t = Instant::now();
    // i2pd 2.59 drops a type-6 peer's answers after its first New Session Reply until the
    // client sends again (doc/i2pd-pq-nsr.md): a user's program sees its first datagrams
    // unanswered. One datagram is sent, and sent again every few seconds, until an echo
    // comes back; only then is the round trip of ten checked.
    let warm = Echo { count: 1, timeout: WARM_WAIT, ..e };
    let mut warmed = Err(String::new());
    for _ in 0..WARM_TRIES {
        warmed = udp_echo_roundtrip(proxy.addr(), None, &warm);
        if warmed.is_ok() {
            break;
        }
    }
    if let Err(err) = warmed {
        panic!("no datagram came back from the type-6 peer: {err}; {}", nsr_faults(router));
    }
    eprintln!("encryption: the type-6 peer's first echo came back after {:?}", t.elapsed());
    let report = udp_echo_roundtrip(proxy.addr(), None, &e).unwrap_or_else(|err| {
        panic!("datagrams between type-6 destinations: {err:?}; {}", nsr_faults(router))
    });
    assert_eq!(report.sent, 10);
    let line = proxy.wait_for_line("I2P datagram destination ready", LOG_WAIT).expect("the datagram session");
    let dgram = line.split_whitespace().find(|w| w.ends_with(".b32.i2p")).expect("its address").to_string();
    let types = logged_types(router, &dgram);
    assert!(types.contains(&6), "the proxy's datagram destination got key types {types:?}");
    eprintln!("encryption: 10 datagrams echoed between type-6 destinations in {:?}", t.elapsed());
    peer.stop();
    router.retire(proxy);
}
