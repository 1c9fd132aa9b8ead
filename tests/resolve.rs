//! Tor's RESOLVE and RESOLVE_PTR through the real binary on the fake bridge
//! (tests/common/fake_sam.rs): `.i2p` names get virtual addresses from
//! `--virtual-net` without any traffic to the bridge, a CONNECT to such an
//! address (SOCKS4 DSTIP, SOCKS5 ATYP 1, SOCKS5 ATYP 3 with the address as
//! text, as torsocks sends it) reaches the name with the same identity as a
//! CONNECT by name, and everything else is refused locally. The map's bound
//! is shown with a /24, whose size bounds it.
//!
//! Not here: the map's exact addresses and quarantine times (unit tests in
//! src/virtual_net.rs), the codec's bytes (src/socks/mod.rs), and torsocks
//! itself on a real router (tests/e2e/compat.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Script, WAIT};
use common::i2p::{b32_name, param};
use common::process::rss_kib;
use common::proxy::*;
use common::setup::setup;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

/// The default --virtual-net.
fn in_default_net(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 10 && b & 0xc0 == 0xc0
}

/// The last octet is neither .0 nor .255.
fn usable(ip: Ipv4Addr) -> bool {
    !matches!(ip.octets()[3], 0 | 255)
}

/// What the bridge has seen so far: connections and bytes.
fn bridge_traffic(fake: &FakeSam) -> (usize, usize) {
    (fake.connections(), fake.all_received().iter().map(Vec::len).sum())
}

/// SOCKS5 CONNECT with `request` (greeting with `creds` first): the 10-byte reply and
/// the stream, echoing.
fn s5_connect_raw(p: &Proxy, creds: Option<(&str, &str)>, request: &[u8]) -> ([u8; 10], std::net::TcpStream) {
    let mut s = connect(p.addr());
    socks5_greet(&mut s, creds);
    send(&mut s, request);
    let r = read_exact_by(&mut s, 10, IO_TIMEOUT);
    (r.try_into().unwrap(), s)
}

/// The ID= of the last STREAM CONNECT the bridge got, after checking its DESTINATION.
fn last_stream_id(fake: &FakeSam, dest: &str) -> String {
    let line = fake.stream_lines().last().cloned().expect("a STREAM CONNECT");
    assert_eq!(param(&line, "DESTINATION"), Some(dest), "{line}");
    param(&line, "ID").unwrap().to_string()
}

