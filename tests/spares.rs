//! Spare sessions (`--spare-sessions`), black box: the real binary against
//! the fake SAM bridge with a SESSION CREATE that takes a while, as a
//! router's does. A new credential identity, an `--isolate client`
//! connection and the default identity after SIGHUP take a ready spare (or
//! one still being built) and are answered without waiting for a build;
//! a replacement starts at once; a spare carries nothing before it is
//! taken; spares count against `--max-sessions`; a bridge that is down
//! makes them back off without piling up threads, sockets or connections;
//! a taken spare that dies fails its clients as any dead session does.
//!
//! Not here: the registry's own logic (unit tests in src/identity.rs and
//! src/spares.rs), a real router (tests/e2e/spares.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Fault, Script, SessionRecord, WAIT};
use common::i2p::{b32_name, param};
use common::process::{open_fds, threads};
use common::proxy::*;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// How long the fake takes to answer SESSION CREATE: long enough that a
/// client who waited for a build is told apart from one who did not.
const BUILD: Duration = Duration::from_millis(1500);
/// A client served by a ready spare is answered well within this.
const FAST: Duration = Duration::from_millis(500);

/// A fake whose SESSION CREATE takes [`BUILD`], and a proxy on it with
/// `args`, once the default identity's session and `spares` spares are up.
fn setup(args: &[&str], spares: usize) -> (FakeSam, Proxy) {
    let fake = FakeSam::start(Script::default().session_delay(BUILD));
    let sam = fake.addr_arg();
    // Streams end with a half-close (`finish`): holding that FIN would add
    // its wait to every stream's end and let spares finish building meanwhile.
    // They are the proxy's ends, which would keep closed identities' sessions
    // open for an hour (src/sam/linger.rs): here they close at once.
    let mut all = vec!["--connect-timeout", "10", "--half-close-wait", "0", "--session-linger", "0"];
    all.extend_from_slice(args);
    let p = Proxy::start(&bridge_args(&sam, &all));
    assert!(p.wait_for_nth_line(READY, 1 + spares, WAIT).is_some(), "not all sessions became ready");
    assert!(fake.wait_sessions(1 + spares, WAIT));
    (fake, p)
}

/// The fake's record of the session whose ready line names `label`
/// (`spare #1`, `default identity`), the `n`-th such line.
fn session_labelled(fake: &FakeSam, p: &Proxy, label: &str, n: usize) -> SessionRecord {
    let line =
        p.wait_for_nth_line(&format!("{label}: {READY}"), n, WAIT).unwrap_or_else(|| panic!("no {label}"));
    let b32 = line.rsplit(' ').next().unwrap().trim().to_string();
    fake.sessions().into_iter().find(|r| r.b32 == b32).unwrap()
}

/// The ID= of every STREAM CONNECT, in order.
fn stream_ids(fake: &FakeSam) -> Vec<String> {
    fake.stream_lines().iter().map(|l| param(l, "ID").unwrap().to_string()).collect()
}

/// A SOCKS5 CONNECT through the proxy: the stream and how long the reply took.
fn timed_connect(p: &Proxy, seed: &str, creds: Option<(&str, &str)>) -> (TcpStream, Duration) {
    let t = Instant::now();
    let (s, reply) = socks5_connect(p.addr(), &b32_name(seed), 80, creds);
    assert_eq!(reply, S5_OK, "{seed}");
    (s, t.elapsed())
}

/// Options of a SESSION CREATE line, without its ID.
fn options_of(line: &str) -> Vec<&str> {
    line.split(' ').filter(|w| !w.starts_with("ID=")).collect()
}

/// A new credential identity takes the ready spare (its first byte does not
/// wait for a build); the spare had carried nothing before and was built
/// with exactly a new identity's options; a replacement is built at once.
#[test]
fn new_credentials_take_the_ready_spare() {
    let (fake, p) = setup(&[], 1);
    let spare = session_labelled(&fake, &p, "spare #1", 1);
    let default = session_labelled(&fake, &p, "default identity", 1);
    assert_eq!(options_of(&spare.line), options_of(&default.line), "a spare has a new identity's options");
    assert_eq!(param(&spare.line, "DESTINATION"), Some("TRANSIENT"));
    assert!(fake.streams().is_empty(), "nothing used the spare before it was taken");
    let creates_before = fake.creates().len();

    let (mut s, took) = timed_connect(&p, "fast", Some(("app1", "x")));
    assert!(took < FAST, "new credentials waited {took:?} (a build takes {BUILD:?})");
    send(&mut s, b"ping");
    expect_bytes(&mut s, b"ping", IO_TIMEOUT);
    assert_eq!(stream_ids(&fake), vec![spare.id.clone()], "the stream went out on the spare");
    // The replacement is asked for at once, not at the next client.
    assert!(fake.wait_creates(creates_before + 1, Duration::from_millis(300)), "no replacement spare");
    assert!(p.wait_for_line("spare #2: ", WAIT).is_some());
    // The same credentials keep their identity; the replacement stays a spare.
    let (_s2, took) = timed_connect(&p, "again", Some(("app1", "x")));
    assert!(took < FAST);
    assert_eq!(stream_ids(&fake), vec![spare.id.clone(), spare.id.clone()]);
}

