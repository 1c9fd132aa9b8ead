//! Black-box tests of several `-l` listeners and of Unix-domain listeners,
//! with the real binary against the fake SAM bridge: each listener's own
//! default identity (the fake records every SESSION CREATE and which session
//! each STREAM CONNECT uses), credentials kept apart per listener, the
//! `listening on` lines in order, a Unix socket's mode and owner, CONNECT
//! and RESOLVE over it and UDP ASSOCIATE refused on it, every refusal to start (exit
//! code, one line, foreign files left alone), the stale socket removed, the
//! socket removed on SIGTERM and SIGINT, and the hint when i2pd's SOCKS port
//! is taken.
//!
//! Not here: the path checks and binding steps themselves (unit tests in
//! src/listen/unix.rs), the registry (src/identity.rs), a real router with
//! curl over a Unix socket (tests/e2e_i2pd.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Script, SessionRecord, WAIT};
use common::i2p::{b32_name, param};
use common::proxy::{self, *};
use common::setup::start_on;
use common::TempDir;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

const EXIT_USAGE: i32 = 64;
const EXIT_CONFIG: i32 = 78;
const EXIT_FAILURE: i32 = 1;
/// Deadline for runs that must exit by themselves.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long a stopped proxy may take to exit (the grace is set to 0 here).
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A scratch directory of mode `mode`, and a socket path in it.
fn place(tag: &str, mode: u32) -> (TempDir, PathBuf) {
    let t = TempDir::new(tag);
    fs::set_permissions(&t.0, fs::Permissions::from_mode(mode)).unwrap();
    let p = t.0.join("socks");
    (t, p)
}

fn unix_arg(p: &Path) -> String {
    format!("unix:{}", p.display())
}

/// A proxy on `fake` with `listen` as its `-l` flags (and `args`), once its first
/// default identity is up; then every listener's identity is waited for.
fn start(fake: &FakeSam, listen: &[&str], args: &[&str]) -> Proxy {
    let mut all: Vec<&str> = listen.iter().flat_map(|l| ["-l", *l]).collect();
    all.extend(["--half-close-wait", "0", "--shutdown-grace", "0"]);
    all.extend_from_slice(args);
    let p = start_on(fake, &[], &all);
    assert!(fake.wait_sessions(listen.len(), WAIT), "one session per listener");
    p
}

/// The session of the identity logged as `label: I2P destination ready: <b32>`.
fn session_of(p: &Proxy, fake: &FakeSam, label: &str) -> SessionRecord {
    let line = p
        .wait_for_line(&format!("{label}: {READY}"), WAIT)
        .unwrap_or_else(|| panic!("no ready line for {label}"));
    let b32 = line.rsplit(' ').next().unwrap();
    // The last one: a persistent key brings an address back in a later run.
    fake.sessions().into_iter().rev().find(|r| r.b32 == b32).unwrap_or_else(|| panic!("no session for {b32}"))
}

/// ID= of the last STREAM CONNECT.
fn last_stream_id(fake: &FakeSam, n: usize) -> String {
    assert!(fake.wait_streams(n, WAIT), "stream {n} not seen");
    param(&fake.stream_lines()[n - 1], "ID").unwrap().to_string()
}

