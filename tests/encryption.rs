//! `--encryption`, black box: which `i2cp.leaseSetEncType` the real binary
//! sends in each SESSION CREATE (stream, spare and datagram sessions), as
//! recorded by the fake SAM bridge, for the SAM version the fake's HELLO
//! negotiates. A 3.1 bridge (i2pd up to 2.57, which may exit on type 6)
//! never gets type 6 by default; a 3.3 bridge gets `6,4,0`; a refusal of a
//! post-quantum create falls back to `4,0` once and for good; `pq` insists
//! and fails clearly; `classic` and a user's own option are sent as given.
//!
//! Not here: the decision table itself (unit tests in
//! src/sam/encryption.rs); the real i2pd 2.45 surviving the default setup
//! (every test in tests/e2e_i2pd.rs and tests/e2e_udp.rs would fail if it
//! got type 6: the router exits).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Script, WAIT};
use common::i2p::{b32_name, param};
use common::proxy::*;
use common::udp_client::associate;
use std::time::{Duration, Instant};

const EXIT_USAGE: i32 = 64;
const EXIT_UNAVAILABLE: i32 = 69;

/// A proxy on `fake` with `args`, as soon as it listens.
fn start(fake: &FakeSam, args: &[&str]) -> Proxy {
    let (sam, udp) = (fake.addr_arg(), fake.udp_arg());
    let mut all = vec!["--sam-udp", udp.as_str()];
    all.extend_from_slice(args);
    Proxy::start(&bridge_args(&sam, &all))
}

