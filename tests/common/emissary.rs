//! The second real router of the end-to-end tests: emissary 0.4.0, an independent SAM v3.2
//! implementation (crates.io `emissary-cli`, built by tests/deps.sh), run as a private
//! two-router I2P network on 127.0.0.1 that nothing outside can reach: router A carries the
//! SAM bridge and an offline address book, router B is the floodfill that stores the lease
//! sets. Neither reseeds, downloads names, opens a proxy, or maps ports.
//!
//! [`Network::start`] writes both `router.toml` BEFORE either router first runs (without one
//! emissary writes its default, which reseeds from the internet), starts each once so that it
//! writes its `router.info`, gives each the other's (`netDb/rA/`, where emissary loads every
//! file), then brings the pair up: B first, A once B's NTCP2 port listens. While A is down B
//! redials it in a tight loop, and when A's own first dial crosses B's one side drops a
//! connection: tunnel builds over it are lost until emissary's 8 s build timeout, so SESSION
//! CREATE blocks or B cannot answer lease-set lookups. Each start is therefore checked: within
//! [`PROBE_WAIT`] a SESSION CREATE answers and a second session finds the first one's lease
//! set (NAMING LOOKUP of its b32), within [`RACED_PROBE_WAIT`] if the transport log shows
//! crossed dials (`rejecting`); otherwise both routers are stopped and started again, up to
//! [`START_ATTEMPTS`] times, the last one waiting up to [`LAST_PROBE_WAIT`]. Then the fixture site and echo service are published on A's bridge
//! under their fixture keys (tests/common/sam_forward.rs) and A's address book names them, so
//! they have the same addresses and names as on i2pd (tests/common/router.rs).
//!
//! [`RealRouter::stop_all`] and [`RealRouter::start_all_again`] always take BOTH routers
//! down and up: restarting A alone leaves B holding dead tunnels through A for minutes.
//! Dropping the [`Network`] stops both (SIGTERM ends emissary at once) and deletes their
//! directory; if the test is panicking it first prints the tail of both logs.
//! Linux only (it reads /proc/net/tcp); router A needs a default route (its SAM UDP socket
//! asks for the default interface; nothing is sent there).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::http::{EchoServer, HttpServer, MARKER};
use super::i2p::{b32_of_blob, b64_decode, b64_encode, public_b64};
use super::ports::{pick_ports, random_u64};
use super::process::{terminate, Stopped};
use super::router::{fixture_key, RealRouter, ECHO_B32, ECHO_NAME, SITE_B32, SITE_NAME};
use super::sam_client::{stream_connect, wait_hello, Sam};
use super::sam_forward::{publish, Backend, Published};
use super::TempDir;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The version tests/deps.sh builds and these tests were measured with.
pub const VERSION: &str = "0.4.0";
/// Where tests/deps.sh installs it (`cargo install --root`); `EMISSARY_ROOT` names another.
pub const DEFAULT_ROOT: &str = "/opt/i2psocks-tests/emissary-0.4.0";
/// Tunnel length: with 0 hops emissary never answers SESSION CREATE here; 1 hop goes through
/// the other router.
pub const HOPS: u8 = 1;
/// SESSION CREATE options of the sessions the tests and this harness hold.
pub const PEER_OPTIONS: &str = "inbound.length=1 outbound.length=1 inbound.quantity=1 outbound.quantity=1";
/// Log directive of both routers: the transport manager's debug lines show the dial race.
const LOG: &str = "info,emissary::transport-manager=debug";
/// What the transport manager logs when crossed dials cost a connection.
const RACE_MARK: &str = "rejecting";