/// A Unix-domain client with deadlines.
fn unix_client(p: &Path) -> UnixStream {
    let s = UnixStream::connect(p).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Exit `code` with exactly one stderr line `i2psocks: ...` holding `needle`.
fn assert_fails(args: &[&str], code: i32, needle: &str) {
    let f = run_to_exit(args, EXIT_WAIT);
    assert_eq!(f.status.code(), Some(code), "{args:?}: {f:?}");
    let lines: Vec<&str> = f.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line wanted: {:?}", f.stderr);
    assert!(
        lines[0].starts_with("i2psocks: ") && lines[0].contains(needle),
        "{:?} lacks {needle:?}",
        lines[0]
    );
}

fn stop(mut p: Proxy, signal: &str) {
    p.signal(signal);
    let st =
        p.wait_exit(STOP_WAIT).unwrap_or_else(|| panic!("still running {STOP_WAIT:?} after SIG{signal}"));
    assert!(st.success(), "{st:?}");
}

// ------------------------------------------------------------ several listeners

/// Three TCP listeners: three default identities (the first keeps the plain label),
/// each listener's credential-less clients on their own, the same credentials on two
/// listeners two identities, and again on one the same identity.
#[test]
fn each_listener_has_its_own_identities() {
    let fake = FakeSam::start(Script::default());
    let p = start(&fake, &["127.0.0.1:0", "127.0.0.2:0", "127.0.0.1:0"], &[]);
    let listening = p.listening(3);
    assert!(
        listening[0].starts_with("127.0.0.1:") && listening[1].starts_with("127.0.0.2:"),
        "{listening:?}"
    );
    assert!(listening[2].starts_with("127.0.0.1:") && listening[2] != listening[0], "{listening:?}");
    let addrs: Vec<std::net::SocketAddr> = listening.iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(addrs[0], p.addr());

    let defaults = [
        session_of(&p, &fake, "default identity"),
        session_of(&p, &fake, "default identity of listener 2"),
        session_of(&p, &fake, "default identity of listener 3"),
    ];
    assert_eq!(fake.sessions().len(), 3, "no other session at start");
    let mut ids: Vec<String> = defaults.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct default sessions");

    let mut open = Vec::new();
    let mut n = 0;
    for (i, a) in addrs.iter().enumerate() {
        let (s, reply) = socks5_connect(*a, &b32_name("site"), 80, None);
        assert_eq!(reply, S5_OK);
        open.push(s);
        n += 1;
        assert_eq!(last_stream_id(&fake, n), defaults[i].id, "listener {} uses its own default", i + 1);
    }
    // SOCKS4a without a user ID: the listener's default too.
    let (s, reply) = socks4a_connect(addrs[1], &b32_name("site"), 80, "");
    assert_eq!(reply, S4_OK);
    open.push(s);
    n += 1;
    assert_eq!(last_stream_id(&fake, n), defaults[1].id);

    // The same credentials on listeners 1 and 2: two new identities.
    let mut named = Vec::new();
    for a in [addrs[0], addrs[1], addrs[1]] {
        let (s, reply) = socks5_connect(a, &b32_name("site"), 80, Some(("app", "x")));
        assert_eq!(reply, S5_OK);
        open.push(s);
        n += 1;
        named.push(last_stream_id(&fake, n));
    }
    assert_ne!(named[0], named[1], "same credentials, other listener: another identity");
    assert_eq!(named[1], named[2], "same credentials, same listener: the same identity");
    assert!(defaults.iter().all(|d| d.id != named[0] && d.id != named[1]));
    assert_eq!(fake.sessions().len(), 5);
    // Every new identity is transient; only the first default would carry a key file.
    for r in fake.sessions() {
        assert_eq!(param(&r.line, "DESTINATION"), Some("TRANSIENT"), "{}", r.line);
    }
    drop(open);
    stop(p, "TERM");
}

/// With -k the first listener's default identity has the key; the others are transient.
#[test]
fn keyfile_belongs_to_the_first_listener() {
    let fake = FakeSam::start(Script::default().keep_given_keys());
    let t = TempDir::new("listeners-key");
    let key = t.0.join("key");
    let p = start(&fake, &["127.0.0.1:0", "127.0.0.1:0"], &["-k", key.to_str().unwrap()]);
    let first = session_of(&p, &fake, "default identity");
    let second = session_of(&p, &fake, "default identity of listener 2");
    assert_eq!(param(&first.line, "DESTINATION"), Some("TRANSIENT"), "created on first use");
    assert_eq!(param(&second.line, "DESTINATION"), Some("TRANSIENT"));
    assert!(p.wait_for_line("created key file", WAIT).is_some());
    assert!(key.exists());
    stop(p, "TERM");
    // The next start reuses the key for listener 1 only.
    let before = fake.sessions().len();
    let p = start_on(&fake, &[], &["-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "-k", key.to_str().unwrap()]);
    assert!(fake.wait_sessions(before + 2, WAIT));
    let first = session_of(&p, &fake, "default identity");
    let second = session_of(&p, &fake, "default identity of listener 2");
    assert_ne!(param(&first.line, "DESTINATION"), Some("TRANSIENT"), "the key is given");
    assert_eq!(param(&second.line, "DESTINATION"), Some("TRANSIENT"));
    stop(p, "TERM");
}

// ------------------------------------------------------------ Unix-domain listeners

/// A Unix listener: socket of mode 0600 owned by the proxy's user, CONNECT relayed on the
/// listener's own default identity, UDP ASSOCIATE refused with 0x07, RESOLVE answered, the
/// client logged by the listener's path; SIGTERM stops every accept loop and removes the
/// socket.
#[test]
fn unix_listener_serves_connect() {
    let fake = FakeSam::start(Script::default());
    let (dir, path) = place("listeners-unix", 0o700);
    let unix = unix_arg(&path);
    let p = start(&fake, &["127.0.0.1:0", &unix, "127.0.0.1:0"], &["-v"]);
    assert_eq!(p.listening(3)[1], unix);
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    let mine = fs::metadata(&dir.0).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (mine.uid(), mine.gid()), "owned by the proxy's user and group");
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1, "nothing else left in the directory");

    let default2 = session_of(&p, &fake, "default identity of listener 2");
    let mut s = unix_client(&path);
    socks5_handshake(&mut s, &Dest::Name(b32_name("site"), 80)).unwrap();
    assert_eq!(last_stream_id(&fake, 1), default2.id);
    let data = common::rng::random_bytes(100_000, 7);
    let mut w = s.try_clone().unwrap();
    let d = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&d).unwrap());
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo over the Unix socket differs");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(
        p.wait_for_line(&format!("{unix}: stream open"), WAIT).is_some(),
        "the client is named by its listener"
    );

    // UDP ASSOCIATE: no relay address a Unix client could be given.
    let mut u = unix_client(&path);
    u.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    u.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0]);
    u.write_all(&socks5_request_raw(3, 1, &[0, 0, 0, 0], 0)).unwrap();
    let mut r = [0u8; 10];
    u.read_exact(&mut r).unwrap();
    assert_eq!(r, s5_reply(7));
    assert_eq!(u.read(&mut m).unwrap(), 0, "closed after the refusal");

    // Tor's RESOLVE (0xF0) as over TCP: a virtual IPv4 address at once.
    let mut r = unix_client(&path);
    r.write_all(&[5, 1, 0]).unwrap();
    r.read_exact(&mut m).unwrap();
    r.write_all(&socks5_request(0xF0, &b32_name("site"), 0)).unwrap();
    let mut answer = [0u8; 10];
    r.read_exact(&mut answer).unwrap();
    assert_eq!(answer[..4], [5, 0, 0, 1], "RESOLVE answered with an IPv4 address: {answer:02x?}");

    stop(p, "TERM");
    assert!(!path.exists(), "socket removed on SIGTERM");
}

