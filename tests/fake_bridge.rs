//! Black-box tests of the real `i2psocks` binary against the scripted fake
//! SAM bridge (tests/common/fake_sam.rs): wire bytes both ways, the exact SAM
//! lines the proxy sends, the SAM RESULT → SOCKS reply table, local refusals
//! that never reach the bridge, bridge failures and recovery, limits and
//! deadlines, signals and usage errors (the CLI contract in man/i2psocks.8).
//!
//! Not here: a real router (tests/e2e_i2pd.rs) and the codec's byte-level cases
//! (unit tests in src/socks/mod.rs). Each test starts its own fake and proxy, so
//! they run in parallel; timeouts are short so the file runs in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Fault, Outcome, Peer, Script, WAIT};
use common::i2p::{b32_name, b32_of, b64_decode, make_dest, param, params};
use common::proxy::{self, *};
use common::rng::{pattern, random_bytes};
use common::setup::{setup, setup_wrapped};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// The HELLO every socket starts with (CLI contract).
const HELLO: &str = "HELLO VERSION MIN=3.1 MAX=3.3";
// ------------------------------------------------------------ the fake itself

fn sam_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 * 1024 {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            other => panic!("SAM line cut short: {other:?} after {line:?}"),
        }
    }
    String::from_utf8(line).unwrap()
}

fn raw_sam(fake: &FakeSam) -> TcpStream {
    let s = TcpStream::connect(fake.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// The fake checked directly with a TcpStream: HELLO, SESSION CREATE (a
/// valid key blob and its b32), STREAM CONNECT + echo, failures, PING,
/// kill_sessions, stop/restart, byte log.
#[test]
fn fake_sam_self_test() {
    let bad = b32_name("bad");
    let fake = FakeSam::start(Script::default().outcome(&bad, Outcome::Fail("CANT_REACH_PEER".into(), None)));

    let mut ctl = raw_sam(&fake);
    ctl.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\n").unwrap();
    assert_eq!(sam_line(&mut ctl), "HELLO REPLY RESULT=OK VERSION=3.1");
    let create = "SESSION CREATE STYLE=STREAM ID=abcDEF0123456789 DESTINATION=TRANSIENT SIGNATURE_TYPE=7";
    ctl.write_all(format!("{create}\n").as_bytes()).unwrap();
    let reply = sam_line(&mut ctl);
    let key = reply.strip_prefix("SESSION STATUS RESULT=OK DESTINATION=").expect(&reply);
    let blob = b64_decode(key).expect("I2P base64");
    assert_eq!(blob.len(), 391 + 256 + 32);
    assert_eq!(&blob[384..391], &[5, 0, 4, 0, 7, 0, 0]);
    assert!(fake.wait_sessions(1, WAIT));
    let rec = &fake.sessions()[0];
    assert_eq!(rec.line, create);
    assert_eq!(rec.id, "abcDEF0123456789");
    assert_eq!(rec.private_key, key);
    assert_eq!(rec.b32, b32_of(&blob[..391]));
    assert_eq!(rec.b32.len(), 52 + ".b32.i2p".len());

    // A second session gets another key.
    let mut ctl2 = raw_sam(&fake);
    ctl2.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\n").unwrap();
    sam_line(&mut ctl2);
    ctl2.write_all(b"SESSION CREATE STYLE=STREAM ID=two DESTINATION=TRANSIENT\n").unwrap();
    sam_line(&mut ctl2);
    assert!(fake.wait_sessions(2, WAIT));
    assert_ne!(fake.sessions()[0].b32, fake.sessions()[1].b32);

    // STREAM CONNECT + echo, with payload written before the reply is read.
    let ok = b32_name("ok");
    let mut st = raw_sam(&fake);
    st.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\n").unwrap();
    assert_eq!(sam_line(&mut st), "HELLO REPLY RESULT=OK VERSION=3.1");
    let connect = format!("STREAM CONNECT ID=abcDEF0123456789 DESTINATION={ok} SILENT=false");
    st.write_all(format!("{connect}\npayload!").as_bytes()).unwrap();
    assert_eq!(sam_line(&mut st), "STREAM STATUS RESULT=OK");
    st.write_all(b" more").unwrap();
    st.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    st.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"payload! more");
    assert_eq!(fake.stream_lines(), vec![connect.clone()]);
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
    assert_eq!(fake.received(conn), format!("{HELLO}\n{connect}\npayload! more").into_bytes());

    // A scripted failure.
    let mut st = raw_sam(&fake);
    st.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\n").unwrap();
    sam_line(&mut st);
    st.write_all(format!("STREAM CONNECT ID=x DESTINATION={bad} SILENT=false\n").as_bytes()).unwrap();
    assert_eq!(sam_line(&mut st), "STREAM STATUS RESULT=CANT_REACH_PEER");

    // Source and Sink peers.
    fake.set_outcome("src.i2p", Outcome::Ok(Peer::Source(100_000)));
    fake.set_outcome("sink.i2p", Outcome::Ok(Peer::Sink));
    let mut st = raw_sam(&fake);
    st.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\nSTREAM CONNECT ID=x DESTINATION=src.i2p SILENT=false\n")
        .unwrap();
    sam_line(&mut st);
    assert_eq!(sam_line(&mut st), "STREAM STATUS RESULT=OK");
    let mut got = Vec::new();
    st.read_to_end(&mut got).unwrap();
    assert_eq!(got, pattern(100_000));
    let mut st = raw_sam(&fake);
    st.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\nSTREAM CONNECT ID=x DESTINATION=sink.i2p SILENT=false\n")
        .unwrap();
    sam_line(&mut st);
    sam_line(&mut st);
    st.write_all(&[7u8; 5000]).unwrap();
    st.shutdown(Shutdown::Write).unwrap();
    assert!(fake.wait_sinks(1, WAIT));
    assert_eq!(fake.sinks()[0].count, 5000);
    assert_eq!(fake.sinks()[0].sha256, <[u8; 32]>::from(Sha256::digest([7u8; 5000])));

    // PING on both control sockets; answer one.
    assert_eq!(fake.send_ping("t1"), 2);
    assert_eq!(sam_line(&mut ctl), "PING t1");
    ctl.write_all(b"PONG t1\n").unwrap();
    assert!(fake.wait_pong("t1", WAIT));

    // kill_sessions closes the control sockets.
    fake.kill_sessions();
    let mut rest = Vec::new();
    assert_eq!(ctl.read_to_end(&mut rest).map(|_| ()).ok(), Some(()));
    assert_eq!(fake.live_sessions(), 0);

    // Faults.
    fake.set_fault(Some(Fault::GarbageHello));
    let mut st = raw_sam(&fake);
    st.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\n").unwrap();
    assert!(!sam_line(&mut st).starts_with("HELLO"));
    fake.set_fault(Some(Fault::CloseOnAccept));
    let mut st = raw_sam(&fake);
    let mut buf = [0u8; 1];
    assert!(matches!(st.read(&mut buf), Ok(0) | Err(_)));
    fake.set_fault(None);

    // Down and up on the same port.
    let n = fake.connections();
    fake.stop();
    assert!(TcpStream::connect_timeout(&fake.addr(), Duration::from_secs(1)).is_err());
    fake.restart();
    let mut st = raw_sam(&fake);
    st.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\n").unwrap();
    assert_eq!(sam_line(&mut st), "HELLO REPLY RESULT=OK VERSION=3.1");
    assert_eq!(fake.connections(), n + 1);
}

/// Dropping a fake with hanging connections ends its threads.
#[test]
fn fake_sam_drops_cleanly() {
    let fake = FakeSam::start(Script::default().default_outcome(Outcome::Hang));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = raw_sam(&fake);
        s.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\nSTREAM CONNECT ID=x DESTINATION=a.i2p SILENT=false\n")
            .unwrap();
        held.push(s);
    }
    assert!(fake.wait_streams(3, WAIT));
    let t = Instant::now();
    drop(fake);
    assert!(t.elapsed() < Duration::from_secs(3), "drop took {:?}", t.elapsed());
    for mut s in held {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert_eq!(rest, b"HELLO REPLY RESULT=OK VERSION=3.1\n");
    }
}

