//! Black-box tests of the identity features of the real
//! `i2psocks` binary against the fake SAM bridge: which SAM session each
//! stream uses under `--isolate`, the lifetime of those sessions (idle
//! expiry, `--max-sessions`, SIGHUP), access control (`--auth-file`), SOCKS5
//! method selection, and the persistent key file (`-k`, `--print-address`,
//! `--check`, exit codes 69 and 78), and that no private key reaches the log.
//!
//! Not here: the registry's and key file's own logic (unit tests in
//! src/identity.rs and src/keyfile.rs), a real router (tests/e2e_i2pd.rs). Each
//! test starts its own fake and proxy; timeouts are short.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Fault, Outcome, Peer, Script, SessionRecord, WAIT};
use common::i2p::{b32_name, b64_decode, make_key, param};
use common::process;
use common::proxy::{self, *};
use common::rng::random_bytes;
use common::setup::start_on;
use common::status;
use common::TempDir;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// sysexits(3) codes of the CLI contract.
const EXIT_UNAVAILABLE: i32 = 69;
const EXIT_CONFIG: i32 = 78;
/// Deadline for runs that must exit by themselves.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// Long enough for a relay's end to reach the registry (the lease is
/// dropped right after the proxy closes both sockets).
const SETTLE: Duration = Duration::from_millis(300);

/// A fake with `script` and a proxy on it, as [`start_proxy`] starts one.
fn setup(script: Script, args: &[&str]) -> (FakeSam, Proxy) {
    let fake = FakeSam::start(script);
    let p = start_proxy(&fake, args);
    (fake, p)
}

/// The shared start on `fake` (tests/common/setup.rs), with `--connect-timeout 5` unless
/// `args` sets one: a client waiting for a bridge that is down gets its answer in seconds,
/// not after the default two minutes.
fn start_proxy(fake: &FakeSam, args: &[&str]) -> Proxy {
    let mut all = args.to_vec();
    if !args.contains(&"--connect-timeout") {
        all.extend(["--connect-timeout", "5"]);
    }
    // Streams here end with a half-close and wait for the echo peer's close
    // (`finish`); holding that FIN would add its wait to every stream's end.
    // The hold has its own tests in tests/fake_bridge.rs.
    all.extend(["--half-close-wait", "0"]);
    // Those ends are the proxy's, which would keep every closed identity's
    // session open for an hour (src/sam/linger.rs): unless a test sets it,
    // closed identities close at once, as on a router without that bug.
    if !args.contains(&"--session-linger") {
        all.extend(["--session-linger", "0"]);
    }
    start_on(fake, &[], &all)
}

/// The ID= of every STREAM CONNECT, in order.
fn stream_ids(fake: &FakeSam) -> Vec<String> {
    fake.stream_lines().iter().map(|l| param(l, "ID").unwrap().to_string()).collect()
}

fn session_ids(fake: &FakeSam) -> Vec<String> {
    fake.sessions().iter().map(|r| r.id.clone()).collect()
}

/// Exactly `n` sessions now, and still `n` a moment later (no extra one
/// is on its way).
fn assert_sessions(fake: &FakeSam, n: usize) -> Vec<SessionRecord> {
    assert!(fake.wait_sessions(n, WAIT), "wanted {n} sessions, have {}", fake.sessions().len());
    thread::sleep(Duration::from_millis(200));
    let s = fake.sessions();
    assert_eq!(s.len(), n, "sessions: {:?}", s.iter().map(|r| &r.line).collect::<Vec<_>>());
    s
}

fn all_distinct(v: &[String]) -> bool {
    let mut w = v.to_vec();
    w.sort();
    w.dedup();
    w.len() == v.len()
}

/// Send `data` on an open stream and read the echo back (stream stays open).
fn echo(s: &mut std::net::TcpStream, data: &[u8]) {
    send(s, data);
    expect_bytes(s, data, IO_TIMEOUT);
}

/// End a client's stream the polite way and wait for the proxy to close it.
fn finish(mut s: std::net::TcpStream) {
    s.shutdown(std::net::Shutdown::Write).unwrap();
    read_to_eof(&mut s, IO_TIMEOUT);
}

fn s5(p: &Proxy, seed: &str, creds: Option<(&str, &str)>) -> std::net::TcpStream {
    let (s, reply) = socks5_connect(p.addr(), &b32_name(seed), 80, creds);
    assert_eq!(reply, S5_OK, "{seed} {creds:?}");
    s
}

fn s4a(p: &Proxy, seed: &str, userid: &str) -> std::net::TcpStream {
    let (s, reply) = socks4a_connect(p.addr(), &b32_name(seed), 80, userid);
    assert_eq!(reply, S4_OK, "{seed} {userid:?}");
    s
}

/// No 40-character piece of any private key in any log line.
fn assert_no_key_logged(p: &Proxy, keys: &[String]) {
    let lines = p.lines();
    for key in keys {
        let k = key.as_bytes();
        for piece in k.windows(40).step_by(8).chain(k.windows(40).last()) {
            let piece = std::str::from_utf8(piece).unwrap();
            if let Some(l) = lines.iter().find(|l| l.contains(piece)) {
                panic!("private key material logged: {l}");
            }
        }
    }
}

/// A bridge that is "down": it keeps its port (a merely closed port could
/// be taken by another test's listener meanwhile) but hangs up on every
/// connection before HELLO.
fn down_bridge() -> FakeSam {
    FakeSam::start(Script::default().fault(Fault::CloseOnAccept))
}

