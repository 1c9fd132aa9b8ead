//! Spare sessions on a real I2P router (tests/common/i2pd.rs): what a new identity costs a
//! client once a spare is ready, measured as the time from the SOCKS connect to the first
//! byte of the local site's answer, and the address the site saw (its `X-I2P-DestB32`
//! header, from an i2pd `type = http` server tunnel).
//!
//! Two proxies of their own, started beside the main one so that their ~20 s SESSION
//! CREATEs overlap with it (parallel creates finish together on i2pd 2.45):
//! - [`Spares::new_credentials`] and [`Spares::sighup`] on one with the defaults (one
//!   spare): new credentials, then SIGHUP and a connection without credentials, each
//!   answered within [`FAST`] from the spare's address; before them, the idle proxy holds
//!   exactly the default identity's and the spare's SAM sessions (the hidden cost).
//! - [`Spares::isolate_client`], in a thread while the other cases run, on one with
//!   `--isolate client`: five connections, each after the next spare is ready (spaced by
//!   the build time), each answered within [`FAST`] from a new address; then a burst of
//!   three, for what a burst faster than a build costs.
//!
//! Part of `real_router()` in tests/e2e_i2pd.rs.

use crate::common::i2pd::Router;
use crate::common::process::tcp_connections_to;
use crate::common::proxy::{bridge_args, Proxy, ReadEnd, S5_OK};
use crate::common::proxy::{read_exact_by, read_n, s5_reply, send, socks5_greet, socks5_request};
use crate::common::router::RealRouter;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// A client served by a ready spare gets its first byte within this.
const FAST: Duration = Duration::from_secs(1);
/// Wait for a session of the proxy (i2pd 2.45: ~20 s each; a loaded router more).
const SESSION_WAIT: Duration = Duration::from_secs(90);
/// A client that waits for a build: its reply and answer within this.
const SLOW: Duration = Duration::from_secs(90);
/// Connections of the spaced `--isolate client` run.
const SPACED: usize = 5;
/// Connections of the burst.
const BURST: usize = 3;

/// One request through a proxy.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// SOCKS connect → first byte of the site's answer.
    pub first_byte: Duration,
    /// The address the site saw.
    pub source: String,
}

/// The two proxies of this file.
pub struct Spares {
    default: Proxy,
    /// Lent to the thread of [`Spares::isolate_client`].
    isolating: Option<Proxy>,
}

impl Spares {
    /// Start both proxies (their sessions build while the caller goes on).
    pub fn start(router: &Router) -> Spares {
        let sam = router.sam_addr().to_string();
        let default = Proxy::start(&bridge_args(&sam, &[]));
        let isolating = Some(Proxy::start(&bridge_args(&sam, &["--isolate", "client"])));
        Spares { default, isolating }
    }

    /// Hands both proxies to `router` to keep until it stops ([`RealRouter::retire`]); the
    /// isolating one only if it was not lent out.
    pub fn retire(self, router: &Router) {
        router.retire(self.default);
        if let Some(p) = self.isolating {
            router.retire(p);
        }
    }

    /// The idle proxy holds the default identity's session and one spare, and nothing more.
    pub fn idle_cost(&self, router: &Router) {
        for p in [Some(&self.default), self.isolating.as_ref()].into_iter().flatten() {
            p.ready_b32("default identity", SESSION_WAIT).expect("default identity");
            p.ready_b32("spare #1", SESSION_WAIT).expect("spare #1");
            thread::sleep(Duration::from_secs(1));
            let n = tcp_connections_to(p.pid(), router.sam_addr().port());
            eprintln!("spares: idle proxy holds {n} SAM sessions (default identity + 1 spare)");
            assert_eq!(n, 2, "SAM connections of an idle proxy");
        }
    }

    /// New credentials with a spare ready: the first byte within [`FAST`], from the spare.
    pub fn new_credentials(&self, router: &Router) {
        let spare = self.default.ready_b32("spare #1", SESSION_WAIT).expect("spare #1");
        let f = fetch(self.default.addr(), router.site_b32(), Some(("spare-user", "x")), FAST * 10);
        eprintln!("spares: new credentials, spare ready: first byte after {:?}", f.first_byte);
        assert!(f.first_byte < FAST, "new credentials waited {:?} for the first byte", f.first_byte);
        assert_eq!(f.source, spare, "the site did not see the spare's address");
        assert_ne!(
            f.source,
            self.default.ready_b32("default identity", Duration::ZERO).expect("default identity")
        );
    }

