//! Leak warnings and the status report, through the real binary on the fake SAM bridge:
//! a program that hands over IP addresses or names outside I2P is warned about at the
//! default log level, once per kind per 5 s and never with its target; SIGUSR1 (and the
//! shutdown) write the status block, whose counts are asserted exactly after a scripted
//! mix of clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{Script, WAIT};
use common::i2p::b32_name;
use common::proxy::*;
use common::setup::setup;
use common::status;
use common::TempDir;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

const IP_LINE: &str = "gave an IP address, not a name";
const NAME_LINE: &str = "asked for a name outside I2P";
/// The leak warnings' interval (src/leak.rs).
const INTERVAL: Duration = Duration::from_secs(5);

/// 100 IP requests in about a second: one warning now, and the next one, after the
/// interval, says how many were held back. No line names a target.
#[test]
fn leak_warnings_once_per_interval_without_targets() {
    let (_fake, p) = setup(Script::default(), &[]);
    let addr = p.addr();
    let t0 = Instant::now();
    for _ in 0..100 {
        assert_eq!(socks5_raw(addr, 1, &[93, 184, 216, 34], 80), s5_reply(0x02));
    }
    let burst = t0.elapsed();
    for host in ["example.com", "www.example.org", "localhost"] {
        let (_, reply) = socks5_connect(addr, host, 443, None);
        assert_eq!(reply, s5_reply(0x02), "{host}");
    }
    // SOCKS4 with an IP is the same kind, and held back with the others.
    let mut s = connect(addr);
    send(&mut s, &socks4_request([10, 1, 2, 3].into(), 8080, "u"));
    assert_eq!(read_exact_by(&mut s, 8, IO_TIMEOUT), S4_FAIL);
    let ip_line = p.wait_for_line(IP_LINE, WAIT).unwrap();
    let name_line = p.wait_for_line(NAME_LINE, WAIT).unwrap();
    assert!(burst < INTERVAL, "the burst took {burst:?}");
    assert_eq!(p.count_lines(IP_LINE), 1, "{:?}", p.lines());
    assert_eq!(p.count_lines(NAME_LINE), 1, "{:?}", p.lines());
    assert!(ip_line.contains("i2psocks: warn: SOCKS5 client 127.0.0.1:"), "{ip_line}");
    assert!(ip_line.contains("(port 80)") && ip_line.contains("socks5h://"), "{ip_line}");
    assert!(
        name_line.contains("SOCKS5 client 127.0.0.1:") && name_line.contains("(port 443)"),
        "{name_line}"
    );
    assert!(!ip_line.contains("more since"), "{ip_line}");

    // After the interval, the next one of each kind carries the count held back.
    thread::sleep(INTERVAL.saturating_sub(t0.elapsed()) + Duration::from_millis(300));
    assert_eq!(
        socks5_raw(addr, 4, &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 22),
        s5_reply(0x02)
    );
    let (_, reply) = socks5_connect(addr, "example.net", 25, None);
    assert_eq!(reply, s5_reply(0x02));
    let again = p.wait_for_nth_line(IP_LINE, 2, WAIT).unwrap();
    assert!(again.contains("(port 22)") && again.contains("(100 more since the last such line)"), "{again}");
    let again = p.wait_for_nth_line(NAME_LINE, 2, WAIT).unwrap();
    assert!(again.contains("(port 25)") && again.contains("(2 more since the last such line)"), "{again}");

    for l in p.lines() {
        for target in ["93.184.216.34", "example", "localhost", "10.1.2.3", "2001:db8"] {
            assert!(!l.contains(target), "a target in the log at the default level: {l}");
        }
    }
}