fn write_mode(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Run `i2psocks <args>` to its exit with a listen address that cannot clash.
fn run(args: &[&str]) -> proxy::Finished {
    let mut all = vec!["-l", "127.0.0.1:0"];
    all.extend_from_slice(args);
    run_to_exit(&all, EXIT_WAIT)
}

/// Exit `code` with exactly one stderr line `i2psocks: ...` holding `needle`.
fn assert_fails(f: &proxy::Finished, code: i32, needle: &str) {
    assert_eq!(f.status.code(), Some(code), "{f:?}");
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line wanted: {:?}", f.stderr);
    assert!(lines[0].starts_with("i2psocks: "), "{:?}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

// ------------------------------------------------------------ isolation

/// `--isolate auth` (the default): each distinct SOCKS5 user+password pair
/// and each SOCKS4 USERID gets a session of its own (distinct ID and
/// destination) that all its streams use; clients without credentials
/// share the default one. At -vv no private key is logged.
#[test]
fn isolation_by_credentials() {
    let (fake, p) = setup(Script::default(), &["-vv"]);
    let a1 = ("app1", "x");
    let mut streams = vec![
        s5(&p, "t1", Some(a1)),            // session 1
        s5(&p, "t2", Some(("app2", "x"))), // session 2
        s5(&p, "t3", Some(a1)),            // session 1 again, while the first is open
        s4a(&p, "t4", "app1"),             // session 3: a USERID is not a SOCKS5 user
        s5(&p, "t5", None),                // default
        s4a(&p, "t6", ""),                 // default
        s5(&p, "t7", Some(("app1", "y"))), // session 4: another password
        s5(&p, "t8", Some(("app2", "x"))), // session 2 again
    ];
    for (i, s) in streams.iter_mut().enumerate() {
        echo(s, format!("stream {i}").as_bytes());
    }
    let sessions = assert_sessions(&fake, 5);
    let ids = session_ids(&fake);
    assert!(all_distinct(&ids), "{ids:?}");
    let b32s: Vec<String> = sessions.iter().map(|r| r.b32.clone()).collect();
    assert!(all_distinct(&b32s), "{b32s:?}");
    for r in &sessions {
        assert_eq!(param(&r.line, "DESTINATION"), Some("TRANSIENT"), "{}", r.line);
        assert_eq!(param(&r.line, "SIGNATURE_TYPE"), Some("7"));
        assert_eq!(param(&r.line, "inbound.length"), Some("0"), "same options for every identity");
    }
    let want: Vec<&str> = [1, 2, 1, 3, 0, 0, 4, 2].iter().map(|&i| ids[i].as_str()).collect();
    assert_eq!(stream_ids(&fake), want);
    // Every identity's address is logged when it is ready.
    for r in &sessions {
        assert!(p.wait_for_line(&format!("{READY}{}", r.b32), WAIT).is_some(), "{}", r.b32);
    }
    for s in streams {
        finish(s);
    }
    let keys: Vec<String> = sessions.iter().map(|r| r.private_key.clone()).collect();
    assert_no_key_logged(&p, &keys);
}

/// `--isolate none`: credentials or not, every stream uses the default session.
#[test]
fn isolate_none_shares_one_identity() {
    let (fake, p) = setup(Script::default(), &["--isolate", "none"]);
    let streams = vec![
        s5(&p, "n1", Some(("app1", "x"))),
        s5(&p, "n2", Some(("app2", "y"))),
        s4a(&p, "n3", "someone"),
        s5(&p, "n4", None),
    ];
    let sessions = assert_sessions(&fake, 1);
    assert_eq!(stream_ids(&fake), vec![sessions[0].id.clone(); 4]);
    for s in streams {
        finish(s);
    }
}

/// `--isolate client`: every connection gets a fresh session (the same
/// credentials too), closed when that connection ends; the default session
/// stays.
#[test]
fn isolate_client_one_identity_per_connection() {
    let (fake, p) = setup(Script::default(), &["--isolate", "client"]);
    let mut streams = vec![
        s5(&p, "c1", None),
        s5(&p, "c2", None),
        s5(&p, "c3", Some(("app1", "x"))),
        s5(&p, "c4", Some(("app1", "x"))),
    ];
    for s in streams.iter_mut() {
        echo(s, b"hi");
    }
    let sessions = assert_sessions(&fake, 5);
    let ids = session_ids(&fake);
    assert!(all_distinct(&ids));
    assert_eq!(stream_ids(&fake), ids[1..].to_vec(), "each stream on its own new session");
    // Ending the first connection closes its session only.
    finish(streams.remove(0));
    assert!(
        fake.wait_closed(sessions[1].conn, Duration::from_secs(3)),
        "session of an ended connection kept"
    );
    thread::sleep(SETTLE);
    for r in &sessions[2..] {
        assert!(!fake.conn_closed(r.conn), "a live connection's session closed");
    }
    for s in streams {
        finish(s);
    }
    for r in &sessions[2..] {
        assert!(fake.wait_closed(r.conn, Duration::from_secs(3)));
    }
    // More connections than --max-sessions over time: ended ones free their slot.
    assert!(!fake.conn_closed(sessions[0].conn), "the default session closed");
    for i in 0..3 {
        finish(s5(&p, &format!("again{i}"), None));
    }
    assert!(!fake.conn_closed(sessions[0].conn));
}

/// With --isolate client, connections one after another are never refused
/// at --max-sessions: an ended connection's identity does not hold a slot.
#[test]
fn isolate_client_slots_are_freed() {
    let (fake, p) = setup(Script::default(), &["--isolate", "client", "--max-sessions", "2"]);
    for i in 0..4 {
        let (s, reply) = socks5_connect(p.addr(), &b32_name(&format!("f{i}")), 80, None);
        assert_eq!(reply, S5_OK, "connection {i} refused: an ended connection kept its session slot");
        finish(s);
        thread::sleep(SETTLE);
    }
    assert_sessions(&fake, 5);
}

// ------------------------------------------------------------ lifetimes

/// SESSION CREATE takes a while: clients of an identity being built wait
/// for it within --connect-timeout (two of them share the one session);
/// past that they get 0x06, and the session, once built, serves at once.
#[test]
fn clients_wait_for_a_session_being_built() {
    let delay = Duration::from_millis(1500);
    let (fake, p) = setup(Script::default().session_delay(delay), &["--connect-timeout", "4"]);
    let addr = p.addr();
    let t = Instant::now();
    let waiters: Vec<_> = (0..2)
        .map(|i| {
            thread::spawn(move || {
                let (s, reply) = socks5_connect(addr, &b32_name(&format!("w{i}")), 80, Some(("app1", "x")));
                (s, reply, t.elapsed())
            })
        })
        .collect();
    for w in waiters {
        let (s, reply, took) = w.join().unwrap();
        assert_eq!(reply, S5_OK);
        assert!(took >= delay - Duration::from_millis(200), "answered in {took:?}, before the session");
        finish(s);
    }
    let sessions = assert_sessions(&fake, 2);
    assert_eq!(stream_ids(&fake), vec![sessions[1].id.clone(); 2]);

    let p = start_proxy(&fake, &["--connect-timeout", "1"]);
    let t = Instant::now();
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("late"), 80, Some(("app2", "x")));
    assert_eq!(reply, s5_reply(6), "connect deadline passed while the session was built");
    assert!(t.elapsed() < Duration::from_millis(2500), "took {:?}", t.elapsed());
    assert!(closed_within(&mut s, IO_TIMEOUT, 0));
    assert!(fake.wait_sessions(4, WAIT));
    let t = Instant::now();
    finish(s5(&p, "late2", Some(("app2", "x"))));
    // Well under the 1.5 s another SESSION CREATE would take.
    assert!(t.elapsed() < Duration::from_millis(1200), "the built session was not kept");
    assert_eq!(fake.sessions().len(), 4);
}

/// `--session-idle-timeout 1`: an identity is kept while a stream uses it,
/// closed 1-2 s after its last stream ended; the default one never is.
/// The same credentials later get a new session.
#[test]
fn idle_identity_closed_default_kept() {
    let (fake, p) = setup(Script::default(), &["--session-idle-timeout", "1"]);
    let mut s = s5(&p, "idle", Some(("app1", "x")));
    let sessions = assert_sessions(&fake, 2);
    let (default, named) = (&sessions[0], &sessions[1]);
    // Busy for well over the idle timeout: kept.
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(500));
        echo(&mut s, b"still here");
    }
    assert!(!fake.conn_closed(named.conn), "closed while a stream was open");
    finish(s);
    let ended = Instant::now();
    assert!(fake.wait_closed(named.conn, Duration::from_secs(4)), "idle identity kept");
    let after = fake.closed_at(named.conn).unwrap().saturating_duration_since(ended);
    assert!(after >= Duration::from_millis(700), "closed {after:?} after its stream: too early");
    assert!(after <= Duration::from_millis(3000), "closed {after:?} after its stream: too late");
    // The default identity, unused all along, is still there.
    thread::sleep(Duration::from_millis(1500));
    assert!(!fake.conn_closed(default.conn), "the default identity was reaped");
    // The same credentials now get a fresh session.
    let s = s5(&p, "idle2", Some(("app1", "x")));
    let sessions = assert_sessions(&fake, 3);
    assert_eq!(stream_ids(&fake)[1], sessions[2].id);
    finish(s);
}

