//! The end of a stream on real i2pd routers: 10 MiB `GET /bytes/N` downloads (HTTP/1.0, so
//! the fixture site closes after the body) over three paths on the same router — a bare SAM
//! client (tests/common/sam_client.rs, no i2psocks), i2psocks, and i2pd's own SOCKS port —
//! each sorted by how it ended ([`End`]): closed after every byte, or one of the router's two
//! ways of stopping short that i2pd 2.59 shows now and then (doc/i2pd-stream-end.md): every
//! byte and then no close (the lost close), or the last bytes and the close both kept in the
//! router (the lost tail). Those two are tolerated by name and counted in the output. Always
//! true, and asserted on every path: each byte that arrives is the site's byte at its offset,
//! and no stream is closed before its last byte (no path invents a close). One `#[test]` per
//! router, so the routers run at the same time. Needs the packages of tests/deps.sh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::i2pd::{socks5_stream, Build, Router};
use common::proxy::Proxy;
use common::rng::pattern;
use common::router::RealRouter;
use common::sam_client::{stream_connect, Sam};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Body size of each download: the size the lost close was first seen with.
const SIZE: usize = 10 << 20;
/// How long after the last byte that came the next byte or the close may take before they
/// count as lost (a close comes within milliseconds when it comes; the lost ones stayed
/// away for 30 s+, and the proxy's default idle timeout is 30 min).
const CLOSE_WAIT: Duration = Duration::from_secs(8);
/// Wait for the response's first byte.
const FIRST_WAIT: Duration = Duration::from_secs(30);
/// One read's wait, so the clocks above are checked often.
const READ_STEP: Duration = Duration::from_millis(200);
/// The proxy's or the bare client's session build (i2pd 2.45 needs ~20 s).
const SESSION_WAIT: Duration = Duration::from_secs(90);
/// Longest response head accepted before the body.
const MAX_HEAD: usize = 4 << 10;

#[test]
fn i2pd_newest_stream_end() {
    measure(Build::Sid, 12);
}

#[test]
fn i2pd_2_56_stream_end() {
    measure(Build::Trixie, 5);
}

#[test]
fn i2pd_2_45_stream_end() {
    measure(Build::System, 5);
}

/// How one download ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every byte, then the close: what a stream's end should be.
    Closed,
    /// Every byte, then nothing for [`CLOSE_WAIT`]: the router's lost close.
    LostClose,
    /// Some bytes, then nothing for [`CLOSE_WAIT`], no close: the router's lost tail (the
    /// rest of the body and the close stayed in the router).
    LostTail,
    /// A close before the last byte: a stream cut short, which no path may do.
    CutShort,
}

/// What one download saw.
struct Download {
    end: End,
    /// Body bytes that arrived.
    got: usize,
    /// Every byte that arrived is the site's byte at that offset.
    in_order: bool,
    /// From the last byte to the close (or to giving up on it).
    after_last: Duration,
    took: Duration,
}