/// RESOLVE answers at once, without the bridge, the same address for the same
/// (normalized) name; CONNECT to it in all three forms reaches that name, on the
/// identity the credentials select, exactly like a CONNECT by name.
#[test]
fn resolve_then_connect_by_address() {
    let (fake, p) = setup(Script::default(), &[]);
    let b32 = b32_name("virtual");
    let before = bridge_traffic(&fake);

    let ip = resolved(&socks5_resolve(p.addr(), &b32, None));
    assert!(in_default_net(ip) && usable(ip), "{ip}");
    assert_eq!(resolved(&socks5_resolve(p.addr(), &b32.to_uppercase(), None)), ip);
    assert_eq!(resolved(&socks5_resolve(p.addr(), &format!("{b32}."), None)), ip);
    // With credentials too: the map is shared by every identity.
    assert_eq!(resolved(&socks5_resolve(p.addr(), &b32, Some(("u", "p")))), ip);
    let name = resolved(&socks5_resolve(p.addr(), "Stats.I2P", None));
    assert_ne!(name, ip);
    assert_eq!(resolved(&socks5_resolve(p.addr(), "stats.i2p", None)), name);
    assert_eq!(bridge_traffic(&fake), before, "RESOLVE reached the bridge");

    // SOCKS5 ATYP 1.
    let port = 8080;
    let (r, mut s) = s5_connect_raw(&p, None, &socks5_request_raw(1, 1, &ip.octets(), port));
    assert_eq!(r, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"atyp 1", IO_TIMEOUT), b"atyp 1");
    let default_id = last_stream_id(&fake, &b32);
    // SOCKS5 ATYP 3 with the dotted quad, as torsocks writes connect()'s address.
    let (r, mut s) = s5_connect_raw(&p, None, &socks5_request(1, &ip.to_string(), port));
    assert_eq!(r, S5_OK);
    assert_eq!(echo_roundtrip(&mut s, b"atyp 3", IO_TIMEOUT), b"atyp 3");
    assert_eq!(last_stream_id(&fake, &b32), default_id);
    // SOCKS4 DSTIP, empty USERID: the default identity as well.
    let mut s = connect(p.addr());
    send(&mut s, &socks4_request(ip, port, ""));
    expect_bytes(&mut s, &S4_OK, IO_TIMEOUT);
    assert_eq!(echo_roundtrip(&mut s, b"socks4", IO_TIMEOUT), b"socks4");
    assert_eq!(last_stream_id(&fake, &b32), default_id);
    // The address-book name comes out normalized, as a CONNECT by name would send it.
    let (r, _s) = s5_connect_raw(&p, None, &socks5_request_raw(1, 1, &name.octets(), 80));
    assert_eq!(r, S5_OK);
    last_stream_id(&fake, "stats.i2p");

    // Identity: credentials select the same identity by address as by name.
    let (r, _s) = s5_connect_raw(&p, Some(("u", "p")), &socks5_request(1, &b32, port));
    assert_eq!(r, S5_OK);
    let by_name = last_stream_id(&fake, &b32);
    assert_ne!(by_name, default_id);
    let (r, _s) = s5_connect_raw(&p, Some(("u", "p")), &socks5_request_raw(1, 1, &ip.octets(), port));
    assert_eq!(r, S5_OK);
    assert_eq!(last_stream_id(&fake, &b32), by_name);
    let (r, _s) = s5_connect_raw(&p, Some(("u", "p")), &socks5_request(1, &ip.to_string(), port));
    assert_eq!(r, S5_OK);
    assert_eq!(last_stream_id(&fake, &b32), by_name);
    let (_s, r) = socks4a_connect(p.addr(), &b32, port, "me");
    assert_eq!(r, S4_OK);
    let by_userid = last_stream_id(&fake, &b32);
    let mut s = connect(p.addr());
    send(&mut s, &socks4_request(ip, port, "me"));
    expect_bytes(&mut s, &S4_OK, IO_TIMEOUT);
    assert_eq!(last_stream_id(&fake, &b32), by_userid);
    assert_eq!(fake.sessions().len(), 3, "default, u:p and USERID me");
}