/// The `i2cp.leaseSetEncType` of every SESSION CREATE, with its style.
fn enc_types(fake: &FakeSam) -> Vec<(String, String)> {
    fake.creates()
        .iter()
        .map(|l| {
            let style = param(l, "STYLE").unwrap().to_string();
            let all: Vec<&str> = l.split(' ').filter(|w| w.starts_with("i2cp.leaseSetEncType=")).collect();
            assert!(all.len() <= 1, "the option twice: {l}");
            (style, param(l, "i2cp.leaseSetEncType").unwrap_or("").to_string())
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Default setup: a SAM 3.1 bridge gets `4,0` on the default identity's,
/// the spare's and the datagram session's create; a SAM 3.3 bridge gets
/// `6,4,0` on each.
#[test]
fn auto_follows_the_negotiated_version() {
    for (version, want) in [("3.1", "4,0"), ("3.2", "4,0"), ("3.3", "6,4,0")] {
        let fake = FakeSam::start(Script::default().version(version));
        let p = start(&fake, &[]);
        assert!(p.wait_for_nth_line(READY, 2, WAIT).is_some(), "{version}: default + spare");
        let a = associate(p.addr(), None).unwrap();
        assert!(fake.wait_dg_sessions(1, WAIT));
        let got = enc_types(&fake);
        assert_eq!(got.len(), 3, "{version}: {got:?}");
        assert!(got.iter().all(|(_, t)| t == want), "SAM {version}: {got:?}");
        assert_eq!(got.iter().filter(|(s, _)| s == "DATAGRAM").count(), 1);
        drop(a);
    }
}

/// A 3.3 bridge that refuses type 6 (`RESULT=I2P_ERROR`): the create is
/// tried once more with `4,0` on a new connection, one info line says so,
/// and later sessions (a new identity's, the datagram one) send `4,0` at once.
#[test]
fn auto_falls_back_once_when_refused() {
    let fake = FakeSam::start(Script::default().version("3.3").refuse_enc_type("6"));
    let p = start(&fake, &["--spare-sessions", "0"]);
    assert!(p.wait_for_line(READY, WAIT).is_some(), "no session after the fallback");
    let line = p.wait_for_line("refused a post-quantum session", Duration::ZERO).unwrap();
    assert!(line.contains("info: default identity: "), "{line}");
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("x"), 80, Some(("app1", "x")));
    assert_eq!(reply, S5_OK);
    send(&mut s, b"hi");
    expect_bytes(&mut s, b"hi", IO_TIMEOUT);
    let _a = associate(p.addr(), None).unwrap();
    assert!(fake.wait_dg_sessions(1, WAIT));
    assert_eq!(
        enc_types(&fake),
        pairs(&[("STREAM", "6,4,0"), ("STREAM", "4,0"), ("STREAM", "4,0"), ("DATAGRAM", "4,0")])
    );
    assert_eq!(p.count_lines("refused a post-quantum session"), 1);
    assert_eq!(fake.sessions().len(), 3, "two stream sessions and a datagram one");
}

/// `--encryption pq` against a SAM 3.1 bridge: no SESSION CREATE is sent
/// at all, each attempt is a warning that says why, clients get 0x01 at
/// once, and `--check` exits 69 with one line.
#[test]
fn pq_refuses_an_old_bridge() {
    let fake = FakeSam::start(Script::default());
    let p = start(&fake, &["--encryption", "pq"]);
    let warn = p.wait_for_line("post-quantum encryption is required", WAIT).unwrap();
    assert!(warn.contains("warn: ") && warn.contains("SAM 3.1") && warn.contains("SAM 3.3"), "{warn}");
    let t = Instant::now();
    let (_s, reply) = socks5_connect(p.addr(), &b32_name("pq"), 80, None);
    assert_eq!(reply, s5_reply(1));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(fake.creates().is_empty(), "a create reached a 3.1 bridge: {:?}", fake.creates());

    let f = run_to_exit(&["-s", &fake.addr_arg(), "--encryption", "pq", "--check"], WAIT);
    assert_eq!(f.status.code(), Some(EXIT_UNAVAILABLE), "{f:?}");
    assert_eq!(f.stderr.lines().count(), 1, "{:?}", f.stderr);
    assert!(f.stderr.contains("--encryption pq") && f.stderr.contains("SAM 3.1"), "{:?}", f.stderr);
    let fake33 = FakeSam::start(Script::default().version("3.3"));
    let f = run_to_exit(&["-s", &fake33.addr_arg(), "--encryption", "pq", "--check"], WAIT);
    assert_eq!(f.status.code(), Some(0), "{f:?}");
}

/// `--encryption pq` against a 3.3 bridge that refuses type 6: no fallback.
#[test]
fn pq_insists() {
    let fake = FakeSam::start(Script::default().version("3.3").refuse_enc_type("6"));
    let p = start(&fake, &["--encryption", "pq", "--spare-sessions", "0"]);
    assert!(p.wait_for_line("cannot create a SAM session", WAIT).is_some());
    let (_s, reply) = socks5_connect(p.addr(), &b32_name("pq"), 80, None);
    assert_eq!(reply, s5_reply(1));
    assert!(enc_types(&fake).iter().all(|(_, t)| t == "6,4,0"), "{:?}", enc_types(&fake));
    assert_eq!(p.count_lines("refused a post-quantum session"), 0);
}

/// `classic` sends `4,0` to a 3.3 bridge; a user's own option is sent once,
/// as given, with no negotiation; both together are a usage error.
#[test]
fn classic_and_user_option() {
    let fake = FakeSam::start(Script::default().version("3.3"));
    let p = start(&fake, &["--encryption", "classic", "--spare-sessions", "0"]);
    assert!(p.wait_for_line(READY, WAIT).is_some());
    assert_eq!(enc_types(&fake), pairs(&[("STREAM", "4,0")]));

    let fake = FakeSam::start(Script::default().version("3.3"));
    let p = start(&fake, &["--sam-option", "i2cp.leaseSetEncType=4", "--spare-sessions", "0"]);
    assert!(p.wait_for_line(READY, WAIT).is_some());
    assert_eq!(enc_types(&fake), pairs(&[("STREAM", "4")]));

    let f = run_to_exit(
        &["-l", "127.0.0.1:0", "--encryption", "auto", "--sam-option", "i2cp.leaseSetEncType=4"],
        WAIT,
    );
    assert_eq!(f.status.code(), Some(EXIT_USAGE), "{f:?}");
    assert!(f.stderr.contains("conflicts"), "{:?}", f.stderr);
}