// ---------------------------------------------------------------- success

/// SOCKS5 to a b32: exact reply, 1 MiB echoed byte-exact, half-close passed
/// on (once the echo has been quiet for the default --half-close-wait), the
/// exact SAM bytes on the stream socket (nothing injected).
#[test]
fn socks5_echo_1mib_exact() {
    let (fake, p) = setup(Script::default(), &[]);
    let dest = b32_name("echo5");
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, [0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]);
    let data = random_bytes(1 << 20, 5);
    let back = echo_roundtrip(&mut s, &data, Duration::from_secs(20));
    assert!(back == data, "echoed bytes differ");
    assert!(read_to_eof(&mut s, HOLD_DEFAULT + IO_TIMEOUT).is_empty(), "bytes after the echo");

    let id = fake.sessions()[0].id.clone();
    let line = format!("STREAM CONNECT ID={id} DESTINATION={dest} SILENT=false");
    assert_eq!(fake.stream_lines(), vec![line.clone()]);
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
    let mut want = format!("{HELLO}\n{line}\n").into_bytes();
    want.extend_from_slice(&data);
    assert!(fake.received(conn) == want, "the bridge received other bytes than HELLO, CONNECT, payload");
}

/// SOCKS4a to a b32 (empty USERID): exact reply, echo, exact SAM line.
#[test]
fn socks4a_echo_exact() {
    let (fake, p) = setup(Script::default(), &[]);
    let dest = b32_name("echo4");
    let (mut s, reply) = socks4a_connect(p.addr(), &dest, 443, "");
    assert_eq!(reply, [0x00, 0x5A, 0, 0, 0, 0, 0, 0]);
    let data = random_bytes(256 * 1024, 4);
    assert!(echo_roundtrip(&mut s, &data, Duration::from_secs(20)) == data);
    let id = fake.sessions()[0].id.clone();
    assert_eq!(fake.stream_lines(), vec![format!("STREAM CONNECT ID={id} DESTINATION={dest} SILENT=false")]);
}

/// An address-book name goes to the bridge as is (normalized to lowercase).
#[test]
fn hostname_passed_through() {
    let (fake, p) = setup(Script::default(), &[]);
    let (mut s, reply) = socks5_connect(p.addr(), "Stats.I2P", 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"hi", IO_TIMEOUT), b"hi");
    let line = &fake.stream_lines()[0];
    assert_eq!(param(line, "DESTINATION"), Some("stats.i2p"), "{line}");
}

/// Server → client and client → server, byte-exact, in separate streams.
#[test]
fn source_and_sink_exact() {
    let src = b32_name("source");
    let sink = b32_name("sink");
    let script = Script::default()
        .outcome(&src, Outcome::Ok(Peer::Source(700_000)))
        .outcome(&sink, Outcome::Ok(Peer::Sink));
    let (fake, p) = setup(script, &[]);

    let (mut s, reply) = socks5_connect(p.addr(), &src, 80, None);
    assert_eq!(reply, S5_OK);
    let got = read_to_eof(&mut s, Duration::from_secs(20));
    assert!(got == pattern(700_000), "source bytes differ ({} bytes)", got.len());

    let (mut s, reply) = socks4a_connect(p.addr(), &sink, 80, "");
    assert_eq!(reply, S4_OK);
    let data = random_bytes(900_000, 9);
    for c in data.chunks(10_000) {
        send(&mut s, c);
    }
    s.shutdown(Shutdown::Write).unwrap();
    assert!(fake.wait_sinks(1, Duration::from_secs(20)));
    let rec = &fake.sinks()[0];
    assert_eq!(rec.count, data.len());
    assert_eq!(rec.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
}

/// With SAM 3.3 negotiated the port goes along as TO_PORT.
#[test]
fn to_port_with_sam_33() {
    let (fake, p) = setup(Script::default().version("3.3"), &[]);
    let dest = b32_name("port");
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 8080, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"x", IO_TIMEOUT), b"x");
    let line = fake.stream_lines()[0].clone();
    let id = fake.sessions()[0].id.clone();
    assert!(line.starts_with(&format!("STREAM CONNECT ID={id} DESTINATION={dest} SILENT=false")), "{line}");
    let mut got = params(&line);
    got.sort();
    let mut want =
        vec![("ID", id.as_str()), ("DESTINATION", dest.as_str()), ("SILENT", "false"), ("TO_PORT", "8080")];
    want.sort();
    assert_eq!(got, want, "{line}");
}

/// SESSION CREATE: its words, the tunnel flags and a passed-through option;
/// and the logged address is the fake's b32 of that session.
#[test]
fn session_create_line_and_ready_log() {
    let (fake, p) = setup(Script::default(), &["--sam-option", "inbound.lengthVariance=0"]);
    let rec = fake.sessions()[0].clone();
    let received = String::from_utf8(fake.received(rec.conn)).unwrap();
    assert!(received.starts_with(&format!("{HELLO}\n{}\n", rec.line)), "{received:?}");
    assert!(rec.line.starts_with("SESSION CREATE "), "{}", rec.line);
    assert_eq!(param(&rec.line, "STYLE"), Some("STREAM"));
    let id = param(&rec.line, "ID").unwrap();
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|c| c.is_ascii_alphanumeric()), "{id}");
    assert_eq!(param(&rec.line, "DESTINATION"), Some("TRANSIENT"));
    assert_eq!(param(&rec.line, "SIGNATURE_TYPE"), Some("7"));
    assert_eq!(param(&rec.line, "inbound.length"), Some("0"));
    assert_eq!(param(&rec.line, "outbound.length"), Some("0"));
    assert_eq!(param(&rec.line, "inbound.quantity"), Some("1"));
    assert_eq!(param(&rec.line, "outbound.quantity"), Some("1"));
    assert_eq!(param(&rec.line, "i2cp.leaseSetEncType"), Some("4,0"));
    assert_eq!(param(&rec.line, "inbound.lengthVariance"), Some("0"));
    let mut keys: Vec<&str> = params(&rec.line).iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), before, "a key repeated: {}", rec.line);

    assert_eq!(p.ready_b32("default identity", WAIT).unwrap(), rec.b32);
    assert_eq!(p.count_lines(&rec.private_key), 0, "private key logged");
}