/// First start → both router.info files written.
const ROUTER_INFO_TIMEOUT: Duration = Duration::from_secs(20);
/// Start → B's NTCP2 port listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Start → A's SAM bridge answering HELLO.
const SAM_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// After A's start, before its log is read for crossed dials (they come at once).
const RACE_SETTLE: Duration = Duration::from_millis(200);
/// Each readiness step of an attempt: far more than a good start needs (SESSION CREATE
/// takes 4-15 ms, a lease-set lookup 1-3 ms), far less than a lost build costs (8 s).
const PROBE_WAIT: Duration = Duration::from_secs(4);
/// Each readiness step after crossed dials: a good start needs milliseconds, and a lost
/// build is likely, so the pair is restarted sooner.
const RACED_PROBE_WAIT: Duration = Duration::from_secs(1);
/// The last attempt waits this long for the routers to heal by themselves.
const LAST_PROBE_WAIT: Duration = Duration::from_secs(60);
/// Starts of the pair tried before giving up.
const START_ATTEMPTS: usize = 9;
/// Fresh ports tried when a router cannot start on the picked ones.
const PORT_ATTEMPTS: usize = 3;
/// Published services → answering through a client session.
const FAR_END_TIMEOUT: Duration = Duration::from_secs(30);
/// SIGTERM → exit wait before SIGKILL (emissary exits at once on SIGTERM).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Pause between polls.
const POLL: Duration = Duration::from_millis(50);
/// Log lines of each router shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// How long the phases of the last start took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Both routers' first run, to make their router.info (once per network).
    pub router_info: Duration,
    /// Start of the pair → the readiness probe passed, over every attempt.
    pub ready: Duration,
    /// Attempts that took (1 = no race).
    pub attempts: usize,
    /// Ready → the fixture services answer through a client session.
    pub services: Duration,
}

/// One emissary router: its directory (`--base-path`) and process.
struct Node {
    name: &'static str,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn log_path(&self) -> PathBuf {
        self.dir.join("router.log")
    }

    fn spawn(&mut self, bin: &Path) {
        assert!(self.child.is_none(), "router {} already running", self.name);
        let out =
            fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open router.log");
        let err = out.try_clone().expect("dup router.log");
        let child = Command::new(bin)
            .arg("--base-path")
            .arg(&self.dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {} ({e}); run tests/deps.sh as root to build it", bin.display())
            });
        self.child = Some(child);
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn stop(&mut self) -> Option<Stopped> {
        let mut child = self.child.take()?;
        Some(terminate(&mut child, STOP_GRACE, &format!("emissary router {}", self.name)))
    }

    /// Bytes of log so far (where an attempt's own lines start).
    fn log_len(&self) -> u64 {
        fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0)
    }

    fn log_from(&self, offset: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset));
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn log_tail(&self) -> String {
        let text = self.log_from(0);
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        format!(
            "---- router {} (last {} lines)\n{}\n",
            self.name,
            lines.len() - from,
            lines[from..].join("\n")
        )
    }
}

/// The pair's fixed ports: NTCP2 of each, and A's SAM bridge (its UDP port is one below).
#[derive(Clone, Copy, Debug)]
struct Ports {
    ntcp2_a: u16,
    sam: u16,
    ntcp2_b: u16,
}

/// The running pair with the fixture services published. See the module doc.
pub struct Network {
    // Dropped first: the published services' SAM sessions.
    far: Vec<Published>,
    a: Node,
    b: Node,
    ports: Ports,
    bin: PathBuf,
    /// The fixture keys (binary).
    site_key: Vec<u8>,
    echo_key: Vec<u8>,
    /// The HTTP server behind the site.
    pub http: HttpServer,
    /// The echo server behind the echo service.
    pub echo: EchoServer,
    pub timings: Timings,
    dir: TempDir,
}

