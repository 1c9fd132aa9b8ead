//! SOCKS5 UDP ASSOCIATE against a real I2P router (Debian's i2pd, offline on loopback; see
//! tests/common/i2pd.rs). A SAM DATAGRAM session held by the test echoes every datagram it
//! receives; a SOCKS5 UDP client sends 100 datagrams through i2psocks to that echo's
//! `.b32.i2p` and must get each back intact, sender shown as the echo's b32. PySocks does
//! the same once when installed. First, the UDP ASSOCIATE reply comes at once, before the
//! datagram session exists, and datagrams sent right after it are all echoed once the
//! session is up. One `#[test]`: i2pd 2.45 takes ~20 s per session, and four are needed
//! (the echo, the proxy's default identity and spare, its datagram session).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::i2p::{b32_of_blob, b64_decode};
use common::i2pd::Router;
use common::proxy::{bridge_args, Proxy};
use common::sam_client::{datagram_parse, datagram_send, Sam, LS1};
use common::udp_client::{associate, udp_echo_roundtrip, Echo};
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Wait for a SAM session of the proxy (i2pd 2.45: ~20 s each).
const SESSION_WAIT: Duration = Duration::from_secs(90);
/// Per-datagram wait for its echo (the first one includes the lease set lookups).
const ECHO_WAIT: Duration = Duration::from_secs(15);
/// The UDP ASSOCIATE reply must come within this.
const REPLY_WAIT: Duration = Duration::from_millis(100);
/// Datagrams sent at once after the reply, before the session is up (within the
/// association's waiting bound of 64).
const EARLY: usize = 16;
/// Their size.
const EARLY_SIZE: usize = 1024;

#[test]
fn real_router_udp() {
    let t0 = Instant::now();
    let mut router = Router::start();
    eprintln!("router up in {:?}", t0.elapsed());

    // The proxy's default session and the echo's session are built at the same time.
    let sam = router.sam_addr().to_string();
    let proxy = Proxy::start(&bridge_args(&sam, &["-v"]));
    let (echo_b32, echo) = start_echo(&router);
    proxy.ready_b32("default identity", SESSION_WAIT).expect("i2psocks' session");
    eprintln!("sessions ready at {:?}", t0.elapsed());

    early_datagrams(&proxy, &echo_b32);

    let t = Instant::now();
    let e = Echo {
        target: &echo_b32,
        port: 7,
        sender: Some(&echo_b32),
        count: 100,
        size: 1024,
        timeout: ECHO_WAIT,
    };
    let report = udp_echo_roundtrip(proxy.addr(), None, &e).expect("100 datagrams echoed through i2psocks");
    eprintln!("100 datagrams echoed in {:?} ({} resent)", t.elapsed(), report.resent);
    assert_eq!(report.sent, 100);
    pysocks(&proxy, &echo_b32);

    drop(proxy); // close its SAM sessions before stopping the router
    echo.stop();
    let stopped = router.stop();
    assert!(stopped.graceful, "i2pd needed SIGKILL: {stopped:?}");
}

/// UDP ASSOCIATE answered within [`REPLY_WAIT`]; [`EARLY`] datagrams sent at once after the
/// reply wait for the datagram session and are all echoed back once it is up.
fn early_datagrams(proxy: &Proxy, echo_b32: &str) {
    let t = Instant::now();
    let a = associate(proxy.addr(), None).expect("UDP ASSOCIATE");
    let replied = t.elapsed();
    assert!(replied < REPLY_WAIT, "UDP ASSOCIATE answered after {replied:?}");
    let payload = |seq: usize| -> Vec<u8> { (0..EARLY_SIZE).map(|i| (seq * 7 + i) as u8).collect() };
    for seq in 0..EARLY {
        a.send(echo_b32, 7, &payload(seq));
    }
    let mut back = [false; EARLY];
    let deadline = Instant::now() + SESSION_WAIT;
    while back.iter().any(|b| !b) {
        let r = a.recv(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|| {
            panic!("echoed {} of {EARLY} early datagrams", back.iter().filter(|b| **b).count())
        });
        assert_eq!(r.host, echo_b32, "sender");
        let seq = (0..EARLY).find(|&s| payload(s) == r.data).expect("an echo of what was sent");
        back[seq] = true;
    }
    eprintln!(
        "UDP ASSOCIATE answered in {replied:?}; {EARLY} datagrams sent at once after it all echoed \
         {:?} after the request (the datagram session's build)",
        t.elapsed()
    );
}

/// A running echo destination; `stop` closes its session.
struct EchoPeer {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<()>,
}

impl EchoPeer {
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
    }
}

/// A DATAGRAM session forwarding to our UDP socket, echoing everything back to its sender.
fn start_echo(router: &Router) -> (String, EchoPeer) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let id = format!("udpecho{}", std::process::id());
    let mut ctl = Sam::connect(router.sam_addr()).unwrap();
    let key = ctl
        .session_create("DATAGRAM", &id, "TRANSIENT", &format!("PORT={port} HOST=127.0.0.1 {LS1}"))
        .expect("the echo's DATAGRAM session");
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
    (b32, EchoPeer { stop, handle })
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
