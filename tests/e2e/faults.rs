//! The real-router half of the fault and integrity checks (the fake-bridge half is
//! tests/hardening.rs): real i2pd (tests/common/i2pd.rs), the real i2psocks, real curl.
//!
//! [`concurrent_streams`]: 10 curl processes at once through i2psocks to the local site, each
//! fetching a different `/bytes/<n>` of 1-2 MiB, all byte-exact by sha256.
//! [`router_restarted`]: i2pd is stopped under a running proxy while a transfer is in flight
//! and started again on the same ports and datadir. The transfer ends promptly (no hang) with
//! a clean prefix of the right bytes; the proxy keeps its pid and keeps answering (0x01, or
//! 0x06 at its connect deadline) during the outage; it logs the session lost and retries with
//! growing waits; once the router is back the SAME proxy process serves the default identity
//! and a credential identity again, each from a rebuilt session (a new transient destination).
//!
//! Part of `real_router()` in tests/e2e_i2pd.rs, as its last case: the restart costs every
//! identity of the proxy a new SESSION CREATE (~20 s each on i2pd 2.45, made in parallel).
//! Not here: half-close integrity (i2pd 2.45 drops data after a FIN; the fake bridge proves
//! it), hung or garbage bridges (tests/hardening.rs).

use crate::common::http::{expected_sha256, sha256_hex};
use crate::common::i2pd::{curl, socks5_stream, Router};
use crate::common::proxy::{socks5_connect, Proxy};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Concurrent streams of [`concurrent_streams`].
const STREAMS: usize = 10;
/// Their sizes: 1 MiB + k * STEP, all distinct, up to ~1.9 MiB.
const STEP: usize = 99_991;
/// One stream's curl `--max-time`, seconds (10 × ~1.5 MiB at i2pd's ~9 MiB/s takes ~2 s).
const STREAM_MAX_TIME: &str = "120";
/// Size asked for by the transfer that the restart cuts: more than i2pd streams in the
/// time the test needs to stop it (MAX_BYTES of the site).
const CUT_TRANSFER: usize = 256 << 20;
/// Body bytes the cut transfer must have received before the router is stopped.
const CUT_AFTER: u64 = 1 << 20;
/// Read timeout of the cut transfer: a stall this long counts as a hang.
const CUT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Once i2pd has exited, the relay must end the client's stream within this.
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
/// Router back → a fetch through the rebuilt sessions succeeds (~20 s SESSION CREATE plus
/// up to one backoff wait).
const RECOVERY: Duration = Duration::from_secs(90);
/// curl `--max-time` of one recovery attempt, seconds (a request waits while its session
/// is being built, up to the proxy's connect deadline).
const RECOVERY_MAX_TIME: &str = "60";
/// Pause between recovery attempts that were refused.
const RETRY_GAP: Duration = Duration::from_millis(500);
/// Size of the byte-exact download after the recovery.
const AFTER_BYTES: usize = 1 << 20;

/// The credentials of the identity made earlier by `identities_through_i2psocks`.
const USER: &str = "app1";
const PASS: &str = "x";
const CREDS: &str = "app1:x";

/// Log line parts of the CLI contract and of src/sam/stream.rs.
const DEFAULT_READY: &str = "default identity: I2P destination ready: ";
const DEFAULT_LOST: &str = "default identity: SAM session lost";
const DEFAULT_RETRY: &str = "default identity: cannot create a SAM session at ";

pub fn run(router: &mut Router, proxy: &mut Proxy) {
    concurrent_streams(router, proxy);
    router_restarted(router, proxy);
}

/// 10 curls at once, each a different size, each byte-exact.
fn concurrent_streams(router: &Router, proxy: &Proxy) {
    let p = proxy.addr().to_string();
    let start = Arc::new(Barrier::new(STREAMS));
    let t = Instant::now();
    let workers: Vec<_> = (0..STREAMS)
        .map(|k| {
            let n = (1 << 20) + k * STEP;
            let url = format!("http://{}/bytes/{n}", router.site_b32());
            let (p, start) = (p.clone(), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                let out = curl(&["--socks5-hostname", &p, "--max-time", STREAM_MAX_TIME, &url]);
                (n, out, t.elapsed())
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        let (n, out, took) = w.join().unwrap();
        assert!(
            out.status.success(),
            "stream of {n} B: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), n, "stream of {n} B: length");
        assert_eq!(sha256_hex(&out.stdout), expected_sha256(n), "stream of {n} B: sha256");
        eprintln!("  stream of {n} B in {took:?}");
        total += n;
    }
    let took = t.elapsed();
    eprintln!(
        "{STREAMS} concurrent streams, {total} B byte-exact through i2psocks in {took:?} ({:.1} MiB/s)",
        total as f64 / (1 << 20) as f64 / took.as_secs_f64()
    );
}

/// How the transfer cut by the restart ended.
struct Cut {
    /// Body bytes received, and whether they are exactly the site's pattern so far.
    body: u64,
    intact: bool,
    /// Why reading stopped: `EOF`, an error, or a timeout (a hang).
    end: String,
    ended_at: Instant,
}

/// `GET /bytes/<CUT_TRANSFER>` through the proxy; says on `started` once [`CUT_AFTER`] body
/// bytes are in, then reads on until the stream ends.
fn cut_transfer(router: &Router, proxy: &Proxy, started: mpsc::Sender<()>) -> thread::JoinHandle<Cut> {
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
            if !told && body >= CUT_AFTER {
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
fn router_restarted(router: &mut Router, proxy: &mut Proxy) {
    let pid = proxy.pid();
    let p = proxy.addr().to_string();
    let seen = proxy.lines().len();

    // A transfer in flight when the router goes.
    let (tx, rx) = mpsc::channel();
    let reader = cut_transfer(router, proxy, tx);
    rx.recv_timeout(CUT_READ_TIMEOUT).expect("the cut transfer never got going");
    let t_stop = Instant::now();
    let stopped = router.stop();
    let t_down = Instant::now();
    eprintln!("router stopped under the proxy: {stopped:?}");
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
            eprintln!("outage: first refusal {:?} after i2pd exited: {reply:02x?}", t_down.elapsed());
        }
        thread::sleep(PROBE_GAP);
    }
    eprintln!("outage: {OUTAGE_PROBES} clients refused, slowest reply {slowest:?}");

    // The cut transfer (joined only now: checking its bytes takes a while).
    let cut = reader.join().unwrap();
    let after_exit = cut.ended_at.saturating_duration_since(t_down);
    eprintln!(
        "cut transfer: {} B of {CUT_TRANSFER} B, then {} {:?} after the stop began ({after_exit:?} after i2pd exited)",
        cut.body,
        cut.end,
        cut.ended_at.saturating_duration_since(t_stop)
    );
    assert!(!cut.end.starts_with("hang"), "the cut transfer hung: {}", cut.end);
    assert!(after_exit <= STREAM_END_AFTER_EXIT, "stream ended {after_exit:?} after i2pd exited");
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
    let timings = router.start_again();
    eprintln!("router back in {:?} ({timings:?})", t_back.elapsed());
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
    let url = format!("http://{}/bytes/{AFTER_BYTES}", router.site_b32());
    let out = curl(&["--socks5-hostname", &p, "--max-time", STREAM_MAX_TIME, &url]);
    assert!(out.status.success(), "{url} after the restart: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_hex(&out.stdout), expected_sha256(AFTER_BYTES));
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
