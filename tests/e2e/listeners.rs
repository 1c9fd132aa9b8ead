//! Several listeners on the real router: one i2psocks with two TCP listeners and a Unix
//! socket, started beside the main proxy so that its three default sessions build while
//! the main one does (SESSION CREATE takes ~20 s on i2pd 2.45; parallel creates finish
//! together). The site (an i2pd `type = http` server tunnel) reports each client's source
//! in `X-I2P-DestB32`: credential-less clients on the two ports come from two addresses,
//! each its listener's logged default identity; the same credentials on both ports from
//! two more; curl through `socks5h://localhost/PATH` on the Unix socket fetches the page.
//! The two credentialed requests start early (see [`begin`]) so that their sessions build
//! while the main proxy's identity cases build theirs.

use crate::cases::source_b32 as source;
use crate::common::http::MARKER;
use crate::common::i2pd::{curl, Router};
use crate::common::proxy::{bridge_args, Proxy, READY};
use crate::common::router::RealRouter;
use crate::common::TempDir;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a fresh SAM session may take on i2pd 2.45 (it answers after ~20 s).
const SESSION_WAIT: Duration = Duration::from_secs(90);
/// curl's limit for a request that may wait for a new session.
const CURL_LIMIT: &str = "120";
/// The credentials sent on both TCP ports.
const CREDS: &str = "same:pw";

/// The proxy under test here and its Unix socket's place.
pub struct Listeners {
    pub proxy: Proxy,
    pub socket: PathBuf,
    _dir: TempDir,
    started: Instant,
}

/// Start the proxy with `-l 127.0.0.1:0 -l 127.0.0.1:0 -l unix:<dir>/socks`; returns at
/// once (its sessions build in the background).
pub fn start(router: &Router) -> Listeners {
    let dir = TempDir::new("e2e-listeners");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = dir.0.join("socks");
    let sam = router.sam_addr().to_string();
    let unix = format!("unix:{}", socket.display());
    let proxy = Proxy::start(&bridge_args(&sam, &["-l", "127.0.0.1:0", "-l", "127.0.0.1:0", "-l", &unix]));
    Listeners { proxy, socket, _dir: dir, started: Instant::now() }
}

/// The credentialed requests on both TCP ports, running.
pub struct Pending(Vec<JoinHandle<String>>);

/// Start the same credentials' requests on both TCP ports (two new sessions).
pub fn begin(router: &Router, l: &Listeners) -> Pending {
    let addrs = l.proxy.listening(3);
    let handles = addrs[..2]
        .iter()
        .map(|a| {
            let url = format!("socks5h://{CREDS}@{a}");
            let site = router.site_b32().to_string();
            thread::spawn(move || {
                let target = format!("http://{site}/echo-headers");
                let out = curl(&["-x", &url, "--max-time", CURL_LIMIT, &target]);
                assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
                let body = String::from_utf8(out.stdout).unwrap();
                body.lines().find_map(|l| l.strip_prefix("X-I2P-DestB32:")).unwrap().trim().to_string()
            })
        })
        .collect();
    Pending(handles)
}

/// The checks, once the main proxy's own cases are done.
pub fn run(router: &Router, l: &Listeners, pending: Pending) {
    let labels =
        ["default identity: ", "default identity of listener 2: ", "default identity of listener 3: "];
    let mut defaults = Vec::new();
    for label in labels {
        let line = l
            .proxy
            .wait_for_line(&format!("{label}{READY}"), SESSION_WAIT)
            .unwrap_or_else(|| panic!("no `{label}{READY}` line"));
        defaults.push(line.rsplit(' ').next().unwrap().to_string());
    }
    eprintln!("three listeners' default identities ready {:?} after start", l.started.elapsed());
    let addrs = l.proxy.listening(3);
    assert_eq!(addrs[2], format!("unix:{}", l.socket.display()));

    // No credentials: each TCP port's own default identity.
    let one = source(router, &["--socks5-hostname", &addrs[0]]);
    let two = source(router, &["--socks4a", &addrs[1]]);
    assert_ne!(one, two, "two ports, two addresses");
    assert_eq!([one.as_str(), two.as_str()], [defaults[0].as_str(), defaults[1].as_str()]);

    // The Unix socket: curl's socks5h://localhost/PATH, on listener 3's identity.
    let via_unix = format!("socks5h://localhost{}", l.socket.display());
    let out = curl(&["-x", &via_unix, &format!("http://{}/", router.site_b32())]);
    assert!(out.status.success(), "curl -x {via_unix}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(MARKER), "the page through the Unix socket");
    assert_eq!(source(router, &["-x", &via_unix]), defaults[2]);

    // The same credentials on both ports: two more addresses.
    let t = Instant::now();
    let named: Vec<String> = pending.0.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("credentialed requests on two ports joined after {:?} more", t.elapsed());
    assert_ne!(named[0], named[1], "the same credentials on two ports: two identities");
    for n in &named {
        assert!(!defaults.contains(n), "{n} is a default identity");
    }
}