/// `--max-sessions 2` (the default identity + one): a second credential
/// while the first one's stream is open is refused with 0x01; once that
/// stream ended, the idle identity is evicted for the new one.
#[test]
fn max_sessions_refuses_then_evicts() {
    let (fake, p) = setup(Script::default(), &["--max-sessions", "2"]);
    let mut a = s5(&p, "m1", Some(("app1", "x")));
    echo(&mut a, b"a");
    let sessions = assert_sessions(&fake, 2);
    let (mut b, reply) = socks5_connect(p.addr(), &b32_name("m2"), 80, Some(("app2", "x")));
    assert_eq!(reply, s5_reply(1), "over the cap");
    assert!(closed_within(&mut b, IO_TIMEOUT, 0));
    // Existing identities are still served at the cap.
    finish(s5(&p, "m3", None));
    finish(s5(&p, "m4", Some(("app1", "x"))));
    assert_eq!(fake.sessions().len(), 2);
    echo(&mut a, b"a still flows");
    finish(a);
    thread::sleep(SETTLE);
    let mut b = s5(&p, "m5", Some(("app2", "x")));
    echo(&mut b, b"b");
    let now = assert_sessions(&fake, 3);
    assert!(fake.wait_closed(sessions[1].conn, Duration::from_secs(3)), "the idle identity was not evicted");
    assert!(!fake.conn_closed(sessions[0].conn), "the default identity was evicted");
    assert_eq!(stream_ids(&fake).last(), Some(&now[2].id));
    finish(b);
}

/// SIGHUP: one info line; new streams (same credentials, and without
/// credentials) get new sessions while a stream opened before keeps flowing
/// byte-exact on its old session, whose control socket closes only when
/// that stream ends. An unused retired identity closes at once.
#[test]
fn sighup_gives_new_identities() {
    let (fake, p) = setup(Script::default(), &[]);
    let mut old = s5(&p, "h1", Some(("app1", "x")));
    echo(&mut old, b"before");
    let before = assert_sessions(&fake, 2);
    let (old_default, old_named) = (&before[0], &before[1]);
    p.signal("HUP");
    assert!(p.wait_for_line("new identity", WAIT).is_some(), "no log line for SIGHUP");
    // A new default identity is made at once; the unused old one goes.
    assert!(fake.wait_sessions(3, WAIT));
    assert!(fake.wait_closed(old_default.conn, Duration::from_secs(3)), "unused retired identity kept");
    let mut new_named = s5(&p, "h2", Some(("app1", "x")));
    let mut new_default = s5(&p, "h3", None);
    echo(&mut new_named, b"new");
    echo(&mut new_default, b"new default");
    let after = assert_sessions(&fake, 4);
    let ids = stream_ids(&fake);
    assert_eq!(ids, vec![old_named.id.clone(), after[3].id.clone(), after[2].id.clone()]);
    assert!(all_distinct(&session_ids(&fake)));
    assert_ne!(after[3].b32, old_named.b32);
    assert_ne!(after[2].b32, old_default.b32);
    // The old stream still flows, on its old session.
    thread::sleep(SETTLE);
    assert!(!fake.conn_closed(old_named.conn), "retired identity closed under an open stream");
    let data = random_bytes(256 * 1024, 7);
    assert_eq!(echo_roundtrip(&mut old, &data, IO_TIMEOUT), data);
    read_to_eof(&mut old, IO_TIMEOUT);
    assert!(
        fake.wait_closed(old_named.conn, Duration::from_secs(3)),
        "retired identity kept after its stream"
    );
    assert_eq!(p.count_lines("new identity"), 1);
    assert!(p.lines().iter().any(|l| l.contains("info: new identity")), "not at info level");
    // The new identities are unaffected.
    echo(&mut new_named, b"still");
    assert!(!fake.conn_closed(after[2].conn) && !fake.conn_closed(after[3].conn));
    finish(new_named);
    finish(new_default);
}

// ------------------------------------------------------------ access control

fn auth_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("users");
    write_mode(&p, text.as_bytes(), 0o600);
    p
}