/// --unix-mode sets the mode; letting others connect needs --allow-remote.
#[test]
fn unix_mode() {
    let fake = FakeSam::start(Script::default());
    let (_dir, path) = place("listeners-mode", 0o755);
    let unix = unix_arg(&path);
    let p = start(&fake, &[&unix], &["--unix-mode", "0660"]);
    assert_eq!(fs::symlink_metadata(&path).unwrap().mode() & 0o7777, 0o660);
    stop(p, "INT");
    assert!(!path.exists(), "socket removed on SIGINT");

    let sam = fake.addr_arg();
    assert_fails(&["-s", &sam, "-l", &unix, "--unix-mode", "0666"], EXIT_USAGE, "--allow-remote");
    assert!(!path.exists());
    let p = start(&fake, &[&unix], &["--unix-mode", "0666", "--allow-remote"]);
    assert_eq!(fs::symlink_metadata(&path).unwrap().mode() & 0o7777, 0o666);
    stop(p, "TERM");
}

/// A socket left by a crashed run (nobody listens) is replaced; a live one is refused
/// and keeps working.
#[test]
fn stale_socket_replaced_live_one_refused() {
    let fake = FakeSam::start(Script::default());
    let (_dir, path) = place("listeners-stale", 0o700);
    let unix = unix_arg(&path);
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a stale socket");
    let p = start(&fake, &[&unix], &[]);
    assert!(p.wait_for_line("removed the stale socket", WAIT).is_some());
    let mut s = unix_client(&path);
    socks5_handshake(&mut s, &Dest::Name(b32_name("site"), 80)).unwrap();
    drop(s);

    // Now it is live: a second proxy must not take it.
    let sam = fake.addr_arg();
    assert_fails(&["-s", &sam, "-l", &unix], EXIT_CONFIG, "another process is listening");
    let mut s = unix_client(&path);
    socks5_handshake(&mut s, &Dest::Name(b32_name("site"), 80)).unwrap();
    drop(s);
    stop(p, "TERM");
    assert!(!path.exists());
}

