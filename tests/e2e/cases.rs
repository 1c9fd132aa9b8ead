//! The real-router cases every router runs (tests/common/router.rs): tests/e2e_i2pd.rs on
//! i2pd 2.45 and tests/e2e_emissary.rs on the emissary network, both with the fixture site
//! and echo service under the same addresses and address-book names. Nothing here needs
//! bulk speed: that stays on i2pd (tests/e2e/faults.rs, the 10 MiB download of
//! tests/e2e_i2pd.rs), since emissary streams about 20 KiB/s.
//!
//! [`connect`]: CONNECT by `.b32.i2p` and by name (curl with SOCKS5 and SOCKS4a), the site
//! sees the proxy's logged default identity, bytes both ways through the echo service, local
//! refusals (02), and an unknown `.b32.i2p` and an unknown `.i2p` name both answered 04.
//! [`identities`]: many credentials at once, each its own address at the far end and the same
//! one again later; another password, a SOCKS4 USERID, and `--isolate client` (an address
//! per connection), at the same time so that their sessions build together; then SIGHUP
//! (new addresses for new streams). The last two run on proxies of their own.
//! [`datagrams`]: UDP ASSOCIATE to a DATAGRAM echo peer held by the test: answered at once,
//! before the proxy has a datagram session, with the datagrams sent meanwhile all echoed
//! once it is up; then 100 datagrams and a few of the router's largest size, then PySocks.
//! [`router_restarted`]: the router (both routers of the emissary network) stopped under a
//! running proxy while a transfer is in flight and started again on the same ports: the
//! transfer ends promptly with a clean prefix of the right bytes; the proxy keeps its pid,
//! answers 01 (or 06) during the outage, logs the session lost and retries with growing waits;
//! once the router is back the same process serves the default identity and a credential
//! identity again, each from a rebuilt session. It needs the `app1:x` identity [`identities`]
//! made.

// Each test binary that includes this file runs some of the cases.
#![allow(dead_code)]

use crate::common::http::{expected_sha256, MARKER};
use crate::common::i2p::{b32_of_blob, b64_decode};
use crate::common::i2pd::{answered_unreachable, curl, socks5_stream};
use crate::common::proxy::{socks5_connect, socks5_open, Dest, Proxy};
use crate::common::rng::{pattern, random_bytes};
use crate::common::router::RealRouter;
use crate::common::sam_client::{datagram_parse, datagram_send, Sam};
use crate::common::udp_client::{associate, udp_echo_roundtrip, Echo};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a fresh SAM session may take (i2pd 2.45 answers after ~20 s).
pub const SESSION_WAIT: Duration = Duration::from_secs(90);
/// curl's `--max-time` for a request that may wait for a new session, seconds.
const CURL_LIMIT: &str = "120";
/// Deadline of a SOCKS5 CONNECT that the router refuses (an unknown b32 is looked for first).
const REFUSAL_WAIT: Duration = Duration::from_secs(120);
/// Per-datagram wait for its echo before it is sent again: echoes take milliseconds, the
/// first one's lease set lookups a little more; emissary loses about 1 in 50 here.
const ECHO_WAIT: Duration = Duration::from_secs(2);
/// Datagrams of the router's largest size sent through.
const LARGE_DATAGRAMS: usize = 5;
/// The UDP ASSOCIATE reply must come within this (before the datagram session exists).
const REPLY_WAIT: Duration = Duration::from_millis(100);
/// Datagrams sent at once after the reply, before the session is up (within the
/// association's waiting bound of 64).
const EARLY: usize = 16;
/// Their size.
const EARLY_SIZE: usize = 1024;
/// Rounds of sending the early datagrams on a router that loses some.
const EARLY_ROUNDS: usize = 10;
/// Fetches of one body on a router that loses stream ends: at the rate seen on i2pd 2.59
/// (about 1 in 4 of its 10 MiB downloads), five in a row is a 1 in 1,000 event.
const END_TRIES: usize = 5;
/// Seconds without a byte after which curl gives up on a transfer: bodies here arrive in
/// well under a second once they start, and a lost end never comes.
const STALL_SECONDS: &str = "15";
/// curl's exit status for "operation timed out", which `--speed-time` gives too.
const CURL_TIMED_OUT: i32 = 28;

/// How many identities [`identities`] makes: many where sessions are cheap (emissary builds
/// one in milliseconds), few where each takes 20 s (i2pd 2.45).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Distinct credentials at once.
    pub credentials: usize,
    /// Connections at once through `--isolate client`, and SIGHUP, each on a proxy of its
    /// own ([`IdentityProxies`]); zero: neither.
    pub clients: usize,
}

/// `-s <sam> --hops <router's> --tunnels 1 <args>`: the proxy on `router`, returned at once
/// (its default session builds in the background; see [`ready`]).
pub fn start_proxy<R: RealRouter>(router: &R, args: &[&str]) -> Proxy {
    let sam = router.sam_addr().to_string();
    let hops = router.hops().to_string();
    let mut all = vec!["-s", sam.as_str(), "--hops", hops.as_str(), "--tunnels", "1"];
    all.extend_from_slice(args);
    Proxy::start(&all)
}