/// Every refusal reason, streams and bytes, counted exactly in the SIGUSR1 block and
/// again in the one written at shutdown.
#[test]
fn status_block_counts_a_scripted_mix() {
    // A refused or timed-out client's place is free only once its graceful close is over
    // (up to 200 ms after the client saw it, longer on a busy machine). The report counts
    // a client ended just before its worker gives the place back (src/main.rs, src/pool.rs),
    // so a moment more is allowed after it says none.
    fn places_free(p: &Proxy) {
        let t = Instant::now();
        while status::ask(p, WAIT).count("clients", "now") > 0 {
            assert!(t.elapsed() < WAIT, "the earlier clients still hold places");
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(100));
    }

    let dir = TempDir::new("status-mix");
    let users = dir.0.join("users");
    fs::write(&users, "app:pw\n").unwrap();
    fs::set_permissions(&users, fs::Permissions::from_mode(0o600)).unwrap();
    let args = [
        "--auth-file",
        users.to_str().unwrap(),
        "--handshake-timeout",
        "1",
        "--max-clients",
        "3",
        // The streams end when the client closes, not a hold later.
        "--half-close-wait",
        "0",
    ];
    let (_fake, mut p) = setup(Script::default(), &args);
    let addr = p.addr();
    let creds = Some(("app", "pw"));

    // Two streams through the echo peer: 1,000 and 3,000 bytes each way.
    for n in [1000, 3000] {
        let (mut s, reply) = socks5_connect(addr, &b32_name("status"), 80, creds);
        assert_eq!(reply, S5_OK);
        let data = vec![7u8; n];
        assert_eq!(echo_roundtrip(&mut s, &data, IO_TIMEOUT), data);
    }
    // Refused: 3 names outside I2P, 2 IP addresses, 1 wrong password, 2 malformed. Each
    // finds every place free (--max-clients 3), or it would count as overload.
    for host in ["example.com", "example.org", "example.net"] {
        places_free(&p);
        assert_eq!(socks5_connect(addr, host, 80, creds).1, s5_reply(0x02));
    }
    for _ in 0..2 {
        places_free(&p);
        let mut s = connect(addr);
        socks5_greet(&mut s, creds);
        send(&mut s, &socks5_request_raw(1, 1, &[1, 2, 3, 4], 80));
        assert_eq!(read_exact_by(&mut s, 10, IO_TIMEOUT), s5_reply(0x02));
    }
    places_free(&p);
    let mut s = connect(addr);
    send(&mut s, &[5, 1, 2]);
    assert_eq!(read_exact_by(&mut s, 2, IO_TIMEOUT), [5, 2]);
    send(&mut s, &socks5_auth("app", "wrong"));
    assert_eq!(read_exact_by(&mut s, 2, IO_TIMEOUT), [1, 1]);
    assert!(closed_within(&mut s, IO_TIMEOUT, 0));
    for garbage in [&b"\x07\x00"[..], b"GET / HTTP/1.0\r\n\r\n"] {
        places_free(&p);
        let mut s = connect(addr);
        send(&mut s, garbage);
        let _ = read_to_eof(&mut s, IO_TIMEOUT);
    }
    // One handshake that never finishes; then --max-clients 3 held by three more, and a
    // fourth refused for overload. The three time out as well.
    let mut slow = connect(addr);
    send(&mut slow, &[5]);
    assert!(closed_within(&mut slow, Duration::from_secs(5), 0));
    // The three must find every place free, or one of them counts as overload.
    places_free(&p);
    let held: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    thread::sleep(Duration::from_millis(300));
    let mut over = connect(addr);
    assert!(closed_within(&mut over, IO_TIMEOUT, 0), "the fourth client was not refused");
    for mut h in held {
        assert!(closed_within(&mut h, Duration::from_secs(5), 0));
    }
    // Every client done (the refusals' graceful closes take up to 200 ms).
    thread::sleep(Duration::from_millis(500));

    let r = status::ask(&p, WAIT);
    assert_eq!(
        r.line("refused"),
        "status: refused: 3 not I2P, 2 IP address given, 1 auth failed, 1 overload, \
         4 handshake timeout, 2 malformed"
    );
    assert_eq!(r.line("clients"), "status: clients: 0 now (--max-clients 3), 14 since start");
    assert_eq!(
        r.line("streams"),
        "status: streams: 0 now, 2 since start, 0 failed to open; 4000 bytes out, 4000 bytes in \
         (streams that ended)"
    );
    assert_eq!(r.count("identities", "default"), 1);
    assert_eq!(r.count("identities", "by credentials"), 1);
    assert_eq!(
        r.line("UDP"),
        "status: UDP: 0 associations now, 0 since start; datagrams 0 to I2P, 0 from I2P, 0 dropped"
    );
    let first = r.line("up");
    let b32 = p.ready_b32("default identity", Duration::ZERO).unwrap();
    assert!(first.ends_with(&format!("ready (SAM 3.1); default identity {b32}")), "{first}");
    assert!(r.count("identities", "built") >= 2, "{:?}", r.0);

    // The same block at shutdown.
    let before = p.count_lines(status::LAST);
    p.signal("TERM");
    p.wait_exit(WAIT).expect("exit after SIGTERM");
    assert_eq!(p.count_lines(status::LAST), before + 1);
    let at_exit = status::last(&p);
    assert_eq!(at_exit.line("refused"), r.line("refused"));
    assert_eq!(at_exit.line("streams"), r.line("streams"));
}

/// The bridge's state in the first line: down, then ready once it answers.
#[test]
fn status_shows_the_bridge_state() {
    let fake = common::fake_sam::FakeSam::start_stopped(Script::default());
    let sam = fake.addr_arg();
    let p = Proxy::start(&bridge_args(&sam, &[]));
    p.wait_for_line("cannot create a SAM session", WAIT).unwrap();
    let r = status::ask(&p, WAIT);
    assert!(r.line("up").ends_with(&format!("SAM bridge {sam}: down (retrying)")), "{:?}", r.0);
    assert!(r.count("identities", "failed") >= 1, "{:?}", r.0);
    fake.restart();
    // The default identity's line: a spare may be ready first.
    p.ready_b32("default identity", Duration::from_secs(30)).unwrap();
    let r = status::ask(&p, WAIT);
    assert!(r.line("up").contains(": ready (SAM 3.1); default identity "), "{:?}", r.0);
}
