//! SOCKS5 UDP ASSOCIATE, black box: the real binary against the fake SAM
//! bridge's datagram side (tests/common/fake_sam.rs). Round trips both ways
//! with the sender shown as its `.b32.i2p`, the exact SAM lines and UDP
//! frames the proxy sends, NAMING LOOKUP caching, association teardown with
//! the TCP control connection, the source check, the datagrams that must be
//! dropped, isolation between identities, and a refusal when the bridge is
//! down. The reply does not wait for the datagram session: what the client
//! sends meanwhile waits within its bound and leaves in order, and a
//! session that never comes ends the association at --connect-timeout.
//! A real router: tests/e2e_udp.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Script, WAIT};
use common::i2p::make_dest;
use common::proxy::Proxy;
use common::setup::start_on;
use common::udp_client::{associate, associate_from, datagram, echo_on, udp_echo_roundtrip, Echo, UdpAssoc};
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// How long a datagram that should arrive gets.
const ARRIVE: Duration = Duration::from_secs(5);
/// How long we watch for a datagram that must not arrive.
const QUIET: Duration = Duration::from_millis(500);
/// i2psocks' MAX_PAYLOAD.
const MAX_PAYLOAD: usize = 31 * 1024;

/// A fake with `script` and a proxy on it (at -v) using its datagram port.
fn setup(script: Script, args: &[&str]) -> (FakeSam, Proxy) {
    let fake = FakeSam::start(script);
    let udp = fake.udp_arg();
    let mut all = vec!["--sam-udp", udp.as_str(), "-v"];
    all.extend_from_slice(args);
    let p = start_on(&fake, &[], &all);
    (fake, p)
}

/// An echo peer known by `name` (and by its b32): (b64, b32).
fn peer(n: u64) -> (String, String) {
    make_dest(1_000 + n)
}

fn echo_script(names: &[(&str, &str)]) -> Script {
    let mut s = Script::default().datagram_echo(true);
    for (n, d) in names {
        s = s.name(n, d);
    }
    s
}