/// The proxy's default identity once it is ready.
pub fn ready(proxy: &Proxy) -> String {
    let t = Instant::now();
    let b32 = proxy.ready_b32("default identity", SESSION_WAIT).expect("the proxy's default identity");
    eprintln!("i2psocks default session ready after {:?} more", t.elapsed());
    b32
}

/// curl's output, which must be a success.
pub fn curl_ok(args: &[&str]) -> Vec<u8> {
    succeeded(args, curl(args))
}

/// The output `out` of curl run with `args`, which must be a success.
fn succeeded(args: &[&str], out: Output) -> Vec<u8> {
    assert!(out.status.success(), "curl {args:?}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The `X-I2P-DestB32` the site saw for one request through `proxy_flags` (curl's).
pub fn source_b32<R: RealRouter>(router: &R, proxy_flags: &[&str]) -> String {
    let url = format!("http://{}/echo-headers", router.site_b32());
    let mut args: Vec<&str> = proxy_flags.to_vec();
    args.extend(["--max-time", CURL_LIMIT, &url]);
    let mut out = curl(&args);
    if !out.status.success()
        && router.refuses_a_new_sessions_connect()
        && answered_unreachable(&String::from_utf8_lossy(&out.stderr))
    {
        eprintln!(
            "{}: CANT_REACH_PEER for {proxy_flags:?}, a router fault (doc/routers.md): asking once more",
            router.label()
        );
        out = curl(&args);
    }
    let body = String::from_utf8(succeeded(&args, out)).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("X-I2P-DestB32:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no X-I2P-DestB32 in {body}"))
}

/// The SOCKS5 reply code for a CONNECT to `host`, and how long it took to come.
fn refusal(proxy: &Proxy, host: &str) -> (String, Duration) {
    let t = Instant::now();
    let got = match socks5_open(proxy.addr(), &Dest::Name(host.to_string(), 80), REFUSAL_WAIT) {
        Ok(_) => "success".to_string(),
        Err(e) => e.to_string(),
    };
    (got, t.elapsed())
}

/// CONNECT to the fixture services, refusals and unknown targets (see the module doc).
pub fn connect<R: RealRouter>(router: &R, proxy: &Proxy) {
    let default = ready(proxy);
    let p = proxy.addr().to_string();
    for host in [router.site_b32(), router.site_name()] {
        for flag in ["--socks5-hostname", "--socks4a"] {
            let t = Instant::now();
            let body = curl_ok(&[flag, &p, &format!("http://{host}/")]);
            assert!(String::from_utf8_lossy(&body).contains(MARKER), "{flag} {host}");
            eprintln!("{}: GET http://{host}/ with {flag} in {:?}", router.label(), t.elapsed());
        }
    }
    // The default identity is what the site sees, and it is the address we logged.
    assert_eq!(source_b32(router, &["--socks5-hostname", &p]), default);

    // Bytes both ways through the echo service, by name and by address.
    for host in [router.echo_name(), router.echo_b32()] {
        let t = Instant::now();
        let mut s = socks5_stream(proxy.addr(), host, 7).expect("echo via i2psocks");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let msg = random_bytes(router.quick_stream(), 253);
        let writer = {
            let mut w = s.try_clone().unwrap();
            let msg = msg.clone();
            thread::spawn(move || w.write_all(&msg).unwrap())
        };
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back, msg, "{host}");
        eprintln!("{}: {} B echoed from {host} in {:?}", router.label(), msg.len(), t.elapsed());
    }

    // Refused locally with reply 0x02: curl 7.88 prints the code as "(2)".
    for url in ["http://example.com/", "http://1.1.1.1/", "http://bad.b32.i2p/"] {
        let out = curl(&["--socks5-hostname", &p, url]);
        assert!(!out.status.success(), "{url} must be refused");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("(2)") || err.contains("not allowed"), "{url}: {err}");
    }
    // Unknown targets reach the router and are unreachable (0x04) on every router, whatever
    // the bridge answers (tests/reply_codes.rs has each answer).
    let unknown_b32 = format!("{}.b32.i2p", "a".repeat(52));
    for host in [unknown_b32.as_str(), "no-such-site.i2p"] {
        let (got, took) = refusal(proxy, host);
        eprintln!("{}: CONNECT {host} answered `{got}` in {took:?}", router.label());
        assert!(got.contains("REP=0x04"), "{}: {host}: {got}", router.label());
    }
}

/// The proxies of their own that [`identities`] needs, started early so that their default
/// sessions build meanwhile.
pub struct IdentityProxies {
    hup: Proxy,
    per_client: Proxy,
}

impl IdentityProxies {
    /// None when `scale` asks for neither. Without spare sessions: the identities here are
    /// then built on demand.
    pub fn start<R: RealRouter>(router: &R, scale: Scale) -> Option<IdentityProxies> {
        (scale.clients > 0).then(|| IdentityProxies {
            hup: start_proxy(router, &["--spare-sessions", "0"]),
            per_client: start_proxy(router, &["--isolate", "client", "--spare-sessions", "0"]),
        })
    }
}