/// `--auth-file`: listed pairs succeed; a wrong password or unknown user
/// gets exactly `01 01` and a close; no-auth only gets `05 FF`; SOCKS4 and
/// 4a get 5B; nothing refused reaches the bridge. Isolation keys on the
/// username: two users, two sessions.
#[test]
fn auth_file_access_control() {
    let tmp = TempDir::new("identity-auth");
    let dir = &tmp.0;
    let users = auth_file(dir, "# test users\napp1:secret\napp2:pa:ss\n");
    let (fake, p) = setup(Script::default(), &["--auth-file", users.to_str().unwrap()]);

    let mut ok = s5(&p, "ok", Some(("app1", "secret")));
    echo(&mut ok, b"allowed");

    for (user, pass) in [("app1", "wrong"), ("app1", ""), ("nobody", "secret"), ("app2", "pa"), ("", "")] {
        let mut s = connect(p.addr());
        send(&mut s, &[5, 1, 2]);
        expect_bytes(&mut s, &[5, 2], IO_TIMEOUT);
        send(&mut s, &socks5_auth(user, pass));
        let (got, end) = read_n(&mut s, 3, IO_TIMEOUT);
        assert_eq!(got, [1, 1], "{user}:{pass}");
        assert!(matches!(end, ReadEnd::Eof | ReadEnd::Reset), "{user}:{pass}: not closed ({end:?})");
    }
    // Offering no-auth only (and offering both: 02 is picked).
    let mut s = connect(p.addr());
    send(&mut s, &[5, 1, 0]);
    let (got, end) = read_n(&mut s, 3, IO_TIMEOUT);
    assert_eq!(got, [5, 0xff]);
    assert!(matches!(end, ReadEnd::Eof | ReadEnd::Reset));
    let mut s = connect(p.addr());
    send(&mut s, &[5, 2, 0, 2]);
    expect_bytes(&mut s, &[5, 2], IO_TIMEOUT);
    // SOCKS4a and SOCKS4 cannot carry a password.
    let (mut s, reply) = socks4a_connect(p.addr(), &b32_name("v4a"), 80, "app1");
    assert_eq!(reply, S4_FAIL);
    assert!(closed_within(&mut s, IO_TIMEOUT, 0));
    let mut s = connect(p.addr());
    send(&mut s, &[4, 1, 0, 80, 10, 0, 0, 1, b'a', b'p', b'p', b'1', 0]);
    assert_eq!(read_to_eof(&mut s, IO_TIMEOUT), S4_FAIL);
    assert_eq!(fake.streams().len(), 1, "a refused client reached the bridge");

    // Isolation keys on the username.
    let mut two = s5(&p, "two", Some(("app2", "pa:ss")));
    let mut again = s5(&p, "again", Some(("app1", "secret")));
    echo(&mut two, b"2");
    echo(&mut again, b"1");
    let sessions = assert_sessions(&fake, 3);
    let ids = session_ids(&fake);
    assert_eq!(stream_ids(&fake), vec![ids[1].clone(), ids[2].clone(), ids[1].clone()]);
    assert!(all_distinct(&ids));
    assert_ne!(sessions[1].b32, sessions[2].b32);
    for s in [ok, two, again] {
        finish(s);
    }
    assert!(p.lines().iter().all(|l| !l.contains("secret") && !l.contains("pa:ss")), "password logged");
}

/// An auth file that others can read, or that is missing or malformed,
/// stops the proxy before it listens: exit 78 and one line.
#[test]
fn auth_file_refused() {
    let tmp = TempDir::new("identity-authbad");
    let dir = &tmp.0;
    let fake = FakeSam::start(Script::default());
    let sam = fake.addr_arg();
    let users = dir.join("users");
    write_mode(&users, b"app1:secret\n", 0o644);
    let u = users.to_str().unwrap();
    assert_fails(&run(&["-s", &sam, "--auth-file", u]), EXIT_CONFIG, "chmod 600");
    assert_fails(&run(&["-s", &sam, "--auth-file", u, "--check"]), EXIT_CONFIG, "chmod 600");
    write_mode(&users, b"app1:secret\n", 0o640);
    assert_fails(&run(&["-s", &sam, "--auth-file", u]), EXIT_CONFIG, "chmod 600");
    write_mode(&users, b"no colon here\n", 0o600);
    assert_fails(&run(&["-s", &sam, "--auth-file", u]), EXIT_CONFIG, "line 1");
    let missing = dir.join("missing");
    assert_fails(&run(&["-s", &sam, "--auth-file", missing.to_str().unwrap()]), EXIT_CONFIG, "missing");
    assert_eq!(fake.connections(), 0, "the bridge was contacted");
}

/// Without access control a client offering 00 and 02 gets 02 (so its
/// credentials can pick its identity); with --prefer-no-auth it gets 00.
#[test]
fn method_selection() {
    let (fake, p) = setup(Script::default(), &[]);
    let mut s = connect(p.addr());
    send(&mut s, &[5, 2, 0, 2]);
    expect_bytes(&mut s, &[5, 2], IO_TIMEOUT);
    send(&mut s, &socks5_auth("app1", "x"));
    expect_bytes(&mut s, &[1, 0], IO_TIMEOUT);
    send(&mut s, &socks5_request(1, &b32_name("sel"), 80));
    expect_bytes(&mut s, &S5_OK, IO_TIMEOUT);
    let sessions = assert_sessions(&fake, 2);
    assert_eq!(stream_ids(&fake), vec![sessions[1].id.clone()]);
    finish(s);

    let (fake, p) = setup(Script::default(), &["--prefer-no-auth"]);
    let mut s = connect(p.addr());
    send(&mut s, &[5, 2, 2, 0]);
    expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
    send(&mut s, &socks5_request(1, &b32_name("sel"), 80));
    expect_bytes(&mut s, &S5_OK, IO_TIMEOUT);
    // Offering only 02 still works, and isolates.
    let s2 = s5(&p, "sel2", Some(("app1", "x")));
    let sessions = assert_sessions(&fake, 2);
    assert_eq!(stream_ids(&fake), vec![sessions[0].id.clone(), sessions[1].id.clone()]);
    finish(s);
    finish(s2);
}

// ------------------------------------------------------------ key file