/// A client's SOCKS5 credentials select an identity of its own (--isolate
/// auth, the default): a second SESSION CREATE, and the stream uses it.
#[test]
fn credentials_get_their_own_session() {
    let (fake, p) = setup(Script::default(), &[]);
    let dest = b32_name("iso");
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, Some(("app1", "pw")));
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"iso", IO_TIMEOUT), b"iso");
    assert!(fake.wait_sessions(2, WAIT));
    let ids: Vec<String> = fake.sessions().iter().map(|r| r.id.clone()).collect();
    assert_ne!(ids[0], ids[1]);
    let line = &fake.stream_lines()[0];
    assert_eq!(param(line, "ID"), Some(ids[1].as_str()), "{line}");
}

// ---------------------------------------------------------------- reply table

/// Each SAM RESULT gives its SOCKS5 reply and SOCKS4 5B (the proxy's one reply table),
/// with and without MESSAGE.
#[test]
fn sam_results_map_to_socks_replies() {
    let table: &[(&str, u8)] = &[
        ("CANT_REACH_PEER", 0x04),
        ("INVALID_KEY", 0x04),
        ("KEY_NOT_FOUND", 0x04),
        ("PEER_NOT_FOUND", 0x04),
        ("CONNECTION_REFUSED", 0x05),
        ("TIMEOUT", 0x06),
        ("I2P_ERROR", 0x01),
        ("INVALID_ID", 0x01),
    ];
    let mut script = Script::default();
    for (i, (res, _)) in table.iter().enumerate() {
        let msg = (i % 2 == 1).then(|| format!("fake says {res}"));
        script = script.outcome(&b32_name(res), Outcome::Fail(res.to_string(), msg));
    }
    // I2P_ERROR is asked about with a NAMING LOOKUP: here the router knows the target
    // (tests/reply_codes.rs has the other answers).
    script = script.name(&b32_name("I2P_ERROR"), &make_dest(1).0);
    let (fake, p) = setup(script, &[]);
    for (res, rep) in table {
        let (mut s, reply) = socks5_connect(p.addr(), &b32_name(res), 80, None);
        assert_eq!(reply, s5_reply(*rep), "SOCKS5 for {res}");
        assert!(closed_within(&mut s, Duration::from_secs(2), 0), "not closed after {res}");
        let (mut s, reply) = socks4a_connect(p.addr(), &b32_name(res), 80, "");
        assert_eq!(reply, S4_FAIL, "SOCKS4a for {res}");
        assert!(closed_within(&mut s, Duration::from_secs(2), 0), "not closed after {res}");
    }
    assert_eq!(fake.streams().len(), table.len() * 2);
    assert_eq!(fake.lookups(), vec![b32_name("I2P_ERROR"); 2]);
}

/// The success reply waits for RESULT=OK.
#[test]
fn success_only_after_result_ok() {
    let slow = b32_name("slow");
    let script = Script::default()
        .outcome(&slow, Outcome::Delayed(Duration::from_millis(1200), Box::new(Outcome::Ok(Peer::Echo))));
    let (fake, p) = setup(script, &[]);
    let mut s = connect(p.addr());
    send(&mut s, &[5, 1, 0]);
    expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
    send(&mut s, &socks5_request(1, &slow, 80));
    assert!(fake.wait_streams(1, WAIT));
    assert!(silent_for(&mut s, Duration::from_millis(800)), "a reply before the bridge answered");
    expect_bytes(&mut s, &S5_OK, IO_TIMEOUT);

    // The same for a failure: no reply before the bridge's.
    let late_fail = b32_name("late-fail");
    fake.set_outcome(
        &late_fail,
        Outcome::Delayed(
            Duration::from_millis(1200),
            Box::new(Outcome::Fail("CANT_REACH_PEER".into(), None)),
        ),
    );
    let mut s = connect(p.addr());
    send(&mut s, &socks4a_request(&late_fail, 80, ""));
    assert!(fake.wait_streams(2, WAIT));
    assert!(silent_for(&mut s, Duration::from_millis(800)), "a reply before the bridge answered");
    expect_bytes(&mut s, &S4_FAIL, IO_TIMEOUT);
}

// ---------------------------------------------------------------- refusals

/// Clearnet names, IPs and malformed I2P names get 02 / 5B, and nothing
/// reaches the bridge (not even a connection).
#[test]
fn refused_targets_never_reach_the_bridge() {
    let (fake, p) = setup(Script::default(), &[]);
    let conns = fake.connections();
    let b32 = b32_name("x");
    let short_b32 = format!("{}.b32.i2p", &b32[..51]);
    let names = [
        "example.com",
        "localhost",
        "127.0.0.1",
        "abc.b32.i2p",
        short_b32.as_str(),
        "exa mple.i2p",
        "a\"b.i2p",
        "i2p",
        "example.i2p.com",
    ];
    for name in names {
        let (mut s, reply) = socks5_connect(p.addr(), name, 80, None);
        assert_eq!(reply, s5_reply(0x02), "SOCKS5 {name:?}");
        assert!(closed_within(&mut s, Duration::from_secs(2), 0));
        let (_, reply) = socks4a_connect(p.addr(), name, 80, "");
        assert_eq!(reply, S4_FAIL, "SOCKS4a {name:?}");
    }
    // Port 0 to a valid name.
    let (_, reply) = socks5_connect(p.addr(), &b32, 0, None);
    assert_eq!(reply, s5_reply(0x02), "port 0");
    // ATYP 1 (IPv4) and 4 (IPv6).
    for req in [vec![5, 1, 0, 1, 1, 2, 3, 4, 0, 80], {
        let mut v = vec![5, 1, 0, 4];
        v.extend_from_slice(&[0u8; 15]);
        v.push(1);
        v.extend_from_slice(&[0, 80]);
        v
    }] {
        let mut s = connect(p.addr());
        send(&mut s, &[5, 1, 0]);
        expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
        send(&mut s, &req);
        expect_bytes(&mut s, &s5_reply(0x02), IO_TIMEOUT);
    }
    // SOCKS4 with a real IP.
    let mut s = connect(p.addr());
    send(&mut s, &[4, 1, 0, 80, 93, 184, 216, 34, 0]);
    expect_bytes(&mut s, &S4_FAIL, IO_TIMEOUT);

    thread::sleep(Duration::from_millis(200));
    assert!(fake.streams().is_empty(), "STREAM CONNECT sent: {:?}", fake.stream_lines());
    assert_eq!(fake.connections(), conns, "the proxy opened a SAM connection for a refused target");
}