/// `--isolate client`: connections spaced by the build time each take a
/// ready spare (a new address each, no wait); a burst faster than that is
/// served by the ready spare first and waits for builds for the rest.
#[test]
fn isolate_client_connections_take_spares() {
    let (fake, p) = setup(&["--isolate", "client", "-v"], 1);
    let mut ids = Vec::new();
    for i in 1..=3 {
        let spare = session_labelled(&fake, &p, &format!("spare #{i}"), 1);
        let (s, took) = timed_connect(&p, &format!("c{i}"), None);
        assert!(took < FAST, "connection {i} waited {took:?}");
        assert_eq!(stream_ids(&fake).last(), Some(&spare.id), "connection {i} not on the spare");
        ids.push(spare.id);
        drop(s);
    }
    assert_eq!(p.count_lines("took a spare session (ready)"), 3);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "every connection a new address");

    // A burst of three once spare #4 is ready: one served at once, two wait.
    session_labelled(&fake, &p, "spare #4", 1);
    let addr = p.addr();
    let t = Instant::now();
    let burst: Vec<_> = (0..3)
        .map(|i| {
            thread::spawn(move || {
                let (s, reply) = socks5_connect(addr, &b32_name(&format!("burst{i}")), 80, None);
                assert_eq!(reply, S5_OK);
                (s, t.elapsed())
            })
        })
        .collect();
    let mut took: Vec<Duration> = burst.into_iter().map(|h| h.join().unwrap().1).collect();
    took.sort();
    eprintln!("burst of 3 with one ready spare: replies after {took:?}");
    assert!(took[0] < FAST, "the ready spare served nobody at once: {took:?}");
    assert!(took[1] >= BUILD - Duration::from_millis(300), "{took:?}");
    assert!(took[2] < BUILD * 2, "the others wait about one build: {took:?}");
}

/// SIGHUP: the next connection without credentials is served at once by
/// the spare, now the default identity, under a new address; the old
/// default identity is closed; a replacement spare is built.
#[test]
fn sighup_default_identity_is_the_spare() {
    let (fake, p) = setup(&[], 1);
    let old = session_labelled(&fake, &p, "default identity", 1);
    let spare = session_labelled(&fake, &p, "spare #1", 1);
    finish(timed_connect(&p, "before", None).0);
    p.signal("HUP");
    assert!(p.wait_for_line("new identity", WAIT).is_some());
    let (s, took) = timed_connect(&p, "after", None);
    assert!(took < FAST, "after SIGHUP the first connection waited {took:?}");
    assert_eq!(stream_ids(&fake), vec![old.id.clone(), spare.id.clone()]);
    assert_ne!(spare.b32, old.b32);
    assert!(fake.wait_closed(old.conn, Duration::from_secs(3)), "the retired default identity stayed");
    assert!(p.wait_for_line("spare #2: ", WAIT).is_some(), "no replacement spare");
    finish(s);
}

/// A spare still being built is handed out: the client waits for the rest
/// of that build only, and no further session is made for it.
#[test]
fn a_spare_being_built_is_taken() {
    let (fake, p) = setup(&[], 1);
    finish(timed_connect(&p, "first", Some(("app1", "x"))).0);
    // Spare #2 is now being built; a second new identity takes it.
    assert!(fake.wait_creates(3, WAIT));
    let creates = fake.creates().len();
    let (s, took) = timed_connect(&p, "second", Some(("app2", "x")));
    assert!(took < BUILD + Duration::from_millis(500), "waited {took:?}: more than the spare's build");
    // Taken before it was ready, it says so under its new name.
    let spare2 = session_labelled(&fake, &p, "identity #2", 1);
    assert_eq!(p.count_lines(&format!("spare #2: {READY}")), 0);
    assert_eq!(stream_ids(&fake).last(), Some(&spare2.id));
    // Exactly one more create: spare #3, the replacement.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.creates().len(), creates + 1);
    finish(s);
}