fn measure(build: Build, downloads: usize) {
    let t0 = Instant::now();
    let router = Router::start_build(build);
    let label = router.label();
    let sam = router.sam_addr().to_string();
    let hops = router.hops().to_string();
    let proxy = Proxy::start(&["-s", sam.as_str(), "--hops", hops.as_str(), "--tunnels", "1"]);
    // The bare client's own session, built while the proxy builds its own.
    let mut control = Sam::connect(router.sam_addr()).unwrap();
    control
        .session_create_within("STREAM", "stream-end", "TRANSIENT", &router.peer_options(), SESSION_WAIT)
        .unwrap();
    proxy.ready_b32("default identity", SESSION_WAIT).expect("the proxy's default identity");
    eprintln!("{label}: router and both sessions up in {:?}", t0.elapsed());

    let site = router.site_b32();
    let proxy_addr = proxy.addr();
    let expected = pattern(SIZE);
    type Open<'a> = Box<dyn Fn() -> std::io::Result<TcpStream> + 'a>;
    let paths: [(&str, Open); 3] = [
        ("bare SAM", Box::new(|| stream_connect(router.sam_addr(), "stream-end", router.site_dest_b64()))),
        ("i2psocks", Box::new(|| socks5_stream(proxy_addr, site, 80))),
        ("i2pd SOCKS", Box::new(|| socks5_stream(router.socks_addr(), site, 80))),
    ];
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for (name, open) in &paths {
        let mut ends: Vec<(usize, End, usize)> = Vec::new();
        let mut closes = Vec::new();
        for i in 0..downloads {
            let d = download(
                open().unwrap_or_else(|e| panic!("{label} {name}: open #{i}: {e}")),
                site,
                &expected,
            );
            let said = match d.end {
                End::Closed => "closed",
                End::LostClose => "the router's lost close: every byte, then no close",
                End::LostTail => "the router's lost tail: neither the rest nor a close came",
                End::CutShort => "CUT SHORT: closed before the last byte",
            };
            eprintln!(
                "{label} {name} #{i}: {} of {SIZE} bytes in {:?}; {said} ({:?} after the last byte)",
                d.got, d.took, d.after_last
            );
            if d.end == End::Closed {
                closes.push(d.after_last);
            }
            if !d.in_order || d.end == End::CutShort {
                wrong.push(format!("{name} #{i}: {} bytes, in order: {}, {:?}", d.got, d.in_order, d.end));
            }
            ends.push((i, d.end, d.got));
        }
        closes.sort();
        let of = |e: End| ends.iter().filter(|x| x.1 == e).map(|x| (x.0, SIZE - x.2)).collect::<Vec<_>>();
        rows.push(format!(
            "{label} {name:<10} {downloads} downloads: {} closed (median {:?} after the last byte); \
             lost close {:?}; lost tail (#, bytes missing) {:?}",
            closes.len(),
            closes.get(closes.len() / 2),
            of(End::LostClose).iter().map(|x| x.0).collect::<Vec<_>>(),
            of(End::LostTail),
        ));
    }
    drop(control);
    drop(proxy);
    for row in &rows {
        eprintln!("{row}");
    }
    eprintln!("{label}: done in {:?}", t0.elapsed());
    assert!(wrong.is_empty(), "{label}: bytes out of order or a stream cut short: {wrong:?}");
}

/// `GET /bytes/SIZE HTTP/1.0` on an open stream: reads until the close, or until nothing
/// has come for [`CLOSE_WAIT`] ([`FIRST_WAIT`] for the first byte). `expected`: the body.
fn download(mut s: TcpStream, host: &str, expected: &[u8]) -> Download {
    let t0 = Instant::now();
    s.set_read_timeout(Some(READ_STEP)).unwrap();
    s.write_all(format!("GET /bytes/{SIZE} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    let mut all = Vec::with_capacity(SIZE + MAX_HEAD);
    let mut buf = vec![0u8; 64 << 10];
    let mut body_at = None;
    let mut last: Option<Instant> = None;
    let closed = loop {
        let now = Instant::now();
        match last {
            Some(at) if now.duration_since(at) >= CLOSE_WAIT => break false,
            None if now.duration_since(t0) >= FIRST_WAIT => break false,
            _ => {}
        }
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                last = Some(Instant::now());
                if body_at.is_none() {
                    body_at = all.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                    assert!(body_at.is_some() || all.len() < MAX_HEAD, "no response head");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("read: {e}"),
        }
    };
    let after_last = last.map_or(t0, |at| at).elapsed();
    let body = body_at.map_or(&[][..], |b| &all[b..]);
    let in_order = body.len() <= SIZE && expected.get(..body.len()) == Some(body);
    let end = match (closed, body.len() == SIZE) {
        (true, true) => End::Closed,
        (false, true) => End::LostClose,
        (false, false) => End::LostTail,
        (true, false) => End::CutShort,
    };
    Download { end, got: body.len(), in_order, after_last, took: t0.elapsed() }
}