impl Network {
    /// Starts both routers and publishes the fixture services (seconds; see the module doc).
    pub fn start() -> Network {
        let bin = binary();
        let site_key = fixture_key("site.dat", SITE_B32);
        let echo_key = fixture_key("echo.dat", ECHO_B32);
        for attempt in 1..=PORT_ATTEMPTS {
            let [ntcp2_a, sam, ntcp2_b] = pick_ports();
            let dir = TempDir::new("emissary");
            let node = |name: &'static str| Node { name, dir: dir.0.join(name), child: None };
            let mut net = Network {
                far: Vec::new(),
                a: node("a"),
                b: node("b"),
                ports: Ports { ntcp2_a, sam, ntcp2_b },
                bin: bin.clone(),
                site_key: site_key.clone(),
                echo_key: echo_key.clone(),
                http: HttpServer::start(),
                echo: EchoServer::start(),
                timings: Timings::default(),
                dir,
            };
            let t0 = Instant::now();
            let started = net.first_start().and_then(|()| {
                net.timings.router_info = t0.elapsed();
                net.bring_up()
            });
            match started {
                Ok(()) => {
                    net.publish_services();
                    eprintln!("emissary network ready: {:?}", net.timings);
                    return net;
                }
                Err(why) if attempt < PORT_ATTEMPTS => {
                    eprintln!(
                        "emissary network on {:?} failed ({why}); retrying on new ports\n{}{}",
                        net.ports,
                        net.a.log_tail(),
                        net.b.log_tail()
                    );
                }
                // `net` is dropped inside the panic, so its logs are printed.
                Err(why) => panic!("the emissary network did not start after {attempt} tries: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn sam(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.sam))
    }

    /// Configuration, address book, one run of each router for its router.info, and the
    /// exchange of those.
    fn first_start(&mut self) -> Result<(), String> {
        let Ports { ntcp2_a, sam, ntcp2_b } = self.ports;
        let a = router_toml(ntcp2_a, false) + &sam_sections(sam);
        write(&self.a.dir.join("router.toml"), a.as_bytes());
        write(&self.b.dir.join("router.toml"), router_toml(ntcp2_b, true).as_bytes());
        let book = self.a.dir.join("addressbook");
        let mut addresses = String::new();
        for (name, key, b32) in [(SITE_NAME, &self.site_key, SITE_B32), (ECHO_NAME, &self.echo_key, ECHO_B32)]
        {
            addresses.push_str(&format!("{name}={}\n", b32.trim_end_matches(".b32.i2p")));
            write(&book.join("destinations").join(format!("{name}.txt")), public_b64(key).as_bytes());
        }
        write(&book.join("addresses"), addresses.as_bytes());
        self.a.spawn(&self.bin);
        self.b.spawn(&self.bin);
        let deadline = Instant::now() + ROUTER_INFO_TIMEOUT;
        let info = |n: &Node| fs::metadata(n.dir.join("router.info")).is_ok_and(|m| m.len() > 0);
        while !(info(&self.a) && info(&self.b)) {
            if Instant::now() >= deadline || !self.a.alive() || !self.b.alive() {
                self.stop_routers();
                return Err(format!("no router.info from both routers within {ROUTER_INFO_TIMEOUT:?}"));
            }
            thread::sleep(POLL);
        }
        self.stop_routers();
        for (from, to, name) in [(&self.b, &self.a, "peer-b"), (&self.a, &self.b, "peer-a")] {
            let ri = fs::read(from.dir.join("router.info")).map_err(|e| format!("read router.info: {e}"))?;
            write(&to.dir.join("netDb/rA").join(format!("routerInfo-{name}.dat")), &ri);
        }
        Ok(())
    }

    /// Starts the pair until a start passes the readiness probe (see the module doc).
    fn bring_up(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        let sam = self.sam();
        for attempt in 1..=START_ATTEMPTS {
            let (la, lb) = (self.a.log_len(), self.b.log_len());
            self.b.spawn(&self.bin);
            let b = &mut self.b;
            let listening = wait_listening(self.ports.ntcp2_b, &mut || b.alive());
            if let Err(why) = listening {
                self.stop_routers();
                return Err(format!("router b: {why}"));
            }
            self.a.spawn(&self.bin);
            let a = &mut self.a;
            let up = wait_hello(sam, SAM_UP_TIMEOUT, &mut || a.alive());
            if let Err(why) = up {
                self.stop_routers();
                return Err(format!("router a: {why}"));
            }
            let last = attempt == START_ATTEMPTS;
            thread::sleep(RACE_SETTLE);
            let raced = self.a.log_from(la).contains(RACE_MARK) || self.b.log_from(lb).contains(RACE_MARK);
            let result = if last {
                probe_until(sam, Instant::now() + LAST_PROBE_WAIT)
            } else if raced {
                // Often harmless, if the builds went over the connection that stayed.
                probe(sam, RACED_PROBE_WAIT).map_err(|e| format!("crossed NTCP2 dials, then {e}"))
            } else {
                probe(sam, PROBE_WAIT)
            };
            match result {
                Ok(()) => {
                    self.timings.ready = t0.elapsed();
                    self.timings.attempts = attempt;
                    return Ok(());
                }
                Err(why) => {
                    eprintln!("emissary start attempt {attempt} failed ({why}); restarting both routers");
                    self.stop_routers();
                }
            }
        }
        Err(format!("not ready after {START_ATTEMPTS} starts of both routers"))
    }

    fn stop_routers(&mut self) {
        self.a.stop();
        self.b.stop();
    }

    /// The site and the echo service on A's bridge, answering through a client session.
    fn publish_services(&mut self) {
        let t0 = Instant::now();
        let (sam, opts) = (self.sam(), PEER_OPTIONS);
        self.far = vec![
            publish(sam, &b64_encode(&self.site_key), opts, Backend::Http(self.http.addr()))
                .expect("publish the site"),
            publish(sam, &b64_encode(&self.echo_key), opts, Backend::Raw(self.echo.addr()))
                .expect("publish the echo service"),
        ];
        let deadline = Instant::now() + FAR_END_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match services_answer(sam, &public_b64(&self.site_key)) {
                Ok(()) => {
                    self.timings.services = t0.elapsed();
                    return;
                }
                Err(e) => last = e,
            }
            thread::sleep(POLL);
        }
        panic!("the fixture services did not answer within {FAR_END_TIMEOUT:?}: {last}");
    }
}

impl RealRouter for Network {
    fn label(&self) -> &'static str {
        "emissary 0.4.0"
    }

    fn sam_addr(&self) -> SocketAddr {
        self.sam()
    }

    /// Configured one below the TCP port, where the proxy looks by default.
    fn sam_udp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports.sam - 1))
    }

    fn hops(&self) -> u8 {
        HOPS
    }

    fn peer_options(&self) -> String {
        PEER_OPTIONS.to_string()
    }

    /// emissary reads a client's datagram into 8,192 bytes, our ~550-byte header included,
    /// and cuts the rest off.
    fn max_datagram(&self) -> usize {
        7 << 10
    }

    /// A 64 KiB echo took 0.42-0.46 s; 1 MiB one way 45-63 s.
    fn quick_stream(&self) -> usize {
        32 << 10
    }

    /// About 1 in 50 here, and under load most of what a new session sends in its first
    /// moments (14 of 16 out, both echoes back, in one run).
    fn loses_datagrams(&self) -> bool {
        true
    }

    /// Never seen: its streams are slow, but they end.
    fn loses_stream_ends(&self) -> bool {
        false
    }

    fn refuses_a_new_sessions_connect(&self) -> bool {
        false
    }

    fn stop_all(&mut self) {
        self.far.clear();
        let (a, b) = (self.a.stop(), self.b.stop());
        eprintln!("emissary routers stopped: a {a:?}, b {b:?}");
    }

    fn start_all_again(&mut self) {
        if let Err(why) = self.bring_up() {
            panic!("the emissary network did not come back on its ports (sam {}): {why}", self.ports.sam);
        }
        self.publish_services();
        eprintln!("emissary network ready again: {:?}", self.timings);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.far.clear();
        self.stop_routers();
        if thread::panicking() {
            eprintln!(
                "emissary directory {}:\n{}{}",
                self.dir.0.display(),
                self.a.log_tail(),
                self.b.log_tail()
            );
        }
    }
}