/// Identity isolation (see the module doc), at `scale`.
pub fn identities<R: RealRouter + Sync>(
    router: &R,
    proxy: &Proxy,
    others: Option<IdentityProxies>,
    scale: Scale,
) {
    let default = ready(proxy);
    let t = Instant::now();
    let (named, clients) = thread::scope(|s| {
        let named = s.spawn(|| credentials(router, proxy, &default, scale));
        let clients = others.as_ref().map(|o| isolate_client(router, &o.per_client, scale));
        (named.join().unwrap(), clients.unwrap_or_default())
    });
    let hupped = others.as_ref().map(|o| sighup(router, &o.hup)).unwrap_or_default();
    eprintln!(
        "{}: {} credential identities, {} through SIGHUP, {} per-connection identities in {:?}",
        router.label(),
        named.len(),
        hupped.len(),
        clients.len(),
        t.elapsed()
    );
    // Every identity is an address of its own, on every proxy.
    let mut all: Vec<&String> = named.iter().chain(&hupped).chain(&clients).chain([&default]).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an address served two identities");
    if let Some(IdentityProxies { hup, per_client }) = others {
        router.retire(hup);
        router.retire(per_client);
    }
}

/// At once: `scale.credentials` SOCKS5 users, another password for the first, and a SOCKS4
/// USERID with its name, each an identity of its own; then the users again, which keep their
/// addresses. Returns the addresses the site saw.
fn credentials<R: RealRouter + Sync>(router: &R, proxy: &Proxy, default: &str, scale: Scale) -> Vec<String> {
    let p = proxy.addr().to_string();
    let users: Vec<String> = (1..=scale.credentials).map(|i| format!("app{i}:x")).collect();
    let mut asks: Vec<[&str; 4]> =
        users.iter().map(|u| ["--socks5-hostname", &p, "--proxy-user", u]).collect();
    asks.push(["--socks5-hostname", &p, "--proxy-user", "app1:y"]);
    asks.push(["--socks4a", &p, "--proxy-user", "app1:"]);
    let seen: Vec<String> = thread::scope(|s| {
        let running: Vec<_> = asks.iter().map(|a| s.spawn(|| source_b32(router, a))).collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in asks.iter().zip(&seen) {
        assert_ne!(b, default, "{a:?} got the default identity");
    }
    // The same credentials keep their address, sent another way (curl's proxy URL).
    for (u, b) in users.iter().zip(&seen).take(2) {
        assert_eq!(&source_b32(router, &["-x", &format!("socks5h://{u}@{p}")]), b, "{u} again");
    }
    seen
}

/// SIGHUP on a proxy of its own: the default and a credential identity each get a new
/// address for new streams, and keep it. Returns the four addresses.
fn sighup<R: RealRouter + Sync>(router: &R, proxy: &Proxy) -> Vec<String> {
    let p = proxy.addr().to_string();
    let creds = ["--socks5-hostname", p.as_str(), "--proxy-user", "hup:x"];
    let default = ready(proxy);
    assert_eq!(source_b32(router, &["--socks5-hostname", &p]), default);
    let named = source_b32(router, &creds);
    proxy.signal("HUP");
    assert!(proxy.wait_for_line("new identity", SESSION_WAIT).is_some(), "SIGHUP not acted on");
    // Both new identities may be spares (built ahead) or built now: only the far end says.
    let (new_default, new_named) = thread::scope(|s| {
        let new_named = s.spawn(|| source_b32(router, &creds));
        (source_b32(router, &["--socks5-hostname", &p]), new_named.join().unwrap())
    });
    assert_eq!(source_b32(router, &["--socks5-hostname", &p]), new_default, "the new default changed");
    assert_eq!(source_b32(router, &creds), new_named, "the new credential identity changed");
    let out = vec![default, named, new_default, new_named];
    assert!(out[0] != out[2] && out[1] != out[3], "SIGHUP kept an address: {out:?}");
    out
}

/// `--isolate client`: `scale.clients` connections at once, with and without credentials,
/// each its own address. Returns them with the proxy's default one.
fn isolate_client<R: RealRouter + Sync>(router: &R, proxy: &Proxy, scale: Scale) -> Vec<String> {
    let p = proxy.addr().to_string();
    let default = ready(proxy);
    let seen: Vec<String> = thread::scope(|s| {
        let asks: Vec<_> = (0..scale.clients)
            .map(|i| {
                let p = &p;
                s.spawn(move || {
                    let mut flags = vec!["--socks5-hostname", p.as_str()];
                    if i % 2 == 1 {
                        flags.extend(["--proxy-user", "same:x"]);
                    }
                    source_b32(router, &flags)
                })
            })
            .collect();
        asks.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = seen;
    all.push(default);
    all
}

// ---------------------------------------------------------------- datagrams

/// A DATAGRAM session held by the test that echoes every datagram to its sender; `stop`
/// closes its session.
pub struct EchoPeer {
    /// Its `.b32.i2p`.
    pub b32: String,
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<()>,
}

impl EchoPeer {
    /// The session made on `router` (SESSION CREATE with the router's peer options, forwarding
    /// to a UDP socket here), echoing from then on.
    pub fn start<R: RealRouter>(router: &R) -> EchoPeer {
        EchoPeer::start_with(router, &router.peer_options())
    }

    /// The same with SESSION CREATE `options` of the caller's.
    pub fn start_with<R: RealRouter>(router: &R, options: &str) -> EchoPeer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let id = format!("udpecho{}{port}", std::process::id());
        let mut ctl = Sam::connect(router.sam_addr()).unwrap();
        let options = format!("{options} PORT={port} HOST=127.0.0.1");
        let key =
            ctl.session_create("DATAGRAM", &id, "TRANSIENT", &options).expect("the echo's DATAGRAM session");
        let b32 = b32_of_blob(&b64_decode(&key).unwrap()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, sam_udp) = (Arc::clone(&stop), router.sam_udp_addr());
        let handle = thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    if let Some((sender, payload)) = datagram_parse(&buf[..n]) {
                        let _ = datagram_send(&sock, sam_udp, &id, &sender, &payload);
                    }
                }
            }
            drop(ctl); // ends the session
        });
        EchoPeer { b32, stop, handle }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
    }
}