/// BIND and UDP ASSOCIATE → 07; an unknown ATYP → 08.
#[test]
fn unsupported_commands_and_address_types() {
    let (fake, p) = setup(Script::default(), &[]);
    let dest = b32_name("cmd");
    // BIND (UDP ASSOCIATE is served: tests/udp.rs).
    let mut s = connect(p.addr());
    send(&mut s, &[5, 1, 0]);
    expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
    send(&mut s, &socks5_request(2, &dest, 80));
    expect_bytes(&mut s, &s5_reply(0x07), IO_TIMEOUT);
    let mut s = connect(p.addr());
    send(&mut s, &[5, 1, 0]);
    expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
    send(&mut s, &[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]);
    expect_bytes(&mut s, &s5_reply(0x08), IO_TIMEOUT);
    // SOCKS4 BIND.
    let mut s = connect(p.addr());
    let mut req = socks4a_request(&dest, 80, "");
    req[1] = 2;
    send(&mut s, &req);
    expect_bytes(&mut s, &S4_FAIL, IO_TIMEOUT);
    assert!(fake.streams().is_empty());
}

/// An HTTP request on the SOCKS port gets a short 501.
#[test]
fn http_request_gets_501() {
    let (_fake, p) = setup(Script::default(), &[]);
    let mut s = connect(p.addr());
    send(&mut s, b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
    let got = read_to_eof(&mut s, IO_TIMEOUT);
    assert!(got.starts_with(b"HTTP/1.0 501"), "{:?}", String::from_utf8_lossy(&got));
}

// ------------------------------------------------------ bridge failures

/// Bridge down at start: the proxy binds anyway, warns naming the bridge,
/// refuses clients with 01 at once; once the bridge is up a session comes
/// within the backoff and clients succeed.
#[test]
fn bridge_down_at_start_then_up() {
    let fake = FakeSam::start_stopped(Script::default());
    let sam = fake.addr_arg();
    let p = Proxy::start(&bridge_args(&sam, &["--connect-timeout", "5"]));
    let warn = p.wait_for_line(&sam, WAIT).unwrap_or_else(|| panic!("no line naming {sam}"));
    assert!(warn.contains("warn"), "{warn}");
    let dest = b32_name("down");
    let t = Instant::now();
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, s5_reply(0x01));
    assert!(t.elapsed() < Duration::from_secs(1), "refusal took {:?}", t.elapsed());
    assert!(closed_within(&mut s, Duration::from_secs(2), 0));
    let (_, reply) = socks4a_connect(p.addr(), &dest, 80, "");
    assert_eq!(reply, S4_FAIL);

    fake.restart();
    // The first retries come 1 s, 2 s, 4 s apart.
    assert!(fake.wait_sessions(1, Duration::from_secs(10)), "no SESSION CREATE after the bridge came up");
    // The default identity's line: a spare may be ready first.
    assert!(p.ready_b32("default identity", WAIT).is_some());
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"up", IO_TIMEOUT), b"up");
}

/// The control socket closed under the proxy: a new SESSION CREATE, and new
/// clients use the new session.
#[test]
fn session_rebuilt_after_control_socket_closes() {
    let (fake, p) = setup(Script::default(), &[]);
    let first = fake.sessions()[0].clone();
    fake.kill_sessions();
    assert!(fake.wait_sessions(2, Duration::from_secs(10)), "no new SESSION CREATE");
    let second = fake.sessions()[1].clone();
    assert_ne!(first.id, second.id);
    assert!(p.wait_for_nth_line(READY, 2, WAIT).unwrap().contains(&second.b32));
    assert!(fake.wait_live_session(WAIT));
    let dest = b32_name("rebuilt");
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"again", IO_TIMEOUT), b"again");
    let line = fake.stream_lines().last().cloned().unwrap();
    assert_eq!(param(&line, "ID"), Some(second.id.as_str()), "{line}");
}

/// A session the bridge keeps answering but through which streams stop opening, even to a
/// target it reached before (emissary 0.4 after cut-off bulk streams): after
/// `sam::reach::STUCK_FAILURES` (3) CANT_REACH_PEER replies in a row for such targets, over
/// `sam::reach::STUCK_SPAN` (30 s), it is ended and rebuilt, with a warning and a count in the
/// status report. Refusals of targets it never reached change nothing, however many.
#[test]
fn stuck_session_rebuilt() {
    const SPAN: Duration = Duration::from_secs(30);
    let site = b32_name("stuck-site");
    let cant = || Outcome::Fail("CANT_REACH_PEER".into(), None);
    let script = Script::default().default_outcome(cant()).outcome(&site, Outcome::Ok(Peer::Echo));
    let (fake, p) = setup(script, &[]);
    let first = fake.sessions()[0].clone();
    let (mut s, reply) = socks5_connect(p.addr(), &site, 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"once", IO_TIMEOUT), b"once");
    drop(s);
    fake.set_outcome(&site, cant());
    let t0 = Instant::now();
    let refuse = |host: &str| {
        let (_, reply) = socks5_connect(p.addr(), host, 80, None);
        assert_eq!(reply, s5_reply(0x04), "{host}");
    };
    // Two refusals of the site, and unknown targets typed many times over the whole span.
    refuse(&site);
    for i in 0..20 {
        refuse(&b32_name(&format!("typo{i}")));
    }
    refuse(&site);
    while t0.elapsed() < SPAN {
        refuse(&b32_name("typo-late"));
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(fake.sessions().len(), 1, "rebuilt before the third refusal of a reached target");
    assert_eq!(p.count_lines("SAM session lost"), 0);

    // The third, after the span: the session is ended and a new one built.
    refuse(&site);
    assert!(fake.wait_sessions(2, WAIT), "the stuck session was not rebuilt");
    assert!(
        p.wait_for_line("SAM session lost (no stream opened for 30 s", WAIT).is_some(),
        "{:?}",
        p.lines()
    );
    let second = fake.sessions()[1].clone();
    assert_ne!(first.id, second.id);
    assert!(fake.wait_live_session(WAIT));
    fake.set_outcome(&site, Outcome::Ok(Peer::Echo));
    let (mut s, reply) = socks5_connect(p.addr(), &site, 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"again", IO_TIMEOUT), b"again");
    let line = fake.stream_lines().last().cloned().unwrap();
    assert_eq!(param(&line, "ID"), Some(second.id.as_str()), "{line}");
    let report = common::status::ask(&p, WAIT);
    assert_eq!(report.count("identities", "rebuilt"), 1);
    assert_eq!(report.count("identities", "of them stuck"), 1);
}