/// Names that are not I2P, IP addresses and addresses outside the range: 02, or
/// 04 for an address of the range that no name has; nothing reaches the bridge.
#[test]
fn refusals_never_reach_the_bridge() {
    let (fake, p) = setup(Script::default(), &[]);
    let before = bridge_traffic(&fake);
    let b32 = b32_name("x");
    let bad_b32 = format!("{}.b32.i2p", &b32[..51]);
    let refused = [
        "example.com",
        "localhost",
        "1.2.3.4",
        "10.192.0.1",
        "[::1]",
        bad_b32.as_str(),
        "exa mple.i2p",
        "a\"b.i2p",
        "x\r\nSTREAM.i2p",
        "i2p",
        "example.i2p.com",
    ];
    for name in refused {
        assert_eq!(socks5_resolve(p.addr(), name, None), s5_reply(0x02), "RESOLVE {name:?}");
    }
    // RESOLVE of an address (ATYP 1 or 4) is not resolved either.
    let v4 = socks5_request_raw(CMD_RESOLVE, 1, &[93, 184, 216, 34], 42);
    assert_eq!(socks5_exchange(p.addr(), None, &v4), s5_reply(0x02));
    let mut v6 = [0u8; 16];
    v6[15] = 1;
    let v6 = socks5_request_raw(CMD_RESOLVE, 4, &v6, 42);
    assert_eq!(socks5_exchange(p.addr(), None, &v6), s5_reply(0x02));

    // CONNECT to an address in the range that no name has: 04 in every form.
    let unmapped = Ipv4Addr::new(10, 200, 3, 4);
    let (r, _s) = s5_connect_raw(&p, None, &socks5_request_raw(1, 1, &unmapped.octets(), 80));
    assert_eq!(r, s5_reply(0x04));
    let (r, _s) = s5_connect_raw(&p, None, &socks5_request(1, &unmapped.to_string(), 80));
    assert_eq!(r, s5_reply(0x04));
    let mut s = connect(p.addr());
    send(&mut s, &socks4_request(unmapped, 80, ""));
    expect_bytes(&mut s, &S4_FAIL, IO_TIMEOUT);
    // Outside the range: 02 as before.
    for outside in [Ipv4Addr::new(10, 191, 255, 254), Ipv4Addr::new(93, 184, 216, 34), Ipv4Addr::LOCALHOST] {
        let (r, _s) = s5_connect_raw(&p, None, &socks5_request_raw(1, 1, &outside.octets(), 80));
        assert_eq!(r, s5_reply(0x02), "{outside}");
        let (r, _s) = s5_connect_raw(&p, None, &socks5_request(1, &outside.to_string(), 80));
        assert_eq!(r, s5_reply(0x02), "{outside}");
        let mut s = connect(p.addr());
        send(&mut s, &socks4_request(outside, 80, ""));
        expect_bytes(&mut s, &S4_FAIL, IO_TIMEOUT);
    }
    // A mapped address with port 0 is refused like a name with port 0.
    let ip = resolved(&socks5_resolve(p.addr(), &b32, None));
    let (r, _s) = s5_connect_raw(&p, None, &socks5_request_raw(1, 1, &ip.octets(), 0));
    assert_eq!(r, s5_reply(0x02));

    thread::sleep(Duration::from_millis(200));
    assert_eq!(bridge_traffic(&fake), before, "a refused request reached the bridge");
    assert!(fake.streams().is_empty());
}

/// RESOLVE_PTR gives a mapped address's name (ATYP 3 in BND), from four bytes or a dotted
/// quad; 04 in the range without a name, 02 outside, 08 for a name.
#[test]
fn resolve_ptr() {
    let (fake, p) = setup(Script::default(), &[]);
    let before = bridge_traffic(&fake);
    let b32 = b32_name("ptr");
    let ip = resolved(&socks5_resolve(p.addr(), &b32.to_uppercase(), None));
    let ptr = |atyp: u8, addr: &[u8]| {
        socks5_exchange(
            p.addr(),
            None,
            &socks5_request_raw(CMD_RESOLVE_PTR, atyp, addr, TORSOCKS_RESOLVE_PORT),
        )
    };
    assert_eq!(ptr(1, &ip.octets()), s5_name_reply(&b32));
    let text = ip.to_string();
    let mut dotted = vec![text.len() as u8];
    dotted.extend_from_slice(text.as_bytes());
    assert_eq!(ptr(3, &dotted), s5_name_reply(&b32));
    // With credentials, and with tor-resolve's port 0.
    let req = socks5_request_raw(CMD_RESOLVE_PTR, 1, &ip.octets(), 0);
    assert_eq!(socks5_exchange(p.addr(), Some(("a", "b")), &req), s5_name_reply(&b32));

    assert_eq!(ptr(1, &[10, 254, 1, 2]), s5_reply(0x04));
    assert_eq!(ptr(1, &[192, 168, 1, 1]), s5_reply(0x02));
    assert_eq!(ptr(1, &[127, 0, 0, 1]), s5_reply(0x02));
    assert_eq!(ptr(4, &[0u8; 16]), s5_reply(0x02));
    assert_eq!(ptr(3, b"\x07foo.i2p"), s5_reply(0x08));
    assert_eq!(bridge_traffic(&fake), before);
}