/// `-k` with a missing file: the first session's key is saved (mode 0600,
/// the binary blob); a restart sends that key and gets the same address;
/// the file is never rewritten. SIGHUP keeps a persistent default identity
/// while credentialed identities stay transient. No key in the -vv log.
#[test]
fn keyfile_created_then_reused() {
    let tmp = TempDir::new("identity-keyfile");
    let dir = &tmp.0;
    let key = dir.join("i2psocks.dat");
    let k = key.to_str().unwrap();
    let fake = FakeSam::start(Script::default().keep_given_keys());

    let p = start_proxy(&fake, &["-k", k, "-vv"]);
    let first = fake.sessions()[0].clone();
    assert_eq!(param(&first.line, "DESTINATION"), Some("TRANSIENT"));
    assert!(p.wait_for_line("created key file", WAIT).is_some());
    assert_eq!(mode_of(&key), 0o600);
    let saved = fs::read(&key).unwrap();
    assert_eq!(saved, b64_decode(&first.private_key).unwrap(), "the file holds the returned key");
    let ready = p.wait_for_line(READY, WAIT).unwrap();
    assert!(ready.ends_with(&first.b32), "{ready}");
    assert_no_key_logged(&p, std::slice::from_ref(&first.private_key));
    let mtime = fs::metadata(&key).unwrap().modified().unwrap();
    drop(p);
    assert!(fake.wait_closed(first.conn, WAIT));

    let p = start_proxy(&fake, &["-k", k, "-vv"]);
    let second = fake.sessions()[1].clone();
    assert_eq!(param(&second.line, "DESTINATION"), Some(first.private_key.as_str()), "key not reused");
    assert_eq!(second.b32, first.b32);
    assert!(p.wait_for_line(&format!("{READY}{}", first.b32), WAIT).is_some());
    assert_eq!(p.count_lines("created key file"), 0);
    // Other identities are transient.
    let mut s = s5(&p, "kf", Some(("app1", "x")));
    echo(&mut s, b"k");
    let sessions = assert_sessions(&fake, 3);
    assert_eq!(param(&sessions[2].line, "DESTINATION"), Some("TRANSIENT"));
    // SIGHUP: the persistent default identity stays; the transient one is retired.
    p.signal("HUP");
    assert!(p.wait_for_line("new identity", WAIT).is_some());
    finish(s);
    assert!(fake.wait_closed(sessions[2].conn, Duration::from_secs(3)));
    thread::sleep(SETTLE);
    assert_eq!(fake.sessions().len(), 3, "the persistent identity was rebuilt");
    assert!(!fake.conn_closed(second.conn), "the persistent identity was retired");
    finish(s5(&p, "kf2", None));
    assert_eq!(stream_ids(&fake).last(), Some(&second.id));
    assert_no_key_logged(&p, &[first.private_key.clone(), sessions[2].private_key.clone()]);
    drop(p);

    assert_eq!(fs::read(&key).unwrap(), saved);
    assert_eq!(fs::metadata(&key).unwrap().modified().unwrap(), mtime, "key file rewritten");
    let names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "stray files: {names:?}");
}

/// A key file that appears while the first session is being built (another
/// instance, the admin) is left alone: the proxy says so and runs on.
#[test]
fn keyfile_appearing_meanwhile_not_overwritten() {
    let tmp = TempDir::new("identity-keyrace");
    let dir = &tmp.0;
    let key = dir.join("key.dat");
    let fake = FakeSam::start(Script::default().session_delay(Duration::from_millis(800)));
    let sam = fake.addr_arg();
    let p = Proxy::start(&bridge_args(&sam, &["-k", key.to_str().unwrap()]));
    let theirs = b64_decode(&make_key(9).0).unwrap();
    write_mode(&key, &theirs, 0o600);
    assert!(p.wait_for_line(READY, WAIT).is_some());
    assert!(p.wait_for_line("not overwritten", WAIT).is_some(), "no word about the key file");
    assert_eq!(fs::read(&key).unwrap(), theirs, "key file overwritten");
    assert_eq!(fs::read_dir(dir).unwrap().count(), 1, "stray temporary file");
}

/// A key file that others can read, or that is not a private key, stops
/// the proxy (and --check, and --print-address) with exit 78 and one line,
/// before anything reaches the bridge; the file is left as it was.
#[test]
fn keyfile_refused() {
    let tmp = TempDir::new("identity-keybad");
    let dir = &tmp.0;
    let fake = FakeSam::start(Script::default());
    let sam = fake.addr_arg();
    let key = dir.join("key.dat");
    let k = key.to_str().unwrap();
    let good = b64_decode(&make_key(1).0).unwrap();
    let junk: Vec<u8> = random_bytes(679, 3);
    let cases: Vec<(&str, Vec<u8>, u32, &str)> = vec![
        ("group-readable", good.clone(), 0o640, "chmod 600"),
        ("world-readable", good.clone(), 0o604, "chmod 600"),
        ("random bytes", junk, 0o600, "not an I2P private key"),
        ("truncated", good[..good.len() - 1].to_vec(), 0o600, "not an I2P private key"),
        ("public part only", good[..391].to_vec(), 0o600, "not an I2P private key"),
        ("empty", Vec::new(), 0o600, "not an I2P private key"),
        ("base64 text", make_key(1).0.into_bytes(), 0o600, "not an I2P private key"),
    ];
    for (what, data, mode, needle) in cases {
        write_mode(&key, &data, mode);
        for extra in [&[][..], &["--check"], &["--print-address"]] {
            let mut args = vec!["-s", sam.as_str(), "-k", k];
            args.extend_from_slice(extra);
            let f = run(&args);
            assert_eq!(f.status.code(), Some(EXIT_CONFIG), "{what} {extra:?}: {f:?}");
            assert_fails(&f, EXIT_CONFIG, needle);
            assert!(f.stdout.is_empty(), "{what}: {:?}", f.stdout);
        }
        assert_eq!(fs::read(&key).unwrap(), data, "{what}: file changed");
        assert_eq!(mode_of(&key), mode, "{what}: mode changed");
    }
    assert_eq!(fake.connections(), 0, "the bridge was contacted");
}