/// The bridge goes away mid-run and comes back: refusals meanwhile, service after.
#[test]
fn bridge_restart_mid_run() {
    let (fake, p) = setup(Script::default(), &["--connect-timeout", "3"]);
    fake.stop();
    assert!(p.wait_for_line("SAM session lost", WAIT).is_some() || p.count_lines("warn") > 0);
    let dest = b32_name("bounce");
    let t = Instant::now();
    let (_, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply[1], 0x01, "{reply:02x?}");
    assert!(t.elapsed() < Duration::from_secs(2), "refusal took {:?}", t.elapsed());
    fake.restart();
    assert!(fake.wait_sessions(2, Duration::from_secs(10)));
    assert!(fake.wait_live_session(WAIT));
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"back", IO_TIMEOUT), b"back");
}

/// PING on the control socket is answered with PONG and the same text.
#[test]
fn ping_answered_with_pong() {
    let (fake, _p) = setup(Script::default().version("3.2"), &[]);
    assert_eq!(fake.send_ping("fake-1234"), 1);
    assert!(fake.wait_pong("fake-1234", WAIT), "no PONG: {:?}", fake.other_lines());
    assert_eq!(fake.live_sessions(), 1, "the session should survive a PING");
}

/// The bridge refuses HELLO or SESSION CREATE: clients get 01 promptly and
/// the proxy keeps running (and warns).
#[test]
fn session_refused_gives_general_failure() {
    for script in [
        Script { hello_result: Some("NOVERSION".into()), ..Script::default() },
        Script { session_result: Some("I2P_ERROR".into()), ..Script::default() },
        Script::default().fault(Fault::GarbageHello),
        Script::default().fault(Fault::CloseOnAccept),
    ] {
        let what = format!("{script:?}");
        let fake = FakeSam::start(script);
        let sam = fake.addr_arg();
        let p = Proxy::start(&["-s", &sam, "--hops", "0", "--connect-timeout", "5"]);
        assert!(p.wait_for_line(&sam, WAIT).is_some(), "{what}: no warning naming {sam}");
        let t = Instant::now();
        let (_, reply) = socks5_connect(p.addr(), &b32_name("r"), 80, None);
        assert_eq!(reply, s5_reply(0x01), "{what}");
        assert!(t.elapsed() < Duration::from_secs(1), "{what}: refusal took {:?}", t.elapsed());
        assert!(fake.streams().is_empty());
    }
}

/// Broken answers on a stream socket (after the session is up) give 01
/// promptly; a HELLO that never comes hits the connect deadline (06). (A close
/// after a good HELLO is no broken answer: tests/reply_codes.rs.)
#[test]
fn broken_stream_replies() {
    let (fake, p) = setup(Script::default(), &["--connect-timeout", "2"]);
    fake.set_outcome(&b32_name("garbage"), Outcome::Garbage);
    fake.set_outcome(&b32_name("huge"), Outcome::HugeLine);
    for name in ["garbage", "huge"] {
        let t = Instant::now();
        let (_, reply) = socks5_connect(p.addr(), &b32_name(name), 80, None);
        assert_eq!(reply, s5_reply(0x01), "{name}");
        assert!(t.elapsed() < Duration::from_millis(1500), "{name}: took {:?}", t.elapsed());
    }
    for (fault, rep) in [
        (Fault::GarbageHello, 0x01),
        (Fault::HugeHello, 0x01),
        (Fault::CloseOnAccept, 0x01),
        (Fault::HangHello, 0x06),
    ] {
        fake.set_fault(Some(fault));
        let t = Instant::now();
        let (_, reply) = socks5_connect(p.addr(), &b32_name("f"), 80, None);
        assert_eq!(reply, s5_reply(rep), "{fault:?}");
        assert!(t.elapsed() < Duration::from_millis(3500), "{fault:?}: took {:?}", t.elapsed());
    }
    fake.set_fault(None);
    // The session survived all that.
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("fine"), 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"ok", IO_TIMEOUT), b"ok");
}

/// A bridge that never answers STREAM CONNECT: 06 at --connect-timeout.
#[test]
fn hung_stream_connect_times_out() {
    let (fake, p) = setup(Script::default().default_outcome(Outcome::Hang), &["--connect-timeout", "2"]);
    let t = Instant::now();
    let (_, reply) = socks5_connect(p.addr(), &b32_name("hang"), 80, None);
    let took = t.elapsed();
    assert_eq!(reply, s5_reply(0x06));
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(fake.streams().len(), 1);
}

// ------------------------------------------------------ framing

/// Greeting, request and payload in one write: all delivered, once.
#[test]
fn pipelined_greeting_request_payload() {
    let (fake, p) = setup(Script::default(), &[]);
    let dest = b32_name("pipe");
    let mut s = connect(p.addr());
    let mut all = vec![5, 1, 0];
    all.extend_from_slice(&socks5_request(1, &dest, 80));
    all.extend_from_slice(b"early payload");
    send(&mut s, &all);
    expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
    expect_bytes(&mut s, &S5_OK, IO_TIMEOUT);
    expect_bytes(&mut s, b"early payload", IO_TIMEOUT);
    s.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut s, IO_TIMEOUT).is_empty());
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
    let got = fake.received(conn);
    assert!(got.ends_with(b"SILENT=false\nearly payload"), "{:?}", String::from_utf8_lossy(&got));

    // The same with SOCKS5 auth in the same write.
    let mut s = connect(p.addr());
    let mut all = vec![5, 1, 2];
    all.extend_from_slice(&socks5_auth("u", "p"));
    all.extend_from_slice(&socks5_request(1, &dest, 80));
    all.extend_from_slice(b"more");
    send(&mut s, &all);
    expect_bytes(&mut s, &[5, 2, 1, 0], IO_TIMEOUT);
    expect_bytes(&mut s, &S5_OK, IO_TIMEOUT);
    expect_bytes(&mut s, b"more", IO_TIMEOUT);

    // SOCKS4a request and payload together.
    let mut s = connect(p.addr());
    let mut all = socks4a_request(&dest, 80, "");
    all.extend_from_slice(b"four");
    send(&mut s, &all);
    expect_bytes(&mut s, &S4_OK, IO_TIMEOUT);
    expect_bytes(&mut s, b"four", IO_TIMEOUT);
}

/// One byte per write through the whole handshake.
#[test]
fn one_byte_per_write() {
    let (_fake, p) = setup(Script::default(), &[]);
    let dest = b32_name("slowly");
    let gap = Duration::from_millis(2);
    let mut s = connect(p.addr());
    send_bytewise(&mut s, &[5, 1, 0], gap);
    expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
    send_bytewise(&mut s, &socks5_request(1, &dest, 80), gap);
    expect_bytes(&mut s, &S5_OK, IO_TIMEOUT);
    send_bytewise(&mut s, b"abc", gap);
    expect_bytes(&mut s, b"abc", IO_TIMEOUT);

    let mut s = connect(p.addr());
    send_bytewise(&mut s, &socks4a_request(&dest, 80, "someone"), gap);
    expect_bytes(&mut s, &S4_OK, IO_TIMEOUT);
    assert_eq!(echo_roundtrip(&mut s, b"xyz", IO_TIMEOUT), b"xyz");
}