/// `--virtual-net 10.77.0.0/24`: 127 names (half of 254 usable addresses). The 128th
/// makes the least recently used name forget its address, which then answers 04 and
/// is not given again; once 127 addresses are held back, a new name is refused with 01
/// and a warning, while mapped names keep their addresses.
#[test]
fn small_range_bounds_the_map() {
    let (fake, p) = setup(Script::default(), &["--virtual-net", "10.77.0.0/24"]);
    let name = |i: usize| format!("site{i}.i2p");
    let mut first = Vec::new();
    for i in 0..127 {
        first.push(resolved(&socks5_resolve(p.addr(), &name(i), None)));
    }
    let distinct: HashSet<_> = first.iter().collect();
    assert_eq!(distinct.len(), 127);
    assert!(first.iter().all(|ip| ip.octets()[..3] == [10, 77, 0] && usable(*ip)), "{first:?}");
    // Touch name 0 by connecting to its address: name 1 is now the oldest.
    let (r, _s) = s5_connect_raw(&p, None, &socks5_request_raw(1, 1, &first[0].octets(), 80));
    assert_eq!(r, S5_OK);
    let new = resolved(&socks5_resolve(p.addr(), &name(127), None));
    assert!(!distinct.contains(&new));
    let (r, _s) = s5_connect_raw(&p, None, &socks5_request_raw(1, 1, &first[1].octets(), 80));
    assert_eq!(r, s5_reply(0x04), "name 1's forgotten address");
    let ptr = socks5_request_raw(CMD_RESOLVE_PTR, 1, &first[1].octets(), 42);
    assert_eq!(socks5_exchange(p.addr(), None, &ptr), s5_reply(0x04));
    assert_eq!(resolved(&socks5_resolve(p.addr(), &name(0), None)), first[0]);
    // Name 1 comes back elsewhere; its old address stays held back.
    let again = resolved(&socks5_resolve(p.addr(), &name(1), None));
    assert!(again != first[1] && !distinct.contains(&again));

    // 125 more names fill the held-back list (127 addresses).
    let mut seen: HashSet<Ipv4Addr> = distinct.iter().copied().copied().collect();
    seen.extend([new, again]);
    for i in 128..253 {
        let ip = resolved(&socks5_resolve(p.addr(), &name(i), None));
        assert!(seen.insert(ip), "address {ip} given twice");
    }
    assert_eq!(seen.len(), 254, "every usable address used once");
    assert_eq!(socks5_resolve(p.addr(), "one-too-many.i2p", None), s5_reply(0x01));
    assert!(p.wait_for_line("no free virtual address in --virtual-net 10.77.0.0/24", WAIT).is_some());
    let last = resolved(&socks5_resolve(p.addr(), &name(252), None));
    assert_eq!(resolved(&socks5_resolve(p.addr(), &name(252), None)), last);
    assert!(!p.lines().iter().any(|l| l.contains("site")), "a name at info level");
    assert!(fake.streams().len() == 1);
}

/// RESOLVE one byte per write and all in one write, torsocks' auth too; a stalled
/// RESOLVE is closed at the handshake deadline without a reply.
#[test]
fn resolve_split_and_deadline() {
    let (_fake, p) = setup(Script::default(), &["--handshake-timeout", "1"]);
    let b32 = b32_name("split");
    let want = resolved(&socks5_resolve(p.addr(), &b32, None));
    let gap = Duration::from_millis(2);
    let req = socks5_request(CMD_RESOLVE, &b32, TORSOCKS_RESOLVE_PORT);
    for creds in [None, Some(("user", "pass"))] {
        let mut head = match creds {
            None => vec![5, 1, 0],
            Some((u, p)) => [&[5u8, 1, 2][..], &socks5_auth(u, p)].concat(),
        };
        let answer: &[u8] = if creds.is_some() { &[5, 2, 1, 0] } else { &[5, 0] };
        let mut s = connect(p.addr());
        send_bytewise(&mut s, &[head.as_slice(), &req].concat(), gap);
        expect_bytes(&mut s, answer, IO_TIMEOUT);
        assert_eq!(resolved(&read_to_eof(&mut s, IO_TIMEOUT)), want);
        head.extend_from_slice(&req);
        let mut s = connect(p.addr());
        send(&mut s, &head);
        expect_bytes(&mut s, answer, IO_TIMEOUT);
        assert_eq!(resolved(&read_to_eof(&mut s, IO_TIMEOUT)), want);
    }
    let t = Instant::now();
    let mut s = connect(p.addr());
    send(&mut s, &[5, 1, 0]);
    expect_bytes(&mut s, &[5, 0], IO_TIMEOUT);
    send(&mut s, &req[..req.len() - 1]);
    assert!(closed_within(&mut s, Duration::from_secs(3), 0), "stalled RESOLVE not closed");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(800) && took < Duration::from_millis(2500), "{took:?}");
}