/// Every refusal to start: its exit code, one line, and nothing touched.
#[test]
fn unix_refusals() {
    let sam = "127.0.0.1:9"; // never reached: these end before any SAM traffic
                             // A directory others may write to, without the sticky bit.
    let (open, path) = place("listeners-open", 0o777);
    let unix = unix_arg(&path);
    assert_fails(&["-s", sam, "-l", &unix], EXIT_CONFIG, "writable by group or others");
    assert_eq!(fs::read_dir(&open.0).unwrap().count(), 0, "nothing created");
    let (_g, path) = place("listeners-group", 0o770);
    assert_fails(&["-s", sam, "-l", &unix_arg(&path)], EXIT_CONFIG, "writable by group or others");

    // Something else at the path: never deleted or changed.
    let (dir, path) = place("listeners-file", 0o700);
    let unix = unix_arg(&path);
    fs::write(&path, b"precious").unwrap();
    assert_fails(&["-s", sam, "-l", &unix], EXIT_CONFIG, "exists and is not a socket");
    assert_eq!(fs::read(&path).unwrap(), b"precious");
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(dir.0.join("elsewhere"), &path).unwrap();
    assert_fails(&["-s", sam, "-l", &unix], EXIT_CONFIG, "exists and is not a socket");
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert_fails(&["-s", sam, "-l", &unix], EXIT_CONFIG, "exists and is not a socket");
    assert!(path.is_dir());
    fs::remove_dir(&path).unwrap();

    // A later listener's refusal leaves no socket of an earlier one behind.
    let (ok_dir, ok_path) = place("listeners-first", 0o700);
    let (_bad, bad_path) = place("listeners-second", 0o777);
    assert_fails(
        &["-s", sam, "-l", &unix_arg(&ok_path), "-l", &unix_arg(&bad_path)],
        EXIT_CONFIG,
        "writable by group or others",
    );
    assert_eq!(fs::read_dir(&ok_dir.0).unwrap().count(), 0, "the first socket was removed");

    // Paths the kernel cannot take, or that are not absolute: usage errors.
    let long = format!("unix:/tmp/{}", "a".repeat(120));
    assert_fails(&["-s", sam, "-l", &long], EXIT_USAGE, "longer than a socket path may be");
    assert_fails(&["-s", sam, "-l", "unix:socks"], EXIT_USAGE, "must be absolute");
    assert_fails(
        &["-s", sam, "-l", "127.0.0.1:0", "--unix-mode", "0600"],
        EXIT_USAGE,
        "needs a --listen unix:",
    );
    let many: Vec<String> = (0..17).flat_map(|_| ["-l".to_string(), "127.0.0.1:0".to_string()]).collect();
    let mut args = vec!["-s", sam];
    args.extend(many.iter().map(String::as_str));
    assert_fails(&args, EXIT_USAGE, "at most 16");
}

/// A sticky directory others may write to (as /tmp) is accepted: they cannot remove or
/// rename our socket there.
#[test]
fn sticky_directory_accepted() {
    let fake = FakeSam::start(Script::default());
    let (_dir, path) = place("listeners-sticky", 0o1777);
    let p = start(&fake, &[&unix_arg(&path)], &[]);
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    stop(p, "TERM");
    assert!(!path.exists());
}

// ------------------------------------------------------------ the port i2pd takes

/// 127.0.0.1:4447 taken (as by i2pd's own SOCKS proxy): exit 1 with the likely owner
/// and both ways out in the one line.
#[test]
fn default_port_taken_names_i2pd() {
    // Held here, or by someone else already: taken either way.
    let _held = std::net::TcpListener::bind("127.0.0.1:4447");
    let f = proxy::run_to_exit(&["-s", "127.0.0.1:9"], EXIT_WAIT);
    assert_eq!(f.status.code(), Some(EXIT_FAILURE), "{f:?}");
    let line = f.stderr.trim_end();
    assert!(!line.contains('\n'), "one line: {line}");
    for needle in
        ["cannot listen on 127.0.0.1:4447", "i2pd", "-l 127.0.0.1:4448", "[socksproxy] enabled = false"]
    {
        assert!(line.contains(needle), "{line:?} lacks {needle:?}");
    }
}