/// The emissary binary under `EMISSARY_ROOT`, else [`DEFAULT_ROOT`]; panics with a hint if
/// it is missing.
fn binary() -> PathBuf {
    let root = std::env::var_os("EMISSARY_ROOT").map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from);
    let bin = root.join("bin/emissary-cli");
    assert!(
        bin.is_file(),
        "{} is missing: tests/deps.sh builds emissary-cli {VERSION} there (as root, from crates.io)",
        bin.display()
    );
    bin
}

/// `router.toml` of either router: local addresses allowed, NTCP2 on 127.0.0.1 and published
/// (no lease sets otherwise), 1-hop exploratory tunnels, transit on (off without the
/// section). Every section left out is a feature off: no reseed, SSU2, I2CP, proxies, port
/// mapping or metrics.
fn router_toml(ntcp2: u16, floodfill: bool) -> String {
    format!(
        "allow_local = true
insecure_tunnels = true
floodfill = {floodfill}
log = \"{LOG}\"

[ntcp2]
port = {ntcp2}
host = \"127.0.0.1\"
ipv4 = true
ipv6 = false
publish = true

[exploratory]
inbound_len = 1
inbound_count = 2
outbound_len = 1
outbound_count = 2

[transit]
max_tunnels = 5000
"
    )
}