// ------------------------------------------------------ half-close

/// The default --half-close-wait.
const HOLD_DEFAULT: Duration = Duration::from_secs(i2psocks::cli::DEFAULT_HALF_CLOSE_WAIT);
/// How much later than due a held FIN may be seen (the fake polls its
/// sockets every 50 ms; thread wake-ups on a loaded machine).
const HOLD_SLACK: Duration = Duration::from_millis(700);

/// A client's half-close while the I2P side keeps answering: the request
/// goes first, the answer keeps coming, and the FIN reaches the bridge
/// only after the I2P side has been silent for the wait.
#[test]
fn half_close_held_while_i2p_answers() {
    const CHUNKS: usize = 6;
    const CHUNK: usize = 1000;
    let gap = Duration::from_millis(400);
    let wait = Duration::from_secs(1);
    let dest = b32_name("drip");
    let script =
        Script::default().outcome(&dest, Outcome::Ok(Peer::Drip { count: CHUNKS, size: CHUNK, gap }));
    let (fake, p) = setup(script, &["--half-close-wait", "1"]);
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, S5_OK);
    send(&mut s, b"request");
    let t0 = Instant::now();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let mut last = t0;
    for _ in 0..CHUNKS {
        got.extend(read_exact_by(&mut s, CHUNK, IO_TIMEOUT));
        last = Instant::now();
    }
    assert!(got == pattern(CHUNKS * CHUNK), "answer bytes differ");
    assert!(read_to_eof(&mut s, IO_TIMEOUT).is_empty());
    let eof = last.elapsed();
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
    let fin_at = fake.closed_at(conn).unwrap().saturating_duration_since(last);
    eprintln!(
        "half-close during a {:?} answer, wait {wait:?}: FIN at the bridge {fin_at:?} and EOF at the \
         client {eof:?} after the last answer byte",
        gap * CHUNKS as u32
    );
    // Had the FIN gone on during the answer, the peer would close right
    // after its last chunk.
    assert!(fin_at + Duration::from_millis(50) >= wait, "FIN reached the bridge {fin_at:?} after the answer");
    assert!(fin_at < wait + HOLD_SLACK, "FIN reached the bridge only {fin_at:?} after the answer");
    assert!(eof >= fin_at);
    assert!(fake.received(conn).ends_with(b"SILENT=false\nrequest"), "the request reached the bridge first");
}

/// With the default wait, an echo peer (which closes only after EOF) gets
/// the client's FIN that long after the echo, the client's EOF follows, and the
/// proxy burns no CPU while it holds the FIN.
#[test]
fn half_close_released_after_i2p_silence() {
    let (fake, p) = setup(Script::default(), &[]);
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("quiet"), 80, None);
    assert_eq!(reply, S5_OK);
    send(&mut s, b"ping");
    let t0 = Instant::now();
    s.shutdown(Shutdown::Write).unwrap();
    expect_bytes(&mut s, b"ping", IO_TIMEOUT);
    let cpu = common::process::cpu_time(p.pid());
    assert!(read_to_eof(&mut s, IO_TIMEOUT).is_empty());
    let eof = t0.elapsed();
    let burnt = common::process::cpu_time(p.pid()).saturating_sub(cpu);
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
    let fin_at = fake.eof_at(conn).unwrap().saturating_duration_since(t0);
    eprintln!("default wait: FIN at the bridge {fin_at:?}, EOF at the client {eof:?} after the half-close; CPU meanwhile {burnt:?}");
    assert!(fin_at >= HOLD_DEFAULT, "FIN passed after {fin_at:?}");
    assert!(eof >= fin_at && eof < HOLD_DEFAULT + HOLD_SLACK, "EOF after {eof:?}");
    assert!(burnt < Duration::from_millis(100), "holding the FIN cost {burnt:?} of CPU");
}

/// The I2P side closes after answering: the client's FIN goes on at once,
/// the whole answer and EOF reach the client.
#[test]
fn half_close_released_when_i2p_closes() {
    const SIZE: usize = 300_000;
    let dest = b32_name("answers-and-closes");
    let (fake, p) = setup(Script::default().outcome(&dest, Outcome::Ok(Peer::Source(SIZE))), &[]);
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, S5_OK);
    send(&mut s, b"request");
    let t0 = Instant::now();
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_to_eof(&mut s, IO_TIMEOUT);
    assert!(got == pattern(SIZE), "answer differs ({} bytes)", got.len());
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
    // The peer waits for our FIN before it lets the connection go.
    let fin_at = fake.closed_at(conn).unwrap().saturating_duration_since(t0);
    eprintln!("I2P side closed first: FIN at the bridge {fin_at:?} after the half-close");
    assert!(fin_at < Duration::from_secs(1), "FIN held {fin_at:?} after the I2P side closed");
}

/// --half-close-wait 0: the FIN goes on at once, as before the hold
/// existed (the echo peer closes right after it).
#[test]
fn half_close_wait_0_passes_fin_at_once() {
    let (fake, p) = setup(Script::default(), &["--half-close-wait", "0"]);
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("at-once"), 80, None);
    assert_eq!(reply, S5_OK);
    send(&mut s, b"abc");
    let t0 = Instant::now();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s, IO_TIMEOUT), b"abc");
    let eof = t0.elapsed();
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
    eprintln!("--half-close-wait 0: EOF at the client {eof:?} after the half-close");
    assert!(eof < Duration::from_millis(500), "EOF after {eof:?}");
}

/// --idle-timeout still bounds a held FIN: a peer that never answers nor
/// closes is cut at the idle limit, not at the (longer) wait.
#[test]
fn half_close_hold_bounded_by_idle_timeout() {
    let dest = b32_name("silent");
    let script = Script::default().outcome(&dest, Outcome::Ok(Peer::Hang));
    let (fake, p) = setup(script, &["--idle-timeout", "1", "--half-close-wait", "30"]);
    let (mut s, reply) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!(reply, S5_OK);
    let t0 = Instant::now();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(closed_within(&mut s, IO_TIMEOUT, 0));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "closed after {took:?}");
    let conn = fake.streams()[0].conn;
    assert!(fake.wait_closed(conn, WAIT));
}

// ------------------------------------------------------ limits