/// Spares count against --max-sessions and are never built past it; at the
/// cap new identities are served as without spares.
#[test]
fn spares_within_max_sessions() {
    let (fake, p) = setup(&["--max-sessions", "2", "--spare-sessions", "3"], 1);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.creates().len(), 2, "the default identity and one spare fill the cap");
    let (mut a, took) = timed_connect(&p, "a", Some(("app1", "x")));
    assert!(took < FAST);
    thread::sleep(BUILD / 2);
    assert_eq!(fake.creates().len(), 2, "no spare past the cap");
    let (mut b, reply) = socks5_connect(p.addr(), &b32_name("b"), 80, Some(("app2", "x")));
    assert_eq!(reply, s5_reply(1), "at the cap with no idle identity");
    assert!(closed_within(&mut b, IO_TIMEOUT, 0));
    send(&mut a, b"a");
    expect_bytes(&mut a, b"a", IO_TIMEOUT);
    finish(a);
    thread::sleep(Duration::from_millis(300));
    // The idle identity is evicted for a new one, built on demand.
    let (b, took) = timed_connect(&p, "b2", Some(("app2", "x")));
    assert!(took >= BUILD - Duration::from_millis(300), "no spare could have served it: {took:?}");
    assert_eq!(fake.creates().len(), 3);
    assert!(fake.live_sessions() <= 2, "{} live sessions", fake.live_sessions());
    finish(b);

    // --max-sessions 1: the default identity alone, no spare ever.
    let (fake, _p) = setup(&["--max-sessions", "1"], 0);
    thread::sleep(BUILD + Duration::from_millis(300));
    assert_eq!(fake.creates().len(), 1);
}

/// The bridge is down while spares build: each backs off (1 s, 2 s, 4 s...)
/// instead of retrying in a tight loop; threads, descriptors and bridge
/// connections stay bounded; a client with new credentials is refused at
/// once (a down spare is never handed out); when the bridge answers again
/// the spares come up.
#[test]
fn bridge_down_spares_back_off() {
    let fake = FakeSam::start(Script::default().fault(Fault::CloseOnAccept));
    let sam = fake.addr_arg();
    // -v: a spare's warnings share a rate limit; those held back are logged at debug.
    let p = Proxy::start(&bridge_args(&sam, &["-v", "--spare-sessions", "4"]));
    let pid = p.pid();
    let t0 = Instant::now();
    // Attempts at about 0, 1, 3 and 7 s: between 3.3 s and 6.5 s none.
    thread::sleep(Duration::from_millis(3300).saturating_sub(t0.elapsed()));
    assert!(fake.connections() <= 5 * 3, "{} connections in 3.3 s: a tight loop", fake.connections());
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("down"), 80, Some(("app1", "x")));
    assert_eq!(reply, s5_reply(1));
    assert!(closed_within(&mut s, IO_TIMEOUT, 0));
    // Counted after the client, whose worker and identity are new threads.
    let (th, fds, conns) = (threads(pid), open_fds(pid), fake.connections());
    thread::sleep(Duration::from_millis(6500).saturating_sub(t0.elapsed()));
    // Only the client's new identity tries meanwhile (about 1 and 3 s after
    // its first attempt).
    let retries = fake.connections() - conns;
    assert!(retries <= 2, "{retries} attempts between 3.3 s and 6.5 s");
    assert_eq!(threads(pid), th, "threads");
    assert!(open_fds(pid) <= fds, "descriptors grew from {fds} to {}", open_fds(pid));
    for n in 1..=4 {
        let waits: Vec<String> = p
            .lines()
            .iter()
            .filter(|l| l.contains(&format!("spare #{n}: cannot create a SAM session")))
            .filter_map(|l| l.split("retrying in ").nth(1).map(|w| w.split(' ').next().unwrap().to_string()))
            .collect();
        assert_eq!(waits, vec!["1", "2", "4"], "spare #{n}: backoff {waits:?}");
    }
    fake.set_fault(None);
    assert!(p.wait_for_nth_line(READY, 5, Duration::from_secs(8)).is_some(), "spares did not come up");
    for n in 1..=4 {
        assert!(p.wait_for_line(&format!("spare #{n}: {READY}"), Duration::ZERO).is_some());
    }
}

/// A spare taken by an identity then lost: its label is now the identity's,
/// and its clients get the dead-session answer (0x01 at once) like any
/// other identity's; once rebuilt the identity serves again.
#[test]
fn a_taken_spare_that_dies() {
    let (fake, p) = setup(&[], 1);
    let (mut a, _) = timed_connect(&p, "a", Some(("app1", "x")));
    send(&mut a, b"x");
    expect_bytes(&mut a, b"x", IO_TIMEOUT);
    fake.set_fault(Some(Fault::CloseOnAccept));
    fake.kill_sessions();
    assert!(p.wait_for_line("identity #1: SAM session lost", WAIT).is_some(), "the taken spare is not named");
    let t = Instant::now();
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("dead"), 80, Some(("app1", "x")));
    assert_eq!(reply, s5_reply(1));
    assert!(t.elapsed() < Duration::from_secs(1), "refusal took {:?}", t.elapsed());
    assert!(closed_within(&mut s, IO_TIMEOUT, 0));
    fake.set_fault(None);
    assert!(p.wait_for_nth_line("identity #1: I2P destination ready", 1, Duration::from_secs(10)).is_some());
    finish(timed_connect(&p, "back", Some(("app1", "x"))).0);
}

/// End a client's stream the polite way and wait for the proxy to close it.
fn finish(mut s: TcpStream) {
    s.shutdown(std::net::Shutdown::Write).unwrap();
    read_to_eof(&mut s, IO_TIMEOUT);
}