/// Router A's SAM bridge (UDP one below TCP) and its address book, which without a `default`
/// URL downloads nothing: names come from `addressbook/addresses`, read at start.
fn sam_sections(sam: u16) -> String {
    format!(
        "
[sam]
tcp_port = {sam}
udp_port = {}
host = \"127.0.0.1\"

[address-book]
",
        sam - 1
    )
}

fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A session ID nobody else uses (emissary keeps a closed session's ID for a while).
fn session_id(what: &str) -> String {
    format!("{what}{:016x}", random_u64())
}

/// Waits until something listens on TCP `port` (from /proc/net/tcp, without connecting to
/// it), while `alive()`.
fn wait_listening(port: u16, alive: &mut dyn FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let local = format!(":{port:04X}");
    while Instant::now() < deadline {
        if !alive() {
            return Err("exited".into());
        }
        let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let listening = table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        });
        if listening {
            return Ok(());
        }
        thread::sleep(POLL);
    }
    Err(format!("NTCP2 port {port} not listening within {LISTEN_TIMEOUT:?}"))
}

/// One readiness check, each step within `wait`: a STREAM session is made, and a second one
/// finds the first one's lease set through the floodfill.
fn probe(sam: SocketAddr, wait: Duration) -> Result<(), String> {
    let mut one = Sam::connect(sam).map_err(|e| e.to_string())?;
    let key = one
        .session_create_within("STREAM", &session_id("probe"), "TRANSIENT", PEER_OPTIONS, wait)
        .map_err(|e| format!("SESSION CREATE: {e}"))?;
    let b32 = b64_decode(&key).and_then(|k| b32_of_blob(&k)).ok_or("SESSION STATUS without a key")?;
    let mut two = Sam::connect(sam).map_err(|e| e.to_string())?;
    two.session_create_within("STREAM", &session_id("probe"), "TRANSIENT", PEER_OPTIONS, wait)
        .map_err(|e| format!("second SESSION CREATE: {e}"))?;
    two.naming_lookup_within(&b32, wait).map_err(|e| format!("lease-set lookup: {e}"))?;
    Ok(())
}

/// [`probe`] again and again until it passes or `deadline`.
fn probe_until(sam: SocketAddr, deadline: Instant) -> Result<(), String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match probe(sam, left.min(PROBE_WAIT)) {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Through a fresh client session: both names resolve (the site's to `site_dest`), the echo
/// service echoes, and the site serves its page.
fn services_answer(sam: SocketAddr, site_dest: &str) -> Result<(), String> {
    let id = session_id("svc");
    let mut ctl = Sam::connect(sam).map_err(|e| e.to_string())?;
    ctl.session_create_within("STREAM", &id, "TRANSIENT", PEER_OPTIONS, PROBE_WAIT)
        .map_err(|e| e.to_string())?;
    let named = ctl.naming_lookup_within(SITE_NAME, PROBE_WAIT).map_err(|e| format!("{SITE_NAME}: {e}"))?;
    if named != site_dest {
        return Err(format!("{SITE_NAME} is another destination in the address book"));
    }
    ctl.naming_lookup_within(ECHO_NAME, PROBE_WAIT).map_err(|e| format!("{ECHO_NAME}: {e}"))?;
    let mut echo = stream_connect(sam, &id, ECHO_B32).map_err(|e| format!("echo: {e}"))?;
    let msg = b"i2psocks emissary probe\n";
    echo.write_all(msg).map_err(|e| e.to_string())?;
    let mut back = [0u8; 24];
    echo.read_exact(&mut back).map_err(|e| format!("echo: {e}"))?;
    if &back != msg {
        return Err("the echo service returned other bytes".into());
    }
    let mut site = stream_connect(sam, &id, SITE_B32).map_err(|e| format!("site: {e}"))?;
    site.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut page = Vec::new();
    site.read_to_end(&mut page).map_err(|e| format!("site: {e}"))?;
    if !String::from_utf8_lossy(&page).contains(MARKER) {
        return Err("the site's page lacks its marker".into());
    }
    Ok(())
}