/// UDP ASSOCIATE through `proxy` to `peer`, before the proxy has a datagram session (see
/// [`early_datagrams`]); then 100 datagrams of 1 KiB and a few of the router's largest size,
/// each back intact from the peer's address; then PySocks.
pub fn datagrams<R: RealRouter>(router: &R, proxy: &Proxy, peer: &EchoPeer) {
    // emissary once let no datagram through between the proxy's datagram destination and
    // the peer for all the rounds, logging `failed to handle inbound message ...
    // error=Session(Chacha)`: its session keys for that pair went wrong for good. A peer of
    // a new destination starts new keys; the proxy's part is the same either way.
    let fresh = early_datagrams(router, proxy, &peer.b32).err().map(|why| {
        eprintln!("{}: {why}, a router fault: once more, to a new peer", router.label());
        let fresh = EchoPeer::start(router);
        early_datagrams(router, proxy, &fresh.b32).unwrap_or_else(|why| panic!("{why}, new peer too"));
        fresh
    });
    let peer = fresh.as_ref().unwrap_or(peer);
    let t = Instant::now();
    let mut e = Echo {
        target: &peer.b32,
        port: 7,
        sender: Some(&peer.b32),
        count: 100,
        size: 1024,
        timeout: ECHO_WAIT,
    };
    let report = udp_echo_roundtrip(proxy.addr(), None, &e).expect("100 datagrams echoed through i2psocks");
    assert_eq!(report.sent, 100);
    eprintln!("{}: 100 datagrams echoed in {:?} ({} resent)", router.label(), t.elapsed(), report.resent);
    let t = Instant::now();
    (e.count, e.size) = (LARGE_DATAGRAMS, router.max_datagram());
    let report = udp_echo_roundtrip(proxy.addr(), None, &e).expect("the largest datagrams echoed");
    assert_eq!(report.sent, LARGE_DATAGRAMS);
    eprintln!(
        "{}: {LARGE_DATAGRAMS} datagrams of {} B echoed in {:?} ({} resent)",
        router.label(),
        e.size,
        t.elapsed(),
        report.resent
    );
    pysocks(proxy, &peer.b32);
    if let Some(f) = fresh {
        f.stop();
    }
}

/// UDP ASSOCIATE answered within [`REPLY_WAIT`]; [`EARLY`] datagrams sent at once after the
/// reply wait for the datagram session and are all echoed back once it is up. On a router
/// that loses datagrams (emissary: most of a new session's first ones, here) the missing
/// ones are sent again every [`ECHO_WAIT`], up to [`EARLY_ROUNDS`] times; such a router
/// builds its sessions in milliseconds, so the first wait covers the build.
/// Err: none came back through all the rounds, on a router that loses datagrams.
fn early_datagrams<R: RealRouter>(router: &R, proxy: &Proxy, echo_b32: &str) -> Result<(), String> {
    let t = Instant::now();
    let a = associate(proxy.addr(), None).expect("UDP ASSOCIATE");
    let replied = t.elapsed();
    assert!(replied < REPLY_WAIT, "UDP ASSOCIATE answered after {replied:?}");
    let payload = |seq: usize| -> Vec<u8> { (0..EARLY_SIZE).map(|i| (seq * 7 + i) as u8).collect() };
    for seq in 0..EARLY {
        a.send(echo_b32, 7, &payload(seq));
    }
    let lossy = router.loses_datagrams();
    let wait = if lossy { ECHO_WAIT } else { SESSION_WAIT };
    let (mut back, mut rounds, mut resent) = ([false; EARLY], 1, 0);
    let mut deadline = Instant::now() + wait;
    while back.iter().any(|b| !b) {
        let Some(r) = a.recv(deadline.saturating_duration_since(Instant::now())) else {
            let echoed = back.iter().filter(|b| **b).count();
            assert!(lossy, "echoed {echoed} of {EARLY} early datagrams");
            if rounds >= EARLY_ROUNDS {
                assert!(echoed == 0, "echoed {echoed} of {EARLY} early datagrams");
                return Err(format!("echoed 0 of {EARLY} early datagrams in {rounds} rounds"));
            }
            for seq in (0..EARLY).filter(|&s| !back[s]) {
                a.send(echo_b32, 7, &payload(seq));
                resent += 1;
            }
            rounds += 1;
            deadline = Instant::now() + wait;
            continue;
        };
        assert_eq!(r.host, echo_b32, "sender");
        let seq = (0..EARLY).find(|&s| payload(s) == r.data).expect("an echo of what was sent");
        back[seq] = true;
    }
    eprintln!(
        "{}: UDP ASSOCIATE answered in {replied:?}; {EARLY} datagrams sent at once after it all \
         echoed {:?} after the request (the datagram session's build; {resent} sent again)",
        router.label(),
        t.elapsed()
    );
    Ok(())
}