/// `--print-address`: with a key file, its b32 without contacting the
/// bridge (down, or up and untouched); without one, DEST GENERATE makes
/// the key, saved 0600; with neither file nor bridge, exit 69 and no file.
#[test]
fn print_address() {
    let tmp = TempDir::new("identity-print");
    let dir = &tmp.0;
    let key = dir.join("key.dat");
    let k = key.to_str().unwrap();
    let (priv_b64, b32) = make_key(42);
    write_mode(&key, &b64_decode(&priv_b64).unwrap(), 0o600);
    let down = down_bridge();
    let f = run(&["-s", &down.addr_arg(), "-k", k, "--print-address"]);
    assert_eq!(f.status.code(), Some(0), "{f:?}");
    assert_eq!(f.stdout, format!("{b32}\n"));
    assert!(f.stderr.is_empty(), "{:?}", f.stderr);
    assert_eq!(down.connections(), 0, "the bridge was contacted for an existing key");
    let up = FakeSam::start(Script::default());
    let f = run(&["-s", &up.addr_arg(), "-k", k, "--print-address"]);
    assert_eq!((f.status.code(), f.stdout.as_str()), (Some(0), format!("{b32}\n").as_str()));
    assert_eq!(up.connections(), 0, "the bridge was contacted for an existing key");

    let new = dir.join("new.dat");
    let n = new.to_str().unwrap();
    let f = run(&["-s", &down.addr_arg(), "-k", n, "--print-address"]);
    assert_fails(&f, EXIT_UNAVAILABLE, &down.addr_arg());
    assert!(f.stdout.is_empty());
    assert!(!new.exists(), "a key file without a key");

    let f = run(&["-s", &up.addr_arg(), "-k", n, "--print-address"]);
    assert_eq!(f.status.code(), Some(0), "{f:?}");
    let dests = up.dests();
    assert_eq!(dests.len(), 1);
    assert_eq!(dests[0].line, "DEST GENERATE SIGNATURE_TYPE=7");
    assert_eq!(f.stdout, format!("{}\n", dests[0].b32));
    assert_eq!(mode_of(&new), 0o600);
    assert_eq!(fs::read(&new).unwrap(), b64_decode(&dests[0].private_key).unwrap());
    assert_eq!(up.sessions().len(), 0, "no session needed");
    // Again: the same address, no new key.
    let f = run(&["-s", &up.addr_arg(), "-k", n, "--print-address"]);
    assert_eq!(f.stdout, format!("{}\n", dests[0].b32));
    assert_eq!(up.dests().len(), 1);
    // And the proxy uses that key.
    let up2 = FakeSam::start(Script::default().keep_given_keys());
    let p = start_proxy(&up2, &["-k", n]);
    assert_eq!(param(&up2.sessions()[0].line, "DESTINATION"), Some(dests[0].private_key.as_str()));
    assert!(p.wait_for_line(&format!("{READY}{}", dests[0].b32), WAIT).is_some());
}

/// `--check`: 0 with a bridge, 69 without, 78 with a bad key file.
#[test]
fn check_exit_codes() {
    let tmp = TempDir::new("identity-check");
    let dir = &tmp.0;
    let up = FakeSam::start(Script::default());
    let down = down_bridge();
    let f = run(&["-s", &up.addr_arg(), "--check"]);
    assert_eq!(f.status.code(), Some(0), "{f:?}");
    assert!(f.stdout.contains("ok"), "{:?}", f.stdout);
    assert!(up.wait_connections(1, WAIT));
    assert_eq!(up.sessions().len(), 0, "--check made a session");
    assert_fails(&run(&["-s", &down.addr_arg(), "--check"]), EXIT_UNAVAILABLE, &down.addr_arg());
    // A missing key file is fine (it would be created); a bad one is not.
    let key = dir.join("key.dat");
    let f = run(&["-s", &up.addr_arg(), "-k", key.to_str().unwrap(), "--check"]);
    assert_eq!(f.status.code(), Some(0), "{f:?}");
    assert!(!key.exists(), "--check created the key file");
    write_mode(&key, b"garbage", 0o600);
    assert_fails(
        &run(&["-s", &up.addr_arg(), "-k", key.to_str().unwrap(), "--check"]),
        EXIT_CONFIG,
        "key file",
    );
}

/// A session retired while its SESSION CREATE is still pending is cut at
/// once, not left half-built on the router until the reply comes.
#[test]
fn retiring_a_session_being_built_cuts_its_socket() {
    let fake = FakeSam::start(Script::default().session_delay(Duration::from_secs(4)));
    let sam = fake.addr_arg();
    let port = fake.addr().port();
    let p = Proxy::start(&bridge_args(&sam, &NO_SPARES));
    assert!(fake.wait_connections(1, WAIT), "no control connection");
    thread::sleep(SETTLE);
    assert_eq!(process::tcp_connections_to(p.pid(), port), 1);
    p.signal("HUP");
    // The replacement connects; the pending one is shut at once.
    assert!(fake.wait_connections(2, WAIT), "no replacement session");
    thread::sleep(SETTLE);
    assert_eq!(process::tcp_connections_to(p.pid(), port), 1, "the pending session's socket stayed open");
    // Only the replacement becomes ready.
    assert!(p.wait_for_line(READY, WAIT).is_some());
    thread::sleep(SETTLE);
    assert_eq!(p.count_lines(READY), 1, "{:?}", p.lines());
}

// ------------------------------------------------------------ persistent identities

/// The SESSION CREATE whose DESTINATION is `dest` (a key, or TRANSIENT).
fn session_with(fake: &FakeSam, dest: &str) -> Vec<SessionRecord> {
    fake.sessions().into_iter().filter(|r| param(&r.line, "DESTINATION") == Some(dest)).collect()
}

