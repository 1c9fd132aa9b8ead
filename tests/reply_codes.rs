//! Black-box tests of the replies to STREAM CONNECT refusals that carry no clear reason,
//! against the fake SAM bridge (tests/common/fake_sam.rs) scripted the way emissary 0.4
//! answers: a close after the command without a byte (an unknown name, no address book),
//! `I2P_ERROR` (an unknown name with one), `STREAM STATUS RESULT=CANT_REACH_PEER` cut off by
//! the close without a newline (an unknown `.b32.i2p`), a close right after HELLO.
//!
//! The proxy then asks a NAMING LOOKUP on the client's own session's control socket, never
//! on a socket of its own (i2pd would answer from its shared destination), and the answer
//! picks the reply: unknown → 04; known → 04 for a close, 01 for I2P_ERROR; no answer by the
//! connect deadline → 06; the session gone meanwhile → 01. Not here: the plain RESULT table
//! (tests/fake_bridge.rs) and the real routers (tests/e2e_emissary.rs, tests/e2e_i2pd.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{Fault, Outcome, Script, WAIT};
use common::i2p::{b32_name, make_dest};
use common::proxy::*;
use common::setup::setup;
use std::time::{Duration, Instant};

/// Every answer here that needs no deadline comes this fast (the fake answers at once).
const PROMPT: Duration = Duration::from_millis(1500);

/// SOCKS5 CONNECT to `host` (with `creds`): the REP byte, and how long it took.
fn rep(p: &Proxy, host: &str, creds: Option<(&str, &str)>) -> (u8, Duration) {
    let t = Instant::now();
    let (mut s, reply) = socks5_connect(p.addr(), host, 80, creds);
    let took = t.elapsed();
    assert!(closed_within(&mut s, Duration::from_secs(2), 0), "{host}: not closed after {reply:02x?}");
    (reply[1], took)
}

/// Each unclear refusal with each lookup answer, on the default session; the lookups go
/// on that session's control connection only, and only for the unclear ones.
#[test]
fn unclear_refusals_are_asked_about() {
    let known = make_dest(1).0;
    let script = Script::default()
        .lookup_miss(Some("KEY_NOT_FOUND"))
        .name("known-close.i2p", &known)
        .name("known-error.i2p", &known)
        .outcome("unknown-close.i2p", Outcome::Close)
        .outcome("known-close.i2p", Outcome::Close)
        .outcome("unknown-error.i2p", Outcome::Fail("I2P_ERROR".into(), None))
        .outcome("known-error.i2p", Outcome::Fail("I2P_ERROR".into(), None))
        .outcome(&b32_name("unterminated"), Outcome::Unterminated("CANT_REACH_PEER".into()))
        .outcome(&b32_name("odd"), Outcome::Unterminated("WHATEVER".into()));
    let (fake, p) = setup(script, &["--connect-timeout", "5"]);
    let cases: [(&str, u8, bool); 6] = [
        ("unknown-close.i2p", 0x04, true),
        ("known-close.i2p", 0x04, true),
        ("unknown-error.i2p", 0x04, true),
        ("known-error.i2p", 0x01, true),
        (&b32_name("unterminated"), 0x04, false),
        (&b32_name("odd"), 0x01, false),
    ];
    for (host, want, _) in &cases {
        let (got, took) = rep(&p, host, None);
        assert_eq!(got, *want, "{host}");
        assert!(took < PROMPT, "{host}: took {took:?}");
    }
    let control = fake.sessions()[0].conn;
    let asked: Vec<(usize, String)> =
        cases.iter().filter(|c| c.2).map(|c| (control, c.0.to_string())).collect();
    assert_eq!(fake.lookups_on(), asked);
    assert!(fake.other_lines().is_empty(), "a command on a session-less socket: {:?}", fake.other_lines());
    // The session is still the one it was.
    assert_eq!(fake.sessions().len(), 1);
    assert_eq!(fake.live_sessions(), 1);
}

/// i2pd's "not found" (INVALID_KEY) counts as unknown too; a credentialed client's lookup
/// goes on its own identity's session, not the default one.
#[test]
fn lookup_on_the_clients_own_session() {
    let script = Script::default().default_outcome(Outcome::Close);
    let (fake, p) = setup(script, &["--connect-timeout", "5"]);
    assert_eq!(rep(&p, "nobody.i2p", Some(("app1", "x"))).0, 0x04);
    assert_eq!(rep(&p, "nobody-else.i2p", None).0, 0x04);
    let sessions = fake.sessions();
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        fake.lookups_on(),
        vec![(sessions[1].conn, "nobody.i2p".to_string()), (sessions[0].conn, "nobody-else.i2p".to_string())]
    );
}

/// A bridge that closes right after HELLO, before reading the command (the command may then
/// meet a reset instead of the close): the same question, the same answers.
#[test]
fn close_right_after_hello() {
    let known = make_dest(2).0;
    let (fake, p) = setup(Script::default().name("known.i2p", &known), &["--connect-timeout", "5"]);
    fake.set_fault(Some(Fault::CloseAfterHello));
    for _ in 0..5 {
        assert_eq!(rep(&p, "unknown.i2p", None).0, 0x04);
        assert_eq!(rep(&p, "known.i2p", None).0, 0x04);
    }
    assert_eq!(fake.lookups().len(), 10);
    assert!(fake.streams().is_empty(), "the fake read no STREAM CONNECT");
}

/// A lookup that is never answered ends at the connect deadline (06); the session and the
/// next client are fine.
#[test]
fn unanswered_lookup_hits_the_deadline() {
    let script = Script::default().lookup_miss(None).outcome("silent.i2p", Outcome::Close);
    let (fake, p) = setup(script, &["--connect-timeout", "2"]);
    let (got, took) = rep(&p, "silent.i2p", None);
    assert_eq!(got, 0x06);
    assert!(took >= Duration::from_millis(1800) && took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(fake.lookups(), vec!["silent.i2p".to_string()]);
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("fine"), 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"still fine", IO_TIMEOUT), b"still fine");
}

/// The session dies between the close and the lookup (the router went away): 01, as for
/// any client of a session that is down, and the proxy rebuilds it.
#[test]
fn session_gone_before_the_lookup() {
    let late_close = Outcome::Delayed(Duration::from_millis(600), Box::new(Outcome::Close));
    let (fake, p) = setup(Script::default().outcome("late.i2p", late_close), &["--connect-timeout", "5"]);
    let addr = p.addr();
    let client = std::thread::spawn(move || {
        let (_s, reply) = socks5_connect(addr, "late.i2p", 80, None);
        reply[1]
    });
    assert!(fake.wait_streams(1, WAIT));
    fake.kill_sessions();
    assert_eq!(client.join().unwrap(), 0x01);
    assert!(fake.lookups().is_empty(), "asked a dead session");
    assert!(fake.wait_sessions(2, WAIT), "the session was not rebuilt");
}