/// A --virtual-net the proxy cannot use stops it with exit 64 and one line saying why.
#[test]
fn bad_virtual_net_exits_64() {
    for (net, why) in [
        ("127.192.0.0/10", "127.0.0.0/8"),
        ("0.0.0.0/8", "SOCKS4a"),
        ("224.0.0.0/4", "multicast"),
        ("10.0.0.0/25", "/1 to /24"),
        ("10.192.0.1/10", "the network is 10.192.0.0/10"),
        ("10.192.0.0", "expected an IPv4 network"),
        ("fc00::/7", "expected an IPv4 network"),
    ] {
        let out = run_to_exit(&["--virtual-net", net], Duration::from_secs(5));
        assert_eq!(out.status.code(), Some(64), "{net}: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{net}: {:?}", out.stderr);
        assert!(lines[0].starts_with(&format!("i2psocks: --virtual-net '{net}': ")), "{}", lines[0]);
        assert!(lines[0].contains(why), "{net}: {}", lines[0]);
    }
}

/// The proxy's memory with the map full (65,536 names in the default range), per name;
/// then 10% more names, which only replace old ones (and fill the held-back list); and
/// the time one client waits for a RESOLVE, connection included.
#[test]
fn full_map_memory_and_latency() {
    let (_fake, p) = setup(Script::default(), &[]);
    // 51 digits spelled a-j, then a last character whose spare bits are zero.
    let b32 = |i: usize| {
        let digits: String = format!("{i:051}").bytes().map(|d| char::from(d - b'0' + b'a')).collect();
        format!("{digits}a.b32.i2p")
    };
    let resolve_range = |from: usize, to: usize| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let addr = p.addr();
                thread::spawn(move || {
                    for i in (from + t..to).step_by(4) {
                        let _ = resolved(&socks5_resolve(addr, &b32(i), None));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
    };
    // Warm up the worker threads and their allocator arenas first.
    resolve_range(0, 1000);
    let mut times: Vec<Duration> = (0..200)
        .map(|i| {
            let t = Instant::now();
            resolved(&socks5_resolve(p.addr(), &b32(i % 10), None));
            t.elapsed()
        })
        .collect();
    times.sort();
    let base = rss_kib(p.pid());
    let t = Instant::now();
    resolve_range(1000, 65_536);
    let took = t.elapsed();
    let full = rss_kib(p.pid());
    resolve_range(65_536, 72_090);
    let more = rss_kib(p.pid());
    let per_name = (full.saturating_sub(base) * 1024) as f64 / 64_536.0;
    let per_replaced = (more.saturating_sub(full) * 1024) as f64 / 6_554.0;
    eprintln!(
        "RESOLVE, one client, connection included: median {:?}, 95th percentile {:?}; \
         {:.0} RESOLVEs/s over 4 clients",
        times[100],
        times[190],
        64_536.0 / took.as_secs_f64()
    );
    eprintln!(
        "virtual map: RSS {base} KiB -> {full} KiB for 64,536 more names ({per_name:.0} bytes each), \
         {more} KiB after 6,554 more that replaced old ones ({per_replaced:.0} bytes each)"
    );
    assert!(per_name < 1024.0, "{per_name:.0} bytes per name");
    assert!(per_replaced < per_name, "replacing names costs as much as adding them: the map is not bounded");
}