/// Every file under `dir`, recursively, with its bytes: what a run left.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// `--key-dir`: a user name's first stream builds a session from a
/// TRANSIENT key (logged as such) and keeps that key in DIR as NAME.dat,
/// 0600; the password does not count; names that are no safe file name are
/// hashed and nothing is written outside DIR. Without --auth-file a warning
/// says who can use the names. After a restart the keys found in DIR are
/// built at once, before any client, and each name gets its own again;
/// SIGHUP replaces the transient default only; UDP ASSOCIATE under a
/// persistent identity is refused with 07; SIGUSR1 counts them apart;
/// `--print-address` lists them without creating any.
#[test]
fn key_dir_keeps_user_names_identities() {
    let tmp = TempDir::new("identity-keydir");
    let dir = tmp.0.join("keys");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    let d = dir.to_str().unwrap();
    let fake = FakeSam::start(Script::default().keep_given_keys());
    let args = ["--key-dir", d, "--spare-sessions", "0", "-vv"];

    let p = start_proxy(&fake, &args);
    assert!(p.wait_for_line("--key-dir without --auth-file", WAIT).is_some());
    let default = assert_sessions(&fake, 1).remove(0);
    let mut irc = s5(&p, "k1", Some(("irc", "pw1")));
    echo(&mut irc, b"x");
    assert!(p.wait_for_line("a user name without a key file yet", WAIT).is_some());
    assert!(p.wait_for_line("created key file", WAIT).is_some());
    let irc_first = assert_sessions(&fake, 2).remove(1);
    assert_eq!(param(&irc_first.line, "DESTINATION"), Some("TRANSIENT"));
    // Another password, same name: the same identity.
    finish(s5(&p, "k2", Some(("irc", "other"))));
    let unsafe_names = ["../escape", "a/b", "nul\0byte", "tab\tname"];
    for (n, name) in unsafe_names.iter().enumerate() {
        finish(s5(&p, &format!("u{n}"), Some((name, "x"))));
    }
    assert_sessions(&fake, 2 + unsafe_names.len());
    let ids = stream_ids(&fake);
    assert_eq!(ids[0], ids[1], "one user name, one identity");
    assert_eq!(ids[0], irc_first.id);
    // The key files: irc.dat, and hashed names (`~` + 64 hex digits), 0600.
    thread::sleep(SETTLE);
    let irc_key = dir.join("irc.dat");
    assert_eq!(fs::read(&irc_key).unwrap(), b64_decode(&irc_first.private_key).unwrap());
    let mut names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 1 + unsafe_names.len(), "{names:?}");
    // Sorted by byte: `~` (0x7e) comes after every plain name.
    assert_eq!(names.first().map(String::as_str), Some("irc.dat"), "{names:?}");
    for n in &names[1..] {
        assert!(n.starts_with('~') && n.len() == 1 + 64 + 4 && n.ends_with(".dat"), "{n}");
        assert_eq!(mode_of(&dir.join(n)), 0o600);
    }
    assert_eq!(tree(&tmp.0).len(), names.len(), "a file outside --key-dir: {:?}", tree(&tmp.0));
    // UDP under a persistent identity: 07, and the reason said once.
    let r = socks5_exchange(p.addr(), Some(("irc", "pw1")), &socks5_request_raw(3, 1, &[0; 4], 0));
    assert_eq!(r.get(1), Some(&0x07), "{r:?}");
    assert!(p.wait_for_line("UDP ASSOCIATE under a persistent identity is refused", WAIT).is_some());
    finish(irc);
    assert_no_key_logged(&p, &fake.sessions().iter().map(|r| r.private_key.clone()).collect::<Vec<_>>());
    drop(p);

    // --print-address: one line per user name, nothing created.
    let before = tree(&tmp.0);
    let f = run(&["-s", &fake.addr_arg(), "--key-dir", d, "--print-address"]);
    assert_eq!(f.status.code(), Some(0), "{f:?}");
    assert!(f.stdout.contains(&format!("user irc {}\n", irc_first.b32)), "{}", f.stdout);
    assert_eq!(f.stdout.lines().count(), names.len(), "{}", f.stdout);
    assert_eq!(tree(&tmp.0), before);

    // Restart: every key in DIR is built at once, the default beside them.
    let sessions_before = fake.sessions().len();
    let p = start_proxy(&fake, &args);
    assert!(fake.wait_sessions(sessions_before + 1 + names.len(), WAIT));
    let irc_again = session_with(&fake, &irc_first.private_key);
    assert_eq!(irc_again.len(), 1, "irc's key was not built at start");
    let irc_again = irc_again[0].clone();
    assert_eq!(irc_again.b32, irc_first.b32);
    let mut irc = s5(&p, "k3", Some(("irc", "pw1")));
    echo(&mut irc, b"y");
    assert_eq!(stream_ids(&fake).last(), Some(&irc_again.id), "not the session built at start");
    assert_eq!(fake.sessions().len(), sessions_before + 1 + names.len(), "a session built on first use");
    assert_eq!(p.count_lines("a user name without a key file yet"), 0);
    // SIGHUP: only the transient default goes.
    let default_now = session_with(&fake, "TRANSIENT").pop().unwrap();
    assert_ne!(default_now.id, default.id);
    p.signal("HUP");
    assert!(p.wait_for_line("new identity: 1 transient", WAIT).is_some());
    assert!(fake.wait_closed(default_now.conn, WAIT));
    assert!(!fake.conn_closed(irc_again.conn), "a persistent identity was retired");
    finish(irc);
    finish(s5(&p, "k4", Some(("irc", "x"))));
    assert_eq!(stream_ids(&fake).last(), Some(&irc_again.id));
    p.signal("USR1");
    let line = p.wait_for_line("status: identities:", WAIT).unwrap();
    assert!(line.contains(&format!("1 default, {} persistent, 0 by credentials", names.len())), "{line}");
}

/// Two listeners with key files of their own: each gets its own address,
/// kept across a restart; clients of each use their listener's;
/// `--print-address` names the listener of each address.
#[test]
fn listener_keys_keep_two_addresses() {
    let tmp = TempDir::new("identity-listenkeys");
    let (ka, kb) = (tmp.0.join("a.key"), tmp.0.join("b.key"));
    let la = format!("127.0.0.1:0,key={}", ka.display());
    let lb = format!("127.0.0.1:0,key={}", kb.display());
    let fake = FakeSam::start(Script::default().keep_given_keys());
    let args = ["-l", la.as_str(), "-l", lb.as_str(), "--spare-sessions", "0"];
    let p = start_on(&fake, &[], &args);
    assert!(p.wait_for_nth_line("created key file", 2, WAIT).is_some());
    let first = assert_sessions(&fake, 2);
    let key_of = |k: &Path| common::i2p::b64_encode(&fs::read(k).unwrap());
    let (a, b) = (key_of(&ka), key_of(&kb));
    assert_ne!(a, b);
    drop(p);
    let p = start_on(&fake, &[], &args);
    let again = assert_sessions(&fake, 4);
    let (sa, sb) = (session_with(&fake, &a), session_with(&fake, &b));
    assert_eq!((sa.len(), sb.len()), (1, 1), "{again:?}");
    let b32s: Vec<&str> = first.iter().map(|r| r.b32.as_str()).collect();
    assert!(b32s.contains(&sa[0].b32.as_str()) && b32s.contains(&sb[0].b32.as_str()));
    let addrs = p.listening(2);
    for (addr, session) in addrs.iter().zip([&sa[0], &sb[0]]) {
        let (s, reply) = socks5_connect(addr.parse().unwrap(), &b32_name("lk"), 80, None);
        assert_eq!(reply, S5_OK);
        finish(s);
        assert_eq!(stream_ids(&fake).last(), Some(&session.id), "{addr}");
    }
    drop(p);
    let f = run_to_exit(&["-s", &fake.addr_arg(), "-l", &la, "-l", &lb, "--print-address"], EXIT_WAIT);
    assert_eq!(f.status.code(), Some(0), "{f:?}");
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", f.stdout);
    assert!(lines[0].starts_with("listener 127.0.0.1:0 ") && lines[0].ends_with(&sa[0].b32), "{}", f.stdout);
    assert!(lines[1].ends_with(&sb[0].b32), "{}", f.stdout);
}