/// Python's PySocks (Debian python3-socks, installed by tests/deps.sh) through i2psocks to the echo.
fn pysocks(proxy: &Proxy, echo_b32: &str) {
    let python = "/usr/bin/python3";
    let has = Command::new(python).args(["-c", "import socks"]).output().is_ok_and(|o| o.status.success());
    assert!(has, "{python} lacks the socks module: install Debian's python3-socks (tests/deps.sh does)");
    let script = format!(
        "import socks, socket\n\
         s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.set_proxy(socks.SOCKS5, '127.0.0.1', {port})\n\
         s.settimeout(15)\n\
         for attempt in range(3):\n\
         \x20   s.sendto(b'hello from pysocks', ('{echo_b32}', 7))\n\
         \x20   try:\n\
         \x20       data, (host, port) = s.recvfrom(4096)\n\
         \x20       break\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n\
         print(data.decode(), host.decode(), port)\n",
        port = proxy.addr().port()
    );
    let out = Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "PySocks: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("hello from pysocks {echo_b32} 0"));
}

// ---------------------------------------------------------------- persistent identities

/// Between stopping a proxy with persistent identities and starting it again (see
/// [`persistent`]).
const KEY_RELEASE: Duration = Duration::from_secs(15);

/// What [`persistent`] measured after the restart, from the `listening` lines on.
#[derive(Debug, Clone, Copy)]
pub struct RestartTiming {
    /// A user name whose key existed: its first response through the proxy.
    pub persistent_first: Duration,
    /// The transient default identity built beside it: the router's session build.
    pub session_build: Duration,
    /// Before the restart, a user name's first use (its key made then): one build.
    pub new_name_first: Duration,
}

/// The proxy [`persistent`] runs, started early so that its sessions build meanwhile: two
/// listeners with key files, a third without one, and `--key-dir` for user names.
pub struct PersistentProxy {
    proxy: Proxy,
    args: Vec<String>,
    _dir: crate::common::TempDir,
}

impl PersistentProxy {
    pub fn start<R: RealRouter>(router: &R) -> PersistentProxy {
        let dir = crate::common::TempDir::new("e2e-persistent");
        let users = dir.0.join("users");
        std::fs::create_dir(&users).unwrap();
        std::fs::set_permissions(&users, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let key = |n: &str| format!("127.0.0.1:0,key={}", dir.0.join(n).display());
        let args: Vec<String> = ["-l", &key("a.key"), "-l", &key("b.key"), "-l", "127.0.0.1:0", "--key-dir"]
            .iter()
            .map(|s| s.to_string())
            .chain([users.display().to_string()])
            .collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        PersistentProxy { proxy: start_proxy(router, &refs), args, _dir: dir }
    }
}

/// The three listeners' `--socks5-hostname` addresses, each once its default identity is
/// ready.
fn persistent_listeners(proxy: &Proxy) -> Vec<String> {
    for label in ["default identity", "default identity of listener 2", "default identity of listener 3"] {
        assert!(proxy.ready_b32(label, SESSION_WAIT).is_some(), "{label} not ready");
    }
    proxy.listening(3)
}

/// Persistent identities as the far end sees them: two listeners with key files and two user
/// names under `--key-dir` (one of them on a keyed listener: a name is the same identity on
/// every listener) are five addresses, none the transient default's. SIGHUP changes the
/// transient default only. After a restart all five are the same again, and a name whose
/// key existed gets its first response within a second of the router's session build,
/// counted from the `listening` lines (its session is built at start, beside the default's).
pub fn persistent<R: RealRouter + Sync>(router: &R, run: PersistentProxy) -> RestartTiming {
    let PersistentProxy { proxy, args, _dir } = run;
    let ls = persistent_listeners(&proxy);
    let via = |l: &str, user: Option<&str>| {
        let mut flags = vec!["--socks5-hostname".to_string(), l.to_string()];
        if let Some(u) = user {
            flags.extend(["--proxy-user".to_string(), u.to_string()]);
        }
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        source_b32(router, &refs)
    };
    let t = Instant::now();
    let (a, b, c, (irc, new_name_first), git) = thread::scope(|s| {
        let irc = s.spawn(|| {
            let t = Instant::now();
            let b32 = via(&ls[2], Some("irc:x"));
            (b32, t.elapsed())
        });
        let git = s.spawn(|| via(&ls[0], Some("git:y")));
        (via(&ls[0], None), via(&ls[1], None), via(&ls[2], None), irc.join().unwrap(), git.join().unwrap())
    });
    eprintln!("{}: five identities seen in {:?}", router.label(), t.elapsed());
    let first = vec![a.clone(), b.clone(), irc.clone(), git.clone()];
    let mut all = first.clone();
    all.push(c.clone());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "an address served two identities: {first:?} {c}");
    assert_eq!(via(&ls[1], Some("irc:another-password")), irc, "the password changed the identity");