/// --handshake-timeout 1: a client that stalls after one byte is closed in
/// about a second, while another client is served meanwhile.
#[test]
fn handshake_deadline() {
    let (_fake, p) = setup(Script::default(), &["--handshake-timeout", "1"]);
    let t = Instant::now();
    let mut slow = connect(p.addr());
    send(&mut slow, &[5]);
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("served"), 80, None);
    assert_eq!(reply, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"meanwhile", IO_TIMEOUT), b"meanwhile");
    assert!(closed_within(&mut slow, Duration::from_secs(3), 0), "stalled client not closed");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
}

/// --max-clients 2: a third concurrent client is closed at once; once the
/// first two are done a new client is served.
#[test]
fn max_clients_overflow() {
    let (_fake, p) = setup(Script::default(), &["--max-clients", "2"]);
    let dest = b32_name("busy");
    let (mut a, ra) = socks5_connect(p.addr(), &dest, 80, None);
    let (mut b, rb) = socks5_connect(p.addr(), &dest, 80, None);
    assert_eq!((ra, rb), (S5_OK, S5_OK));
    let t = Instant::now();
    let mut c = connect(p.addr());
    let _ = c.write_all(&[5, 1, 0]);
    assert!(closed_within(&mut c, Duration::from_secs(1), 0), "third client not closed");
    assert!(t.elapsed() < Duration::from_millis(1200));
    assert_eq!(echo_roundtrip(&mut a, b"a", IO_TIMEOUT), b"a");
    assert_eq!(echo_roundtrip(&mut b, b"b", IO_TIMEOUT), b"b");
    drop((a, b));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(p.addr());
        send(&mut s, &[5, 1, 0]);
        let (got, _) = proxy::read_n(&mut s, 2, Duration::from_secs(2));
        if got == [5, 0] {
            send(&mut s, &socks5_request(1, &dest, 80));
            expect_bytes(&mut s, &S5_OK, IO_TIMEOUT);
            assert_eq!(echo_roundtrip(&mut s, b"later", IO_TIMEOUT), b"later");
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed after the first clients left");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A client that half-closes after its echo, its FIN then held for the wait.
fn held_half_close(proxy: std::net::SocketAddr, dest: &str) -> TcpStream {
    let (mut s, reply) = socks5_connect(proxy, dest, 80, None);
    assert_eq!(reply, S5_OK);
    echo_open(&mut s, b"h");
    s.shutdown(Shutdown::Write).unwrap();
    s
}

/// One echo on a stream that stays open both ways.
fn echo_open(s: &mut TcpStream, data: &[u8]) {
    send(s, data);
    expect_bytes(s, data, IO_TIMEOUT);
}

/// --max-clients 2, both places taken by held half-closes: a third client
/// is served at once, on the place of the oldest hold, whose FIN reaches
/// the bridge then (not after the 30 s wait) and whose client gets EOF;
/// the newer hold stays. With both places taken by open streams (nothing
/// held) a client is refused at once, as before; the status report counts
/// the hold passed on early.
#[test]
fn held_half_close_gives_its_place_to_a_new_client() {
    let (fake, p) = setup(Script::default(), &["--max-clients", "2", "--half-close-wait", "30"]);
    let mut old = held_half_close(p.addr(), &b32_name("old"));
    let _newer = held_half_close(p.addr(), &b32_name("newer"));
    assert!(fake.wait_streams(2, WAIT));
    let conns: Vec<usize> = fake.streams().iter().map(|r| r.conn).collect();
    // Both FINs held.
    assert!(silent_for(&mut old, Duration::from_millis(300)));
    assert!(fake.eof_at(conns[0]).is_none() && fake.eof_at(conns[1]).is_none());

    let t = Instant::now();
    let (mut third, reply) = socks5_connect(p.addr(), &b32_name("third"), 80, None);
    let took = t.elapsed();
    assert_eq!(reply, S5_OK);
    echo_open(&mut third, b"served");
    eprintln!("a new client on the place of a held half-close: CONNECT answered after {took:?}");
    assert!(took < Duration::from_secs(1), "CONNECT answered after {took:?}");
    assert!(fake.wait_closed(conns[0], WAIT), "the oldest hold's stream did not end");
    assert!(fake.eof_at(conns[0]).is_some(), "the oldest hold's FIN did not reach the bridge");
    assert!(read_to_eof(&mut old, IO_TIMEOUT).is_empty());
    assert!(fake.eof_at(conns[1]).is_none(), "the newer hold was passed on too");

    // The newer hold gives its place to a fourth; then nothing is held.
    let (mut fourth, reply) = socks5_connect(p.addr(), &b32_name("fourth"), 80, None);
    assert_eq!(reply, S5_OK);
    assert!(fake.wait_closed(conns[1], WAIT));
    assert!(fake.eof_at(conns[1]).is_some());
    let t = Instant::now();
    let mut fifth = connect(p.addr());
    let _ = fifth.write_all(&[5, 1, 0]);
    assert!(closed_within(&mut fifth, Duration::from_secs(1), 0), "a client beyond open streams was served");
    assert!(t.elapsed() < Duration::from_millis(1200), "refused after {:?}", t.elapsed());
    echo_open(&mut third, b"3");
    echo_open(&mut fourth, b"4");

    let r = common::status::ask(&p, WAIT);
    assert_eq!(
        r.line("half-closes"),
        "status: half-closes held: 0 now, 2 since start, 2 passed on early for a new client"
    );
    assert_eq!(r.count("refused", "overload"), 1);
}

/// --max-clients 64 keeps one place (64 / 64) free of holds: the client
/// that takes the last place has the oldest hold passed on at once, so
/// the next client finds a place without waiting; the other holds stay.
/// (--half-close-max 64 lets holds fill the places.)
#[test]
fn a_reserve_of_places_is_kept_free_of_holds() {
    const MAX: usize = 64;
    let args = ["--max-clients", "64", "--half-close-max", "64", "--half-close-wait", "30"];
    let (fake, p) = setup(Script::default(), &args);
    let mut held: Vec<TcpStream> =
        (0..MAX).map(|i| held_half_close(p.addr(), &b32_name(&format!("held-{i}")))).collect();
    assert!(fake.wait_streams(MAX, WAIT));
    let conns: Vec<usize> = fake.streams().iter().map(|r| r.conn).collect();
    assert!(fake.wait_closed(conns[0], WAIT), "the oldest hold was not passed on");
    assert!(read_to_eof(&mut held[0], IO_TIMEOUT).is_empty());
    assert!(silent_for(&mut held[1], Duration::from_millis(200)), "the second hold was passed on too");
    assert!(conns[1..].iter().all(|c| fake.eof_at(*c).is_none()));
    let (mut next, reply) = socks5_connect(p.addr(), &b32_name("next"), 80, None);
    assert_eq!(reply, S5_OK);
    echo_open(&mut next, b"next");
    assert!(fake.wait_closed(conns[1], WAIT), "admitting into the reserve passes the next hold on");
    assert!(conns[2..].iter().all(|c| fake.eof_at(*c).is_none()));
}

/// --half-close-max 2 with places to spare: a third held half-close has
/// the oldest passed on at once (its FIN reaches the bridge and its client
/// gets EOF, not after the 30 s wait); the two newer ones stay held, and
/// the status report counts the one passed on early.
#[test]
fn holds_beyond_the_limit_pass_the_oldest_on() {
    let (fake, p) = setup(Script::default(), &["--half-close-max", "2", "--half-close-wait", "30"]);
    let mut held: Vec<TcpStream> =
        ["first", "second"].iter().map(|n| held_half_close(p.addr(), &b32_name(n))).collect();
    assert!(fake.wait_streams(2, WAIT));
    assert!(silent_for(&mut held[0], Duration::from_millis(300)), "the first hold within the limit ended");
    held.push(held_half_close(p.addr(), &b32_name("third")));
    assert!(fake.wait_streams(3, WAIT));
    let conns: Vec<usize> = fake.streams().iter().map(|r| r.conn).collect();
    assert!(fake.wait_closed(conns[0], WAIT), "the oldest hold was not passed on");
    assert!(fake.eof_at(conns[0]).is_some(), "the oldest hold's FIN did not reach the bridge");
    assert!(read_to_eof(&mut held[0], IO_TIMEOUT).is_empty());
    assert!(silent_for(&mut held[1], Duration::from_millis(300)), "the second hold was passed on too");
    assert!(conns[1..].iter().all(|c| fake.eof_at(*c).is_none()));
    let r = common::status::ask(&p, WAIT);
    assert_eq!(
        r.line("half-closes"),
        "status: half-closes held: 2 now, 3 since start, 1 passed on early for a new client"
    );
}

// ------------------------------------------------------ process

/// Usage errors: exit 64 and one line starting `i2psocks: `.
#[test]
fn bad_flags_exit_64() {
    for args in [
        &["--bogus"][..],
        &["--max-clients", "0"],
        &["--hops", "9"],
        &["-l", "0.0.0.0:0"],
        &["--sam-option", "a=b c"],
        &["--sam-option", "bad"],
        &["--handshake-timeout", "0"],
        &["-l", "localhost:4447"],
    ] {
        let out = run_to_exit(args, Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(64), "{args:?}: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {:?}", out.stderr);
        assert!(lines[0].starts_with("i2psocks: "), "{args:?}: {:?}", lines[0]);
    }
}

/// -h and -V exit 0 on stdout.
#[test]
fn help_and_version() {
    let out = run_to_exit(&["-h"], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.starts_with("usage: i2psocks "), "{:?}", out.stdout);
    let out = run_to_exit(&["-V"], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.trim(), format!("i2psocks {}", env!("CARGO_PKG_VERSION")));
}

/// SIGTERM with no clients: exit 0 promptly.
#[test]
fn sigterm_exits_promptly() {
    let (fake, mut p) = setup(Script::default(), &[]);
    p.signal("TERM");
    let t = Instant::now();
    let st = p.wait_exit(Duration::from_secs(3)).expect("still running 3 s after SIGTERM");
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    // The session was closed on the way out.
    assert!(fake.wait_closed(fake.sessions()[0].conn, WAIT));
}

/// SIGTERM with a relay open: it may finish within --shutdown-grace, then
/// the proxy exits 0.
#[test]
fn sigterm_with_open_relay() {
    let (_fake, mut p) = setup(Script::default(), &["--shutdown-grace", "1"]);
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("grace"), 80, None);
    assert_eq!(reply, S5_OK);
    send(&mut s, b"x");
    expect_bytes(&mut s, b"x", IO_TIMEOUT);
    p.signal("TERM");
    // New clients are no longer served.
    thread::sleep(Duration::from_millis(300));
    if let Ok(mut c) = TcpStream::connect_timeout(&p.addr(), Duration::from_millis(500)) {
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = c.write_all(&[5, 1, 0]);
        let mut buf = [0u8; 2];
        assert!(!matches!(c.read(&mut buf), Ok(n) if n > 0), "served after SIGTERM");
    }
    let st = p.wait_exit(Duration::from_secs(4)).expect("still running after the grace time");
    assert_eq!(st.code(), Some(0), "{st:?}");
}

/// SIGTERM while a relay holds its client's FIN for up to 600 s: the held
/// relay, asleep until its deadline, is woken for the stop after the grace
/// time, and the proxy exits with no client left behind.
#[test]
fn sigterm_with_held_half_close() {
    let (_fake, mut p) = setup(Script::default(), &["--shutdown-grace", "1", "--half-close-wait", "600"]);
    let _held = held_half_close(p.addr(), &b32_name("held-at-exit"));
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    p.signal("TERM");
    let st = p.wait_exit(Duration::from_secs(4)).expect("still running after the grace time");
    eprintln!("SIGTERM with a held half-close: exit after {:?}", t.elapsed());
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert_eq!(p.count_lines("still running at exit"), 0, "a relay outlived the stop");
}

// ----------------------------------------------------------------- memory

/// The NUL-separated strings of /proc/PID/`file` (environ, cmdline).
fn proc_strings(pid: u32, file: &str) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The proxy starts itself again, in the same process and with the same
/// arguments, with MALLOC_ARENA_MAX=4 and glibc's stack cache off
/// (src/memory.rs), and serves; a value the environment already has is
/// kept, without a restart.
#[test]
fn malloc_arenas_limited_by_a_restart() {
    let clean = ["env", "-u", "MALLOC_ARENA_MAX", "-u", "GLIBC_TUNABLES"];
    let (_fake, p) = setup_wrapped(&clean, Script::default(), &[]);
    let env = proc_strings(p.pid(), "environ");
    assert_eq!(
        env.iter().filter(|v| v.starts_with("MALLOC_ARENA_MAX=")).collect::<Vec<_>>(),
        ["MALLOC_ARENA_MAX=4"]
    );
    assert_eq!(
        env.iter().filter(|v| v.starts_with("GLIBC_TUNABLES=")).collect::<Vec<_>>(),
        ["GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0"]
    );
    let args = proc_strings(p.pid(), "cmdline");
    assert_eq!(args.first().map(String::as_str), Some(proxy::bin()), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--hops", "0"]), "{args:?}");
    let (mut s, reply) = socks5_connect(p.addr(), &b32_name("arenas"), 80, None);
    assert_eq!(reply, S5_OK);
    send(&mut s, b"x");
    expect_bytes(&mut s, b"x", IO_TIMEOUT);

    let (_fake, p) = setup_wrapped(&["env", "MALLOC_ARENA_MAX=7"], Script::default(), &[]);
    let env = proc_strings(p.pid(), "environ");
    assert_eq!(
        env.iter().filter(|v| v.starts_with("MALLOC_ARENA_MAX=")).collect::<Vec<_>>(),
        ["MALLOC_ARENA_MAX=7"]
    );
    assert!(!env.iter().any(|v| v.starts_with("GLIBC_TUNABLES=")), "{env:?}");
}