/// Every refusal of a key directory or listener key file: exit 78 and one
/// line naming the cause, before the bridge is contacted, by the proxy,
/// --check and --print-address alike; nothing is created or changed.
#[test]
fn persistent_keys_refused() {
    let tmp = TempDir::new("identity-keydir-bad");
    let fake = FakeSam::start(Script::default());
    let sam = fake.addr_arg();
    let dir = tmp.0.join("keys");
    let d = dir.to_str().unwrap().to_string();
    let good = b64_decode(&make_key(5).0).unwrap();
    let setup_dir = |mode: u32| {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
    };
    type Prepare<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Prepare, &str)> = vec![
        ("missing", Box::new(|| drop(fs::remove_dir_all(&dir))), "No such file"),
        (
            "a file",
            Box::new(|| {
                let _ = fs::remove_dir_all(&dir);
                write_mode(&dir, b"x", 0o600);
            }),
            "not a directory",
        ),
        ("group-writable", Box::new(|| setup_dir(0o770)), "chmod 700"),
        ("world-writable", Box::new(|| setup_dir(0o777)), "chmod 700"),
        ("sticky and world-writable", Box::new(|| setup_dir(0o1777)), "chmod 700"),
        (
            "a readable key",
            Box::new(|| {
                setup_dir(0o700);
                write_mode(&dir.join("irc.dat"), &good, 0o644);
            }),
            "chmod 600",
        ),
        (
            "not a key",
            Box::new(|| {
                setup_dir(0o700);
                write_mode(&dir.join("irc.dat"), b"hello", 0o600);
            }),
            "not an I2P private key",
        ),
        (
            "a directory named as a key",
            Box::new(|| {
                setup_dir(0o700);
                fs::create_dir(dir.join("irc.dat")).unwrap();
                fs::set_permissions(dir.join("irc.dat"), fs::Permissions::from_mode(0o700)).unwrap();
            }),
            "not a regular file",
        ),
    ];
    for (what, prepare, needle) in cases {
        for extra in [&[][..], &["--check"], &["--print-address"]] {
            let _ = fs::remove_file(&dir);
            prepare();
            let before = tree(&tmp.0);
            let mut args = vec!["-s", sam.as_str(), "--key-dir", d.as_str()];
            args.extend_from_slice(extra);
            let f = run(&args);
            assert_fails(&f, EXIT_CONFIG, needle);
            assert!(f.stderr.contains("--key-dir"), "{what}: {:?}", f.stderr);
            assert!(f.stdout.is_empty(), "{what}: {:?}", f.stdout);
            assert_eq!(tree(&tmp.0), before, "{what} {extra:?}: files changed");
        }
    }
    // A listener's key file, as -k's.
    let key = tmp.0.join("l.key");
    write_mode(&key, &good, 0o640);
    let l = format!("127.0.0.1:0,key={}", key.display());
    for extra in [&[][..], &["--check"], &["--print-address"]] {
        let mut args = vec!["-s", sam.as_str(), "-l", l.as_str()];
        args.extend_from_slice(extra);
        assert_fails(&run_to_exit(&args, EXIT_WAIT), EXIT_CONFIG, "chmod 600");
    }
    assert_eq!(mode_of(&key), 0o640);
    // Flags that cannot go together: usage errors (64).
    for args in [
        &["--key-dir", d.as_str(), "--isolate", "none"][..],
        &["-l", l.as_str(), "-l", l.as_str()],
        &["-l", l.as_str(), "-k", key.to_str().unwrap()],
    ] {
        assert_fails(&run_to_exit(args, EXIT_WAIT), 64, "");
    }
    assert_eq!(fake.connections(), 0, "the bridge was contacted");
}

/// The default `--session-linger`: an identity closed for idleness after a
/// stream the proxy ended first (its client's FIN went to the bridge before
/// the peer's end) keeps its session open on the bridge, shown in the
/// status report and counted against `--max-sessions`; an identity whose
/// streams all ended from the I2P side is closed a few seconds after its
/// last one (src/sam/linger.rs has the router bug behind the difference).
#[test]
fn a_closed_identity_keeps_its_session_after_a_stream_the_router_did_not_end() {
    let ends_itself = b32_name("ends-itself");
    let script = Script::default().outcome(&ends_itself, Outcome::Ok(Peer::Source(1000)));
    let args = ["--session-idle-timeout", "1", "--session-linger", "3660", "--max-sessions", "3"];
    let (fake, p) =
        setup(script, &["--spare-sessions", "0"].iter().chain(&args).copied().collect::<Vec<_>>());

    // app1's stream: the client closes first (an echo peer waits for it).
    finish(s5(&p, "echo", Some(("app1", "x"))));
    // app2's stream: the peer sends and closes first.
    let mut s = s5(&p, "ends-itself", Some(("app2", "x")));
    assert_eq!(read_to_eof(&mut s, IO_TIMEOUT).len(), 1000);
    drop(s);
    let sessions = assert_sessions(&fake, 3);
    let (app1, app2) = (&sessions[1], &sessions[2]);
    let ended = Instant::now();

    // Both identities go idle after 1 s; app2's session closes after the
    // grace, app1's stays.
    assert!(fake.wait_closed(app2.conn, Duration::from_secs(6)), "the session of app2 was kept");
    let after = fake.closed_at(app2.conn).unwrap().saturating_duration_since(ended);
    assert!(after >= Duration::from_millis(2500), "closed {after:?} after its stream: within the grace");
    thread::sleep(Duration::from_secs(2));
    assert!(!fake.conn_closed(app1.conn), "the session of app1 was closed under an unended stream");
    let r = status::ask(&p, WAIT);
    assert_eq!(r.count("identities", "held after close"), 1, "{:?}", r.0);
    assert_eq!(r.count("identities", "by credentials"), 0, "{:?}", r.0);

    // The held session takes a place: default + held + one new identity is
    // the cap, so a fourth identity while the third streams is refused.
    let mut c = s5(&p, "third", Some(("app3", "x")));
    echo(&mut c, b"3");
    let (mut d, reply) = socks5_connect(p.addr(), &b32_name("fourth"), 80, Some(("app4", "x")));
    assert_eq!(reply, s5_reply(1), "a held session's place was given away");
    assert!(closed_within(&mut d, IO_TIMEOUT, 0));
    finish(c);

    // The proxy stops: the held session ends with it.
    drop(p);
    assert!(fake.wait_closed(app1.conn, Duration::from_secs(10)), "the held session outlived the proxy");
}