    proxy.signal("HUP");
    assert!(proxy.wait_for_line("new identity", SESSION_WAIT).is_some(), "SIGHUP not acted on");
    let new_c = via(&ls[2], None);
    assert_ne!(new_c, c, "SIGHUP kept the transient default");
    assert_eq!(
        [via(&ls[0], None), via(&ls[2], Some("irc:x"))],
        [a.clone(), irc.clone()],
        "SIGHUP changed one"
    );
    drop(proxy);
    // Both routers keep a closed session's destination a while: i2pd 2.45 attaches a new
    // session of the key to it at once, unreachable until ~13 s after the close (measured);
    // emissary refuses the key (DUPLICATE_DEST) meanwhile. A restart waits that out.
    thread::sleep(KEY_RELEASE);

    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = start_proxy(router, &refs);
    let listening = Instant::now();
    let ls = proxy.listening(3);
    let (irc_again, persistent_first, session_build) = thread::scope(|s| {
        let build = s.spawn(|| {
            assert!(proxy.ready_b32("default identity of listener 3", SESSION_WAIT).is_some());
            listening.elapsed()
        });
        let irc_again = via(&ls[2], Some("irc:z"));
        (irc_again, listening.elapsed(), build.join().unwrap())
    });
    eprintln!(
        "{}: after a restart, a persistent user name's first response {persistent_first:?} after the \
         listening line; a session build (the transient default) {session_build:?}; a new name's \
         first use before the restart {new_name_first:?}",
        router.label()
    );
    assert_eq!(irc_again, irc, "the user name's address changed over a restart");
    assert!(
        persistent_first <= session_build + Duration::from_secs(1),
        "the persistent identity waited {persistent_first:?}, a build takes {session_build:?}"
    );
    let again = vec![via(&ls[0], None), via(&ls[1], None), irc_again, via(&ls[1], Some("git:q"))];
    assert_eq!(again, first, "an address changed over a restart");
    let fresh = via(&ls[2], None);
    assert!(![c, new_c].contains(&fresh) && !first.contains(&fresh), "the transient default is not new");
    assert_eq!(proxy.count_lines("a user name without a key file yet"), 0, "a key was made again");
    router.retire(proxy);
    RestartTiming { persistent_first, session_build, new_name_first }
}

// ---------------------------------------------------------------- router restart

/// Size asked for by the transfer that the restart cuts: more than either router streams in
/// the time the test needs to stop it (MAX_BYTES of the site).
const CUT_TRANSFER: usize = 256 << 20;
/// Read timeout of the cut transfer: a stall this long counts as a hang.
const CUT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Once the router has exited, the relay must end the client's stream within this.
const STREAM_END_AFTER_EXIT: Duration = Duration::from_secs(3);
/// A client during the outage must get its SOCKS reply within this.
const OUTAGE_REPLY: Duration = Duration::from_secs(2);
/// Clients sent during the outage (alternately default and credential identity).
const OUTAGE_PROBES: usize = 6;
/// Pause between outage probes.
const PROBE_GAP: Duration = Duration::from_millis(150);
/// Failed rebuild attempts of the default identity to see before the router comes back
/// (two show the wait growing: "retrying in 2 s", "retrying in 4 s").
const RETRIES_SEEN: usize = 2;
/// How long those may take to appear (waits of 1 + 2 s, plus a slow stop).
const RETRIES_WAIT: Duration = Duration::from_secs(20);
/// Router back → a fetch through the rebuilt sessions succeeds (~20 s SESSION CREATE on
/// i2pd plus up to one backoff wait).
const RECOVERY: Duration = Duration::from_secs(90);
/// curl `--max-time` of one recovery attempt, seconds (a request waits while its session
/// is being built, up to the proxy's connect deadline).
const RECOVERY_MAX_TIME: &str = "60";
/// Pause between recovery attempts that were refused.
const RETRY_GAP: Duration = Duration::from_millis(500);

/// The credentials of the identity made earlier by [`identities`].
const USER: &str = "app1";
const PASS: &str = "x";
const CREDS: &str = "app1:x";

/// Log line parts of the CLI contract and of src/sam/stream.rs.
const DEFAULT_READY: &str = "default identity: I2P destination ready: ";
const DEFAULT_LOST: &str = "default identity: SAM session lost";
const DEFAULT_RETRY: &str = "default identity: cannot create a SAM session at ";