    /// SIGHUP, then a connection without credentials: the first byte within [`FAST`], and the
    /// site sees a new address (the second spare's).
    pub fn sighup(&self, router: &Router) {
        let p = &self.default;
        let before = fetch(p.addr(), router.site_b32(), None, SLOW);
        assert_eq!(before.source, p.ready_b32("default identity", Duration::ZERO).expect("default identity"));
        let spare = p.ready_b32("spare #2", SESSION_WAIT).expect("spare #2");
        p.signal("HUP");
        assert!(p.wait_for_line("new identity", Duration::from_secs(10)).is_some());
        let after = fetch(p.addr(), router.site_b32(), None, FAST * 10);
        eprintln!("spares: after SIGHUP, no credentials: first byte after {:?}", after.first_byte);
        assert!(after.first_byte < FAST, "after SIGHUP the first byte took {:?}", after.first_byte);
        assert_ne!(after.source, before.source, "SIGHUP: the site saw the old address");
        assert_eq!(after.source, spare, "the new default identity is not the spare");
    }

    /// `--isolate client` in a thread: the spaced connections, then the burst. The thread
    /// returns the burst's first-byte times, fastest first, and the proxy.
    pub fn isolate_client(&mut self, router: &Router) -> thread::JoinHandle<(Vec<Duration>, Proxy)> {
        let p = self.isolating.take().expect("the --isolate client proxy");
        let addr = p.addr();
        let site = router.site_b32().to_string();
        thread::spawn(move || {
            let mut seen = Vec::new();
            for k in 1..=SPACED {
                let spare = p.ready_b32(&format!("spare #{k}"), SESSION_WAIT).expect("spare ready");
                let f = fetch(addr, &site, None, FAST * 10);
                eprintln!("spares: --isolate client connection {k}: first byte after {:?}", f.first_byte);
                assert!(f.first_byte < FAST, "connection {k}: {:?}", f.first_byte);
                assert_eq!(f.source, spare, "connection {k} not on its spare");
                assert!(!seen.contains(&f.source), "connection {k}: an address seen before");
                seen.push(f.source);
            }
            // The burst: as many connections at once as there are ready spares, plus two.
            p.ready_b32(&format!("spare #{}", SPACED + 1), SESSION_WAIT).expect("spare ready");
            let t = Instant::now();
            let burst: Vec<_> = (0..BURST)
                .map(|_| {
                    let site = site.clone();
                    thread::spawn(move || fetch(addr, &site, None, SLOW))
                })
                .collect();
            let mut got: Vec<Fetch> = burst.into_iter().map(|h| h.join().unwrap()).collect();
            got.sort_by_key(|f| f.first_byte);
            let times: Vec<Duration> = got.iter().map(|f| f.first_byte).collect();
            eprintln!(
                "spares: burst of {BURST} with one spare ready: first bytes after {times:?} ({:?})",
                t.elapsed()
            );
            assert!(times[0] < FAST, "nobody in the burst got the ready spare: {times:?}");
            for f in &got {
                assert!(!seen.contains(&f.source), "the burst reused an address");
                seen.push(f.source.clone());
            }
            (times, p)
        })
    }
}

/// `GET /echo-headers` on `site` through the SOCKS5 proxy at `proxy` (with `creds`), all
/// within `timeout`: when its first byte came and the source address the site saw.
pub fn fetch(proxy: SocketAddr, site: &str, creds: Option<(&str, &str)>, timeout: Duration) -> Fetch {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&proxy, timeout).expect("connect to the proxy");
    s.set_nodelay(true).unwrap();
    socks5_greet(&mut s, creds);
    send(&mut s, &socks5_request(1, site, 80));
    let reply = read_exact_by(&mut s, 10, timeout);
    assert_eq!(reply, S5_OK, "SOCKS reply (0x01 would be {:02x?})", s5_reply(1));
    s.write_all(format!("GET /echo-headers HTTP/1.0\r\nHost: {site}\r\n\r\n").as_bytes()).unwrap();
    let (first, end) = read_n(&mut s, 1, timeout.saturating_sub(t.elapsed()));
    assert_eq!(end, ReadEnd::Full, "no answer from the site");
    let first_byte = t.elapsed();
    let (rest, _) = read_n(&mut s, usize::MAX, timeout);
    let body = String::from_utf8_lossy(&[first, rest].concat()).into_owned();
    let source = body
        .lines()
        .find_map(|l| l.strip_prefix("X-I2P-DestB32:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no X-I2P-DestB32 in {body}"));
    Fetch { first_byte, source }
}