fn wait_until(timeout: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The reply's BND is the relay on the listen address; a round trip to a
/// name and to a b32 comes back from the peer's b32; the proxy sent exactly
/// `3.0 <id> <base64>\n` + payload; each name was looked up once, on the
/// DATAGRAM session's control socket.
#[test]
fn round_trip_both_ways() {
    let (d, b32) = peer(1);
    let (fake, p) = setup(echo_script(&[("echo.i2p", &d), (&b32, &d)]), &[]);
    let a = associate(p.addr(), None).unwrap();
    assert_eq!(&a.reply[..4], &[5, 0, 0, 1]);
    assert_eq!(a.relay.ip(), p.addr().ip());
    assert_ne!(a.relay.port(), 0);
    assert_eq!(a.reply.len(), 10);

    let echo =
        |target, port, count, size| Echo { target, port, sender: Some(&b32), count, size, timeout: ARRIVE };
    let r = echo_on(&a, &echo("echo.i2p", 53, 5, 100)).unwrap();
    assert_eq!((r.sent, r.resent), (5, 0));
    let r = echo_on(&a, &echo(&b32, 7, 3, 16)).unwrap();
    assert_eq!((r.sent, r.resent), (3, 0));

    let sessions = fake.dg_sessions();
    assert_eq!(sessions.len(), 1, "one DATAGRAM session for the identity");
    let create = fake.sessions().into_iter().find(|s| s.id == sessions[0].id).unwrap().line;
    assert!(create.starts_with("SESSION CREATE STYLE=DATAGRAM ID="), "{create}");
    assert!(create.contains(" DESTINATION=TRANSIENT SIGNATURE_TYPE=7 PORT="), "{create}");
    assert!(create.contains(" HOST=127.0.0.1 inbound.length=0 outbound.length=0"), "{create}");
    let dgs = fake.datagrams();
    assert_eq!(dgs.len(), 8);
    for g in &dgs {
        assert_eq!(g.header, format!("3.0 {} {d}", sessions[0].id));
    }
    assert_eq!(dgs[0].payload.len(), 100);
    assert_eq!(fake.lookups(), vec!["echo.i2p".to_string(), b32.clone()]);
    drop(a);
}

/// SAM 3.2-style headers carry FROM_PORT: it becomes DST.PORT. A datagram
/// nobody asked for (another sender) reaches the identity's association.
#[test]
fn from_port_and_unsolicited() {
    let (d, b32) = peer(2);
    let mut script = echo_script(&[("echo.i2p", &d)]);
    script.echo_from_port = Some(4242);
    let (fake, p) = setup(script, &[]);
    let a = associate(p.addr(), None).unwrap();
    a.send("echo.i2p", 9, b"ping");
    let r = a.recv(ARRIVE).expect("echo");
    assert_eq!((r.host.as_str(), r.port, &r.data[..], r.atyp), (b32.as_str(), 4242, &b"ping"[..], 3));

    let (other, other_b32) = peer(3);
    fake.inject_datagram(0, &other, b"\x00unsolicited\xff");
    let r = a.recv(ARRIVE).expect("injected datagram");
    assert_eq!((r.host, r.port, r.data), (other_b32, 0, b"\x00unsolicited\xff".to_vec()));
    // Unreadable forwards are dropped, the association keeps working.
    fake.inject_datagram(0, "not-a-destination", b"x");
    fake.inject_datagram(0, &other, b"after");
    assert_eq!(a.recv(ARRIVE).expect("next").data, b"after");
}

/// Closing the TCP control connection ends the association: the relay port
/// is closed (ICMP port unreachable), nothing more goes either way, and the
/// identity's datagram session closes after --session-idle-timeout.
#[test]
fn teardown_on_tcp_close() {
    let (d, _) = peer(4);
    let (fake, p) = setup(echo_script(&[("echo.i2p", &d)]), &["--session-idle-timeout", "1"]);
    let a = associate(p.addr(), None).unwrap();
    a.send("echo.i2p", 1, b"one");
    assert_eq!(a.recv(ARRIVE).expect("echo").data, b"one");
    let UdpAssoc { control, udp, relay, .. } = a;
    drop(control);

    udp.connect(relay).unwrap();
    let closed = wait_until(ARRIVE, || {
        let _ = udp.send(&datagram(0, "echo.i2p", 1, b"late"));
        udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        matches!(udp.recv(&mut [0u8; 64]), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
    });
    assert!(closed, "the relay port still accepts datagrams after the TCP close");
    fake.inject_datagram(0, &d, b"to nobody");
    udp.set_read_timeout(Some(QUIET)).unwrap();
    let mut buf = [0u8; 64];
    assert!(udp.recv(&mut buf).is_err(), "a datagram was delivered after the association ended");
    assert_eq!(fake.datagrams().len(), 1, "nothing relayed after the close");
    assert!(
        wait_until(Duration::from_secs(10), || fake.dg_session_closed(0)),
        "session not closed when idle"
    );
}

/// Only the client's address may use the relay: the first port heard from
/// (all-zero request), or the one the request named.
#[test]
fn foreign_sources_dropped() {
    let (d, b32) = peer(5);
    let (fake, p) = setup(echo_script(&[("echo.i2p", &d)]), &[]);
    let a = associate(p.addr(), None).unwrap();
    a.send("echo.i2p", 1, b"from A");
    assert_eq!(a.recv(ARRIVE).expect("echo").data, b"from A");
    let intruder = UdpSocket::bind("127.0.0.1:0").unwrap();
    intruder.send_to(&datagram(0, "echo.i2p", 1, b"from B"), a.relay).unwrap();
    a.send("echo.i2p", 1, b"A again");
    assert_eq!(a.recv(ARRIVE).expect("echo").data, b"A again");
    intruder.set_read_timeout(Some(QUIET)).unwrap();
    assert!(intruder.recv_from(&mut [0u8; 256]).is_err(), "the intruder got a datagram");
    let payloads: Vec<Vec<u8>> = fake.datagrams().into_iter().map(|g| g.payload).collect();
    assert_eq!(payloads, vec![b"from A".to_vec(), b"A again".to_vec()]);

    // The request names our port: another port is refused even first.
    let mine = UdpSocket::bind("127.0.0.1:0").unwrap();
    let named = mine.local_addr().unwrap();
    let b = associate_from(p.addr(), None, mine, Some(named)).unwrap();
    intruder.send_to(&datagram(0, "echo.i2p", 1, b"B first"), b.relay).unwrap();
    thread::sleep(Duration::from_millis(200));
    b.send("echo.i2p", 1, b"named");
    let r = b.recv(ARRIVE).expect("echo");
    assert_eq!((r.host, r.data), (b32, b"named".to_vec()));
    assert!(fake.datagrams().iter().all(|g| g.payload != b"B first"));
}

/// FRAG≠0, IP targets, clearnet and malformed names, bad headers and
/// oversize payloads are dropped; the association keeps working, and a
/// payload of exactly the limit passes.
#[test]
fn bad_datagrams_dropped() {
    let (d, _) = peer(6);
    let (fake, p) = setup(echo_script(&[("echo.i2p", &d)]), &[]);
    let a = associate(p.addr(), None).unwrap();
    let mut bad: Vec<Vec<u8>> = vec![
        datagram(1, "echo.i2p", 1, b"fragment"),
        datagram(0x80, "echo.i2p", 1, b"last fragment"),
        b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35ipv4".to_vec(),
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x35ipv6"
            .to_vec(),
        datagram(0, "example.com", 53, b"clearnet"),
        datagram(0, "1.2.3.4", 53, b"ip as a name"),
        datagram(0, "bad..i2p", 53, b"malformed name"),
        datagram(0, "abc.b32.i2p", 53, b"short b32"),
        b"\x00\x01\x00\x03\x08echo.i2p\x00\x01rsv".to_vec(),
        b"\x00\x00\x00\x03\x08echo.i2p\x00".to_vec(),
        b"\x00\x00\x00\x07\x00".to_vec(),
        b"\x00\x00\x00\x03\x00\x00\x01".to_vec(),
        b"".to_vec(),
        datagram(0, "echo.i2p", 1, &vec![b'x'; MAX_PAYLOAD + 1]),
    ];
    for b in bad.drain(..) {
        a.send_raw(&b);
    }
    let max = vec![b'm'; MAX_PAYLOAD];
    a.send("echo.i2p", 1, &max);
    let r = a.recv(ARRIVE).expect("the datagram at the size limit");
    assert_eq!(r.data, max);
    assert!(a.silent_for(QUIET));
    let dgs = fake.datagrams();
    assert_eq!(dgs.len(), 1, "only the valid datagram reached the bridge");
    assert_eq!(fake.lookups(), vec!["echo.i2p".to_string()]);
    assert!(p.wait_for_line("dropped a datagram", WAIT).is_some(), "drops are logged at debug");
}

/// A name the router does not know: looked up once (negative cache), and
/// its datagrams dropped.
#[test]
fn unknown_name_looked_up_once() {
    let (d, _) = peer(7);
    let (fake, p) = setup(echo_script(&[("echo.i2p", &d)]), &[]);
    let a = associate(p.addr(), None).unwrap();
    for i in 0..5u8 {
        a.send("nobody.i2p", 1, &[i]);
    }
    a.send("echo.i2p", 1, b"known");
    assert_eq!(a.recv(ARRIVE).expect("echo").data, b"known");
    assert_eq!(fake.lookups(), vec!["nobody.i2p".to_string(), "echo.i2p".to_string()]);
    assert_eq!(fake.datagrams().len(), 1);
}

/// Different credentials: different identities, hence different DATAGRAM
/// sessions; a datagram reaching one session reaches only its client.
#[test]
fn identities_are_isolated() {
    let (d, _) = peer(8);
    let (fake, p) = setup(echo_script(&[("echo.i2p", &d)]), &[]);
    let a = associate(p.addr(), Some(("alice", "x"))).unwrap();
    let b = associate(p.addr(), Some(("bob", "y"))).unwrap();
    assert!(fake.wait_dg_sessions(2, WAIT));
    let ids: Vec<String> = fake.dg_sessions().into_iter().map(|s| s.id).collect();
    assert_ne!(ids[0], ids[1]);
    a.send("echo.i2p", 1, b"alice");
    b.send("echo.i2p", 1, b"bob");
    assert_eq!(a.recv(ARRIVE).expect("alice's echo").data, b"alice");
    assert_eq!(b.recv(ARRIVE).expect("bob's echo").data, b"bob");
    // Both sessions are built at once: which is alice's shows in what it sent.
    let sender_of = |payload: &[u8]| fake.datagrams().into_iter().find(|g| g.payload == payload).unwrap().id;
    let (alices, bobs) = (sender_of(b"alice"), sender_of(b"bob"));
    assert_ne!(alices, bobs);
    assert!(ids.contains(&alices) && ids.contains(&bobs));
    let (other, _) = peer(9);
    fake.inject_datagram(ids.iter().position(|i| *i == alices).unwrap(), &other, b"for alice");
    assert_eq!(a.recv(ARRIVE).expect("injected").data, b"for alice");
    assert!(b.silent_for(QUIET), "bob got alice's datagram");
}

/// Two associations on one identity: each gets the replies of the peer it
/// talked to, not the other's.
#[test]
fn shared_identity_routes_replies() {
    let (d1, _) = peer(10);
    let (d2, _) = peer(11);
    let (fake, p) = setup(echo_script(&[("one.i2p", &d1), ("two.i2p", &d2)]), &[]);
    let a = associate(p.addr(), None).unwrap();
    let b = associate(p.addr(), None).unwrap();
    a.send("one.i2p", 1, b"a1");
    assert_eq!(a.recv(ARRIVE).expect("a's echo").data, b"a1");
    b.send("two.i2p", 1, b"b1");
    assert_eq!(b.recv(ARRIVE).expect("b's echo").data, b"b1");
    assert!(a.silent_for(QUIET) && b.silent_for(QUIET));
    assert_eq!(fake.dg_sessions().len(), 1);
}

/// The bridge is gone (the identity's session is known to be down): UDP
/// ASSOCIATE gets 0x01 at once.
#[test]
fn bridge_down_refuses() {
    let (fake, p) = setup(Script::default(), &[]);
    fake.stop();
    assert!(p.wait_for_line("default identity: SAM session lost", WAIT).is_some());
    let t = Instant::now();
    assert_eq!(associate(p.addr(), None).err(), Some(0x01));
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// Datagram sessions that take this long to build (STREAM ones do not).
const DG_BUILD: Duration = Duration::from_millis(1500);

fn slow_datagrams(script: Script) -> Script {
    Script { dg_session_delay: Some(DG_BUILD), ..script }
}

/// The association of `a` ended: its TCP connection is closed by the proxy.
fn control_closed(a: &mut common::udp_client::UdpAssoc, within: Duration) -> bool {
    common::proxy::closed_within(&mut a.control, within, 0)
}

/// The reply comes at once, while the datagram session is still being
/// built; datagrams sent right after it wait and then reach the bridge in
/// order, and their echoes come back.
#[test]
fn reply_at_once_datagrams_wait_in_order() {
    let (d, b32) = peer(14);
    let (fake, p) = setup(slow_datagrams(echo_script(&[("echo.i2p", &d)])), &[]);
    let t = Instant::now();
    let a = associate(p.addr(), None).unwrap();
    let replied = t.elapsed();
    assert!(replied < Duration::from_millis(100), "reply after {replied:?}");
    assert!(fake.dg_sessions().is_empty(), "answered before the session was built");
    for i in 0..20u8 {
        a.send("echo.i2p", 1, &[i; 100]);
    }
    assert!(fake.wait_datagrams(20, DG_BUILD + WAIT));
    let payloads: Vec<u8> = fake.datagrams().iter().map(|g| g.payload[0]).collect();
    assert_eq!(payloads, (0..20).collect::<Vec<u8>>(), "not all, or not in order");
    for i in 0..20u8 {
        let r = a.recv(ARRIVE).expect("echo");
        assert_eq!((r.host.as_str(), r.data), (b32.as_str(), vec![i; 100]));
    }
    assert_eq!(fake.lookups(), vec!["echo.i2p".to_string()]);
    eprintln!(
        "UDP ASSOCIATE replied in {replied:?}; session built in {DG_BUILD:?}; 20 waiting datagrams delivered"
    );
}

/// Beyond 64 datagrams, or 128 KiB, what arrives before the session is
/// ready is dropped and counted; what fits leaves in order.
#[test]
fn waiting_is_bounded() {
    let (d, _) = peer(15);
    let (fake, p) = setup(slow_datagrams(echo_script(&[("echo.i2p", &d)])), &[]);
    let a = associate(p.addr(), None).unwrap();
    for i in 0..100u8 {
        a.send("echo.i2p", 1, &[i; 16]);
    }
    assert!(fake.wait_datagrams(64, DG_BUILD + WAIT));
    std::thread::sleep(QUIET);
    let got: Vec<u8> = fake.datagrams().iter().map(|g| g.payload[0]).collect();
    assert_eq!(got, (0..64).collect::<Vec<u8>>(), "the first 64, in order");
    drop(a);
    assert!(p.wait_for_line("waiting queue full 36", WAIT).is_some(), "drops not counted");

    // The byte bound, on another identity's association: 4 x 31 KiB fit in 128 KiB.
    // Paced, and not echoed: a burst of 31 KiB datagrams overflows a UDP
    // socket's kernel buffer (~208 KiB) before its reader gets to it, the
    // relay's or the fake bridge's, which is not what is tested here.
    fake.script(|s| s.datagram_echo = false);
    let b = associate(p.addr(), Some(("big", "x"))).unwrap();
    for i in 0..20u8 {
        b.send("echo.i2p", 1, &vec![i; MAX_PAYLOAD]);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fake.wait_datagrams(64 + 4, DG_BUILD + WAIT), "{} datagrams", fake.datagrams().len());
    std::thread::sleep(QUIET);
    let big: Vec<u8> = fake.datagrams()[64..].iter().map(|g| g.payload[0]).collect();
    assert_eq!(big, (0..4).collect::<Vec<u8>>());
    drop(b);
    assert!(p.wait_for_line("waiting queue full 16", WAIT).is_some());
}

/// A datagram session still not ready at --connect-timeout ends the
/// association: its TCP connection is closed, with one warning.
#[test]
fn session_never_ready_closes_the_association() {
    let script = Script { dg_session_delay: Some(Duration::from_secs(30)), ..Script::default() };
    let (_fake, p) = setup(script, &["--connect-timeout", "2"]);
    let t = Instant::now();
    let mut a = associate(p.addr(), None).unwrap();
    assert!(t.elapsed() < Duration::from_millis(100));
    a.send("echo.i2p", 1, b"never sent");
    assert!(control_closed(&mut a, Duration::from_secs(5)), "association kept");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "closed after {took:?}");
    let warn = p.wait_for_line("was not ready within", WAIT).unwrap();
    assert!(warn.contains("warn: ") && warn.contains("(2 s)"), "{warn}");
    assert_eq!(p.count_lines("was not ready within"), 1);
}

/// The bridge refuses the datagram session: the association ends promptly
/// (the builder's warning says why).
#[test]
fn session_refused_closes_the_association() {
    let (fake, p) = setup(Script::default(), &[]);
    fake.script(|s| s.session_result = Some("I2P_ERROR".into()));
    let t = Instant::now();
    let mut a = associate(p.addr(), None).unwrap();
    assert!(control_closed(&mut a, Duration::from_secs(3)), "association kept");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(p.wait_for_line("cannot create a SAM datagram session", WAIT).is_some());
}

/// The helper the real-router test uses, end to end on the fake.
#[test]
fn echo_roundtrip_helper() {
    let (d, b32) = peer(12);
    let (_fake, p) = setup(echo_script(&[("echo.i2p", &d)]), &[]);
    let echo =
        Echo { target: "echo.i2p", port: 7, sender: Some(&b32), count: 100, size: 1024, timeout: ARRIVE };
    let r = udp_echo_roundtrip(p.addr(), Some(("u", "p")), &echo).unwrap();
    assert_eq!((r.sent, r.sender), (100, b32));
}

/// A real SOCKS UDP client: Python's PySocks (Debian python3-socks, which
/// tests/deps.sh installs). It sends UDP ASSOCIATE with the name "0" and its port.
#[test]
fn pysocks_client() {
    let python = "/usr/bin/python3";
    let has = Command::new(python).args(["-c", "import socks"]).output().is_ok_and(|o| o.status.success());
    assert!(has, "{python} lacks the socks module: install Debian's python3-socks (tests/deps.sh does)");
    let (d, b32) = peer(13);
    let (_fake, p) = setup(echo_script(&[("echo.i2p", &d)]), &[]);
    let script = format!(
        "import socks, socket\n\
         s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.set_proxy(socks.SOCKS5, '127.0.0.1', {port})\n\
         s.settimeout(10)\n\
         s.sendto(b'hello from pysocks', ('echo.i2p', 53))\n\
         data, (host, port) = s.recvfrom(4096)\n\
         print(data.decode(), host.decode(), port)\n",
        port = p.addr().port()
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pysocks failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), format!("hello from pysocks {b32} 0"));
}