/// How the transfer cut by the restart ended.
struct Cut {
    /// Body bytes received, and whether they are exactly the site's pattern so far.
    body: u64,
    intact: bool,
    /// Why reading stopped: `EOF`, an error, or a timeout (a hang).
    end: String,
    ended_at: Instant,
}

/// `GET /bytes/<CUT_TRANSFER>` through the proxy; says on `started` once `after` body bytes
/// are in, then reads on until the stream ends.
fn cut_transfer<R: RealRouter>(
    router: &R,
    proxy: &Proxy,
    after: u64,
    started: mpsc::Sender<()>,
) -> thread::JoinHandle<Cut> {
    let mut s = socks5_stream(proxy.addr(), router.site_b32(), 80).expect("SOCKS5 CONNECT to the site");
    let req = format!("GET /bytes/{CUT_TRANSFER} HTTP/1.0\r\nHost: {}\r\n\r\n", router.site_b32());
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(CUT_READ_TIMEOUT)).unwrap();
    thread::spawn(move || {
        let mut head: Vec<u8> = Vec::new();
        let mut in_body = false;
        let mut hasher = Sha256::new();
        let mut body = 0u64;
        let mut told = false;
        let mut buf = vec![0u8; 64 << 10];
        let end = loop {
            let k = match s.read(&mut buf) {
                Ok(0) => break "EOF".to_string(),
                Ok(k) => k,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break format!("hang: nothing for {CUT_READ_TIMEOUT:?}")
                }
                Err(e) => break format!("error: {e}"),
            };
            let mut data = &buf[..k];
            if !in_body {
                head.extend_from_slice(data);
                let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                assert!(head.starts_with(b"HTTP/1.0 200 "), "{}", String::from_utf8_lossy(&head));
                let rest = head.split_off(at + 4);
                hasher.update(&rest);
                body += rest.len() as u64;
                in_body = true;
                data = &[];
            }
            hasher.update(data);
            body += data.len() as u64;
            if !told && body >= after {
                told = true;
                let _ = started.send(());
            }
        };
        let ended_at = Instant::now();
        let _ = s.shutdown(Shutdown::Both);
        let intact = format!("{:x}", hasher.finalize()) == expected_sha256(body as usize);
        Cut { body, intact, end, ended_at }
    })
}

/// The router stopped and started again under the running proxy (see the module doc).
pub fn router_restarted<R: RealRouter>(router: &mut R, proxy: &mut Proxy) {
    let pid = proxy.pid();
    let p = proxy.addr().to_string();
    let seen = proxy.lines().len();

    // A transfer in flight when the router goes.
    let (tx, rx) = mpsc::channel();
    let reader = cut_transfer(router, proxy, router.quick_stream() as u64 / 2, tx);
    rx.recv_timeout(CUT_READ_TIMEOUT).expect("the cut transfer never got going");
    let t_stop = Instant::now();
    router.stop_all();
    let t_down = Instant::now();
    // The outage: the same process, still answering, promptly (probed at once).
    assert!(proxy.wait_exit(Duration::ZERO).is_none(), "the proxy exited when the router stopped");
    assert_eq!(proxy.pid(), pid);
    let mut slowest = Duration::ZERO;
    for i in 0..OUTAGE_PROBES {
        let creds = (i % 2 == 1).then_some((USER, PASS));
        let t = Instant::now();
        let (_s, reply) = socks5_connect(proxy.addr(), router.site_b32(), 80, creds);
        let took = t.elapsed();
        slowest = slowest.max(took);
        assert!(
            matches!(reply[1], 0x01 | 0x06) && took <= OUTAGE_REPLY,
            "outage probe {i} ({}): {reply:02x?} after {took:?}",
            if creds.is_some() { "credentials" } else { "default" }
        );
        if i == 0 {
            eprintln!("outage: first refusal {:?} after the router exited: {reply:02x?}", t_down.elapsed());
        }
        thread::sleep(PROBE_GAP);
    }
    eprintln!("outage: {OUTAGE_PROBES} clients refused, slowest reply {slowest:?}");

    // The cut transfer (joined only now: checking its bytes takes a while).
    let cut = reader.join().unwrap();
    let after_exit = cut.ended_at.saturating_duration_since(t_down);
    eprintln!(
        "cut transfer: {} B of {CUT_TRANSFER} B, then {} {:?} after the stop began ({after_exit:?} after the router exited)",
        cut.body,
        cut.end,
        cut.ended_at.saturating_duration_since(t_stop)
    );
    assert!(!cut.end.starts_with("hang"), "the cut transfer hung: {}", cut.end);
    assert!(after_exit <= STREAM_END_AFTER_EXIT, "stream ended {after_exit:?} after the router exited");
    assert!(cut.body < CUT_TRANSFER as u64, "the transfer was not cut");
    assert!(cut.intact, "the {} B received before the cut are not the site's bytes", cut.body);

    // Lost, then retried with growing waits.
    let retries = proxy.wait_for_nth_line(
        DEFAULT_RETRY,
        count(proxy, seen, DEFAULT_RETRY) + RETRIES_SEEN,
        RETRIES_WAIT,
    );
    let lines = since(proxy, seen);
    assert!(lines.iter().any(|l| l.contains(DEFAULT_LOST)), "no `{DEFAULT_LOST}` line");
    assert!(retries.is_some(), "no {RETRIES_SEEN} `{DEFAULT_RETRY}` lines within {RETRIES_WAIT:?}");
    let waits: Vec<u64> = lines
        .iter()
        .filter(|l| l.contains(DEFAULT_RETRY))
        .filter_map(|l| l.split("retrying in ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert!(waits.len() >= RETRIES_SEEN && waits.windows(2).all(|w| w[0] < w[1]), "backoff waits {waits:?}");
    eprintln!("outage: backoff waits {waits:?} s; router down for {:?}", t_down.elapsed());

    // The router comes back; the same proxy serves both identities again.
    let t_back = Instant::now();
    router.start_all_again();
    eprintln!("{} back in {:?}", router.label(), t_back.elapsed());
    let fetch = |creds: Option<&'static str>| {
        let p = p.clone();
        let url = format!("http://{}/echo-headers", router.site_b32());
        thread::spawn(move || recover(&p, creds, &url, t_back))
    };
    let (default, named) = (fetch(None), fetch(Some(CREDS)));
    let (default, named) = (default.join().unwrap(), named.join().unwrap());
    eprintln!(
        "recovery: default identity served {:?} after the restart began ({} tries), {USER} {:?} ({} tries)",
        default.1, default.2, named.1, named.2
    );
    assert_eq!(proxy.pid(), pid);
    assert!(proxy.wait_exit(Duration::ZERO).is_none(), "the proxy exited");
    let rebuilt = proxy
        .lines()
        .iter()
        .skip(seen)
        .filter_map(|l| l.split(DEFAULT_READY).nth(1).map(|b| b.trim().to_string()))
        .next_back()
        .expect("the default identity logged no new `I2P destination ready`");
    assert_eq!(default.0, rebuilt, "the site saw another destination than the rebuilt default one");
    assert_ne!(named.0, rebuilt, "the credential identity must keep its own destination");

    // And no data is lost after the recovery.
    fetch_bytes(router, &p, router.quick_stream());
}

/// `GET /bytes/<n>` through the proxy at `p`, byte-exact. On a router that loses stream ends
/// ([`RealRouter::loses_stream_ends`]) a transfer that stalls after a correct prefix is that
/// fault: it is named in the output and the fetch is tried again, up to [`END_TRIES`] times.
/// A wrong byte, any other failure, or the fault on every try fails the test.
pub fn fetch_bytes<R: RealRouter>(router: &R, p: &str, n: usize) {
    let url = format!("http://{}/bytes/{n}", router.site_b32());
    let expected = pattern(n);
    for attempt in 1..=END_TRIES {
        let out = curl(&[
            "--socks5-hostname",
            p,
            "--max-time",
            CURL_LIMIT,
            "--speed-limit",
            "1",
            "--speed-time",
            STALL_SECONDS,
            &url,
        ]);
        let got = &out.stdout;
        let prefix = expected.get(..got.len()) == Some(got.as_slice());
        if out.status.success() && got.len() == n && prefix {
            return;
        }
        let stalled = got.len() < n && prefix && out.status.code() == Some(CURL_TIMED_OUT);
        assert!(
            stalled && router.loses_stream_ends(),
            "{}: {url}: {:?}, {} of {n} B, {} prefix: {}",
            router.label(),
            out.status,
            got.len(),
            if prefix { "a correct" } else { "NOT a correct" },
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{}: router fault, lost stream end (doc/i2pd-stream-end.md): {url} stopped after {} of {n} B \
             (try {attempt} of {END_TRIES})",
            router.label(),
            got.len()
        );
    }
    panic!("{}: {url}: the stream end was lost on all {END_TRIES} tries", router.label());
}

/// Fetch `url` (`/echo-headers`) through the proxy until it works; returns the source
/// destination the site saw, the time since `from`, and the number of tries.
fn recover(proxy: &str, creds: Option<&str>, url: &str, from: Instant) -> (String, Duration, usize) {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut args = vec!["--socks5-hostname", proxy, "--max-time", RECOVERY_MAX_TIME];
        if let Some(c) = creds {
            args.extend(["--proxy-user", c]);
        }
        args.push(url);
        let out = curl(&args);
        let body = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            let b32 =
                body.lines().find_map(|l| l.strip_prefix("X-I2P-DestB32:")).map(|v| v.trim().to_string());
            return (b32.unwrap_or_else(|| panic!("no X-I2P-DestB32 in {body}")), from.elapsed(), tries);
        }
        assert!(
            from.elapsed() < RECOVERY,
            "{creds:?}: not served within {RECOVERY:?} of the restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(RETRY_GAP);
    }
}

/// The proxy's log lines from index `from` on.
fn since(proxy: &Proxy, from: usize) -> Vec<String> {
    proxy.lines().into_iter().skip(from).collect()
}

/// Lines before index `from` that contain `what`.
fn count(proxy: &Proxy, from: usize, what: &str) -> usize {
    proxy.lines().iter().take(from).filter(|l| l.contains(what)).count()
}
