//! `make bench`: what i2psocks costs on top of the path, side by side
//! with the peers a user would pick instead, all measured in one run.
//!
//! It is its own load client, not a timed test. Every metric is measured over
//! [`RUNS`] runs (rows interleaved within a run, so background load hits them
//! alike) and printed as one markdown table with the median, min–max and
//! ratios against the baselines of the same run. Loopback rows:
//! `direct` (client straight to the sink/echo server: the loopback limit),
//! `microsocks` (Debian's thread-per-connection C proxy, CONNECT by IP) and
//! `i2psocks` (the release binary, its default flags) and the variants of
//! [`I2PSOCKS_ROWS`] against a fake SAM bridge in this process
//! whose stream sockets are themselves the sink/echo, so both proxies have the
//! same hop shape: client → proxy → sink. Real-router rows (Debian's i2pd,
//! offline on loopback, tests/common/i2pd.rs): `i2pd-socks` (i2pd's own SOCKS
//! port) against `i2psocks` on i2pd's SAM, fetching from the same local site,
//! connection cycles to its echo service, and CONNECT by address-book name;
//! `bare-sam` (a minimal SAM client in this process, [`BareSam`]: HELLO,
//! STREAM CONNECT, payload) is the limit of any proxy that speaks SAM, and
//! the cycle tables give every row as a ratio of it. The real-router rows run
//! on Debian's i2pd and then on the newest (tests/deps.sh unpacks it).
//!
//! Not here: installing tools (bench/run.sh does that) and any assertion on
//! the targets; rows whose tool is missing are skipped with a note. The fake
//! bridge speaks only HELLO, SESSION CREATE and STREAM CONNECT. The proxy runner,
//! the /proc readers, the SOCKS5 client and the test keys are tests/common's.
//! Environment knobs, all optional: `BENCH_RUNS`, `BENCH_BULK_MIB`,
//! `BENCH_CYCLE_SECS`, `BENCH_HELD`, `BENCH_ONLY` (comma list of
//! `bulk,cycles,held,i2pd`), `BENCH_ROWS` (comma list of row names),
//! `BENCH_AFTER_SECS` (how long after the held connections close their
//! proxy's RSS is read again), `I2PSOCKS_BIN` (binary to measure),
//! `BENCH_COMPARE` (a second i2psocks binary, measured as the extra row
//! `i2psocks-b`, loopback and real router: before/after a change in one run),
//! `BENCH_I2PSOCKS_ARGS` (more flags for every i2psocks started here),
//! `BENCH_WRAP` (command prefix for the i2psocks process, e.g. `env
//! MALLOC_ARENA_MAX=4 valgrind --tool=callgrind`: with that variable set,
//! i2psocks does not start itself again, which valgrind would not follow,
//! src/memory.rs), `BENCH_PROFILE_PAUSE` (seconds to wait, printing the
//! proxy pid, before each measured i2psocks section, so `perf record -p` can
//! attach).

// A benchmark harness, not the proxy: it talks only to the processes it
// started, and a setup failure should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::i2p::{b32_name, make_key, param};
use common::i2pd::Build;
use common::process::{cpu_time, rss_kib, terminate, threads};
use common::proxy::{bridge_args, socks5_handshake, Dest, Proxy, READY};
use common::rng::pattern;
use common::router::RealRouter;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Name of the `BENCH_COMPARE` row.
const COMPARE_ROW: &str = "i2psocks-b";
/// Runs per metric: enough for a median and a range that say something.
const RUNS: usize = 5;
/// Bytes per bulk run, MiB: enough that connection setup is lost in the transfer time.
const BULK_MIB: u64 = 1024;
/// Length of one connection-cycle run.
const CYCLE_SECS: f64 = 2.0;
/// Concurrent clients in the parallel cycle runs.
const CONCURRENT: usize = 8;
/// Connections held open at once in the hold runs.
const HELD: usize = 1000;
/// How long after the held connections close the proxy's RSS is read again:
/// what the proxy keeps once its clients are gone (idle workers leave after
/// 30 s, src/pool.rs).
const AFTER_CLOSE_SECS: f64 = 60.0;
/// The i2psocks rows of the loopback and real-router sections: a name and
/// the flags it adds to the defaults. The first is i2psocks as users run
/// it; each further one shows, in the same run, what a flag changes. The
/// cycle client closes first while its echo waits for that EOF: with the
/// defaults the proxy holds each FIN (`--half-close-wait`, 5 s), the far
/// end stays open meanwhile, and a client finding every place taken has
/// the oldest hold passed on; `--half-close-wait 0` passes it at once, as
/// microsocks and i2pd's SOCKS port do. A row for another variant is one
/// more entry here.
const I2PSOCKS_ROWS: [(&str, &[&str]); 2] = [("i2psocks", &[]), (HCW0_ROW, &["--half-close-wait", "0"])];
/// The row the defaults' cycle rates are compared with.
const HCW0_ROW: &str = "i2psocks-hcw0";
/// Sizes fetched from the local I2P site.
const FETCH_SMALL: usize = 1 << 20;
const FETCH_LARGE: usize = 64 << 20;
/// Length of one cycle run through the real router (its cycles are slow).
const ROUTER_CYCLE_SECS: f64 = 3.0;
/// Bound on every blocking socket call of the load client and servers.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Read/write granularity of the bulk client, sink and source.
const CHUNK: usize = 256 << 10;
/// Echo buffer (1000 of them live at once in the hold runs).
const ECHO_BUF: usize = 16 << 10;
/// Stack of a server thread here: buffers are on the heap.
const SERVER_STACK: usize = 128 << 10;
/// A server thread without work for this long exits.
const SERVER_IDLE: Duration = Duration::from_secs(10);
/// Longest SAM command line the fake bridge reads.
const MAX_SAM_LINE: usize = 8 << 10;
/// Wait for a proxy's `listening on` / readiness.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Wait for i2psocks' SAM session on the real router (i2pd 2.45 takes 20 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGTERM → exit wait before SIGKILL for the proxies started here.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// A fetch that gets no byte for this long failed (i2pd 2.59 sometimes keeps a stream's
/// last bytes, doc/i2pd-stream-end.md); a fetch here moves ~10 MiB/s.
const FETCH_STALL: Duration = Duration::from_secs(10);
/// Warm-up fetches tried before the router section gives up.
const FETCH_TRIES: usize = 3;
/// Largest HTTP response head read by the fetch client.
const MAX_HTTP_HEAD: usize = 16 << 10;
/// The proxy a hold run measures gets this long to settle before RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let cfg = Config::from_env();
    let started = Instant::now();
    let env = Env::probe();
    env.print_header(&cfg);

    let target = Target::start();
    let sam = FakeSam::start(&target);
    let mut tables = Vec::new();

    if cfg.loopback_wanted() {
        let rows = loopback_rows(&cfg, &env, &target, &sam);
        let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
        note(&format!("loopback rows: {}", names.join(", ")));
        if cfg.section("bulk") {
            tables.extend(bench_bulk(&cfg, &rows));
        }
        if cfg.section("cycles") {
            tables.extend(bench_cycles(&cfg, &rows));
        }
        drop(rows);
        if cfg.section("held") {
            tables.push(bench_held(&cfg, &env, &target, &sam));
        }
    }
    if cfg.section("i2pd") {
        match bench_router(&cfg, &env) {
            Ok(t) => tables.extend(t),
            Err(why) => tables.push(Table::note("Real router (offline i2pd)", &why)),
        }
    }

    println!();
    for t in &tables {
        t.print();
    }
    println!("Load average at the end: {} (bench took {:.0} s).", loadavg(), started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// Configuration and environment

struct Config {
    runs: usize,
    bulk_bytes: u64,
    cycle: Duration,
    held: usize,
    after_close: Duration,
    only: Option<Vec<String>>,
    rows: Option<Vec<String>>,
    bin: String,
    compare: Option<String>,
    args: Vec<String>,
    wrap: Vec<String>,
    pause: Duration,
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn words(name: &str) -> Vec<String> {
    std::env::var(name).map(|w| w.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
}

impl Config {
    fn from_env() -> Config {
        let bin =
            std::env::var("I2PSOCKS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_i2psocks").to_string());
        Config {
            runs: env_parse("BENCH_RUNS", RUNS).max(1),
            bulk_bytes: env_parse("BENCH_BULK_MIB", BULK_MIB).max(1) << 20,
            cycle: Duration::from_secs_f64(env_parse("BENCH_CYCLE_SECS", CYCLE_SECS)),
            held: env_parse("BENCH_HELD", HELD).max(1),
            after_close: Duration::from_secs_f64(env_parse("BENCH_AFTER_SECS", AFTER_CLOSE_SECS)),
            only: env_list("BENCH_ONLY"),
            rows: env_list("BENCH_ROWS"),
            bin,
            compare: std::env::var("BENCH_COMPARE").ok().filter(|s| !s.is_empty()),
            args: words("BENCH_I2PSOCKS_ARGS"),
            wrap: words("BENCH_WRAP"),
            pause: Duration::from_secs_f64(env_parse("BENCH_PROFILE_PAUSE", 0.0)),
        }
    }

    fn section(&self, name: &str) -> bool {
        self.only.as_ref().map_or(true, |o| o.iter().any(|s| s == name))
    }

    fn loopback_wanted(&self) -> bool {
        self.section("bulk") || self.section("cycles") || self.section("held")
    }

    fn row(&self, name: &str) -> bool {
        self.rows.as_ref().map_or(true, |o| o.iter().any(|s| s == name))
    }
}

/// Facts about the machine and the tools, for the header and the skips.
struct Env {
    microsocks: Option<String>,
    i2pd: Option<String>,
}

impl Env {
    fn probe() -> Env {
        let microsocks = pkg_version("microsocks").filter(|_| which("microsocks"));
        let i2pd = which("i2pd").then(|| pkg_version("i2pd").unwrap_or_else(|| "unknown version".into()));
        Env { microsocks, i2pd }
    }

    fn print_header(&self, cfg: &Config) {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
            .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let kernel = run_text("uname", &["-sr"]).unwrap_or_default();
        let date = run_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
        let version = run_text(&cfg.bin, &["-V"]).unwrap_or_else(|| "i2psocks ?".into());
        println!("## i2psocks benchmark");
        println!();
        println!("- date: {}; machine: {cpu}, {cores} cores; {}", date.trim(), kernel.trim());
        println!("- measured: {} ({})", version.trim(), cfg.bin);
        if let Some(b) = &cfg.compare {
            println!("- row {COMPARE_ROW}: {b}");
        }
        for (name, flags) in I2PSOCKS_ROWS {
            let flags = i2psocks_args(cfg, flags);
            let flags = if flags.is_empty() { "(defaults)".to_string() } else { flags.join(" ") };
            println!("- row {name}: i2psocks flags beyond the bridge's: {flags}");
        }
        println!(
            "- peers: microsocks {}; i2pd {}",
            self.microsocks.as_deref().unwrap_or("(not installed: row skipped)"),
            self.i2pd.as_deref().unwrap_or("(not installed: router section skipped)")
        );
        println!(
            "- {} runs per metric, rows interleaved in each run; bulk {} MiB per run; cycle runs {:.1} s; \
             {} held connections, RSS again {:.0} s after they close",
            cfg.runs,
            cfg.bulk_bytes >> 20,
            cfg.cycle.as_secs_f64(),
            cfg.held,
            cfg.after_close.as_secs_f64()
        );
        println!("- load average at the start: {} (other work on the machine shows up here)", loadavg());
    }
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"].iter().any(|d| std::path::Path::new(d).join(cmd).is_file())
}

fn pkg_version(pkg: &str) -> Option<String> {
    run_text("dpkg-query", &["-W", "-f=${Version}", pkg]).filter(|s| !s.trim().is_empty())
}

fn run_text(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn note(s: &str) {
    eprintln!("bench: {s}");
}

// ---------------------------------------------------------------------------
// Servers: the sink/source/echo target and the fake SAM bridge
//
// Not tests/common/fake_sam.rs, for timing: the servers here are on the measured path and
// must add no work of their own. The test fake spawns a thread per connection, logs every
// byte it receives under a lock, hashes what its sinks get, polls its reads every 50 ms
// and clones its script per command; this bridge reuses its threads, keeps no records and
// sends from one prepared buffer, and its stream sockets are the same far ends that the
// `direct` and microsocks rows reach, so every row has the same hop shape.

/// What the far end of a connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Read the bulk size in bytes (or to EOF), then answer the byte count
    /// (8 bytes LE) and close. Not EOF-triggered: microsocks does not pass on
    /// a half-close (it closes both sides on the first EOF).
    Sink,
    /// Send the bulk size in bytes, then close.
    Source,
    /// Copy back until EOF.
    Echo,
}

const MODES: [Mode; 3] = [Mode::Sink, Mode::Source, Mode::Echo];

impl Mode {
    fn index(self) -> usize {
        match self {
            Mode::Sink => 0,
            Mode::Source => 1,
            Mode::Echo => 2,
        }
    }

    /// The (well-formed, fake) I2P name the fake bridge maps to this mode.
    fn b32(self) -> String {
        b32_name(&format!("i2psocks bench {self:?}"))
    }
}

/// How many bytes a Source sends and a Sink expects; set once the config is known.
static BULK_BYTES: AtomicU64 = AtomicU64::new(0);

/// One chunk of bytes, made once, that uploads and Sources send over and over.
fn payload() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| pattern(CHUNK))
}

type Job = Box<dyn FnOnce() + Send>;

/// Server threads that are reused: a thread spawn per loopback cycle would
/// cost as much as the cycle itself, in every row alike.
#[derive(Clone)]
struct Workers {
    tx: Sender<Job>,
    rx: Receiver<Job>,
}

impl Workers {
    fn new() -> Workers {
        let (tx, rx) = bounded(0);
        Workers { tx, rx }
    }

    fn run(&self, job: Job) {
        let job = match self.tx.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => j,
        };
        let rx = self.rx.clone();
        thread::Builder::new()
            .name("bench-server".into())
            .stack_size(SERVER_STACK)
            .spawn(move || {
                job();
                while let Ok(j) = rx.recv_timeout(SERVER_IDLE) {
                    j();
                }
            })
            .expect("spawn a server thread");
    }
}

/// Accept forever on 127.0.0.1:0, handing each connection to `handler`.
fn serve(name: &str, workers: &Workers, handler: Arc<dyn Fn(TcpStream) + Send + Sync>) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a bench server");
    let addr = listener.local_addr().expect("server address");
    let workers = workers.clone();
    thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else {
                    // EMFILE and the like: don't spin.
                    thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let h = Arc::clone(&handler);
                workers.run(Box::new(move || h(conn)));
            }
        })
        .expect("spawn accept thread");
    addr
}

fn prepare(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
}

/// Be the far end in `mode`; `first` was read ahead by whoever handed us `s`.
fn far_end(mode: Mode, mut s: TcpStream, first: &[u8]) -> io::Result<()> {
    match mode {
        Mode::Sink => {
            let mut count = first.len() as u64;
            let mut buf = vec![0u8; CHUNK];
            let want = BULK_BYTES.load(Ordering::Relaxed);
            while count < want {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => count += n as u64,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            s.write_all(&count.to_le_bytes())
        }
        Mode::Source => {
            let mut left = BULK_BYTES.load(Ordering::Relaxed);
            let p = payload();
            while left > 0 {
                let n = (left as usize).min(p.len());
                s.write_all(&p[..n])?;
                left -= n as u64;
            }
            Ok(())
        }
        Mode::Echo => {
            if !first.is_empty() {
                s.write_all(first)?;
            }
            let mut buf = vec![0u8; ECHO_BUF];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return s.shutdown(Shutdown::Write),
                    Ok(n) => s.write_all(&buf[..n])?,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// The sink/source/echo servers, one port each (for `direct` and microsocks).
struct Target {
    addrs: [SocketAddr; 3],
    workers: Workers,
}

impl Target {
    fn start() -> Target {
        let workers = Workers::new();
        let addrs = MODES.map(|m| {
            serve(
                &format!("{m:?}"),
                &workers,
                Arc::new(move |s: TcpStream| {
                    prepare(&s);
                    let _ = far_end(m, s, &[]);
                }),
            )
        });
        Target { addrs, workers }
    }

    fn addr(&self, m: Mode) -> SocketAddr {
        self.addrs[m.index()]
    }
}

/// A minimal SAM v3 bridge: HELLO, SESSION CREATE (a fixed fake key), and
/// STREAM CONNECT to one of the [`Mode::b32`] names, after which the same
/// socket is that mode's far end.
struct FakeSam {
    addr: SocketAddr,
}

impl FakeSam {
    fn start(target: &Target) -> FakeSam {
        let (key, _) = make_key(5);
        let names: Arc<Vec<(String, Mode)>> = Arc::new(MODES.iter().map(|m| (m.b32(), *m)).collect());
        let addr = serve(
            "fake-sam",
            &target.workers,
            Arc::new(move |s: TcpStream| {
                prepare(&s);
                let _ = sam_conn(s, &key, &names);
            }),
        );
        FakeSam { addr }
    }
}

fn sam_conn(mut s: TcpStream, key: &str, names: &[(String, Mode)]) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let Some(pos) = pending.iter().position(|&b| b == b'\n') else {
            if pending.len() > MAX_SAM_LINE {
                return Ok(());
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&chunk[..n]);
            continue;
        };
        let line = String::from_utf8_lossy(&pending[..pos]).trim_end().to_string();
        pending.drain(..=pos);
        if line.starts_with("HELLO VERSION") {
            s.write_all(b"HELLO REPLY RESULT=OK VERSION=3.1\n")?;
        } else if line.starts_with("SESSION CREATE") {
            s.write_all(format!("SESSION STATUS RESULT=OK DESTINATION={key}\n").as_bytes())?;
            // Hold the control socket until the proxy closes it.
            let _ = s.set_read_timeout(None);
            while s.read(&mut chunk)? > 0 {}
            return Ok(());
        } else if line.starts_with("STREAM CONNECT") {
            let dest = param(&line, "DESTINATION").unwrap_or_default();
            let Some((_, mode)) = names.iter().find(|(n, _)| n == dest) else {
                return s.write_all(b"STREAM STATUS RESULT=CANT_REACH_PEER\n");
            };
            s.write_all(b"STREAM STATUS RESULT=OK\n")?;
            return far_end(*mode, s, &pending);
        } else {
            return s.write_all(b"SESSION STATUS RESULT=I2P_ERROR MESSAGE=\"not in the bench bridge\"\n");
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes (the proxies under test)

/// A proxy under test. Both kinds get SIGTERM first when dropped, so that a profiler
/// around i2psocks (`BENCH_WRAP`) can write its output.
enum Daemon {
    /// Ours, its stderr kept and echoed (tests/common/proxy.rs).
    I2psocks(Proxy),
    /// Its per-connection log lines go to /dev/null: cheap, as most users configure it.
    Microsocks(Child),
}

impl Daemon {
    fn pid(&self) -> u32 {
        match self {
            Daemon::I2psocks(p) => p.pid(),
            Daemon::Microsocks(c) => c.id(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        match self {
            Daemon::I2psocks(p) => {
                p.stop(STOP_GRACE);
            }
            Daemon::Microsocks(c) => {
                terminate(c, STOP_GRACE, "microsocks");
            }
        }
    }
}

/// A free loopback port (racy by nature; the caller retries on failure).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("free port").port()
}

/// A row's `flags` and then `BENCH_I2PSOCKS_ARGS`.
fn i2psocks_args<'a>(cfg: &'a Config, flags: &[&'a str]) -> Vec<&'a str> {
    flags.iter().copied().chain(cfg.args.iter().map(String::as_str)).collect()
}

/// Start i2psocks with `flags` on `sam`; returns it and its listening
/// address once its SAM session is ready.
fn start_i2psocks(
    cfg: &Config,
    bin: &str,
    flags: &[&str],
    sam: SocketAddr,
    ready_within: Duration,
) -> (Daemon, SocketAddr) {
    let sam = sam.to_string();
    let wrap: Vec<&str> = cfg.wrap.iter().map(String::as_str).collect();
    let p = Proxy::start_binary(bin, &wrap, &bridge_args(&sam, &i2psocks_args(cfg, flags)), START_TIMEOUT);
    p.wait_for_line(READY, ready_within)
        .unwrap_or_else(|| panic!("i2psocks' SAM session was not ready in {ready_within:?}"));
    let addr = p.addr();
    (Daemon::I2psocks(p), addr)
}

fn start_microsocks() -> (Daemon, SocketAddr) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start microsocks: {e}"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let t0 = Instant::now();
        while t0.elapsed() < START_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if TcpStream::connect(addr).is_ok() {
                return (Daemon::Microsocks(child), addr);
            }
            thread::sleep(Duration::from_millis(20));
        }
        terminate(&mut child, STOP_GRACE, "microsocks");
    }
    panic!("microsocks did not start");
}

// ---------------------------------------------------------------------------
// The load client

/// Where a row's client connects.
#[derive(Clone)]
enum Via {
    Direct,
    Socks(SocketAddr),
    /// Straight to the router's SAM bridge, on a session held by the bench
    /// ([`BareSam`]): `dest` is then an I2P base64 destination.
    Sam(Arc<BareSam>),
}

/// One row: a way from the client to the three far ends.
struct Row {
    name: &'static str,
    via: Via,
    dests: [Dest; 3],
    /// The proxy process, for CPU accounting; None for `direct`.
    daemon: Option<Daemon>,
}

impl Row {
    fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    fn open(&self, m: Mode) -> io::Result<TcpStream> {
        open(&self.via, &self.dests[m.index()])
    }
}

/// Connect (through SOCKS5, no auth, CONNECT) to `dest`.
fn open(via: &Via, dest: &Dest) -> io::Result<TcpStream> {
    match via {
        Via::Direct => {
            let Dest::Ip(a) = dest else { return Err(io::Error::other("direct needs an address")) };
            let s = TcpStream::connect(a)?;
            prepare(&s);
            Ok(s)
        }
        Via::Socks(proxy) => {
            let mut s = TcpStream::connect(proxy)?;
            prepare(&s);
            socks5_handshake(&mut s, dest)?;
            Ok(s)
        }
        Via::Sam(bare) => {
            let Dest::Name(b64, _) = dest else { return Err(io::Error::other("SAM needs a destination")) };
            bare.connect(b64)
        }
    }
}

fn upload(row: &Row, bytes: u64) -> io::Result<Duration> {
    let mut s = row.open(Mode::Sink)?;
    let t0 = Instant::now();
    let p = payload();
    let mut left = bytes;
    while left > 0 {
        let n = (left as usize).min(p.len());
        s.write_all(&p[..n])?;
        left -= n as u64;
    }
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let took = t0.elapsed();
    let got = u64::from_le_bytes(count);
    if got != bytes {
        return Err(io::Error::other(format!("sink counted {got} of {bytes} bytes")));
    }
    Ok(took)
}

fn download(row: &Row, bytes: u64) -> io::Result<Duration> {
    let mut s = row.open(Mode::Source)?;
    let t0 = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let took = t0.elapsed();
    if got != bytes {
        return Err(io::Error::other(format!("received {got} of {bytes} bytes")));
    }
    Ok(took)
}

/// connect → (SOCKS5 handshake → CONNECT) → 1-byte echo → close.
fn cycle(via: &Via, dest: &Dest) -> io::Result<Duration> {
    let t0 = Instant::now();
    let mut s = open(via, dest)?;
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if &b != b"x" {
        return Err(io::Error::other("echo returned another byte"));
    }
    drop(s);
    Ok(t0.elapsed())
}

/// One cycle run.
struct CycleRun {
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
    /// CPU seconds per 1,000 cycles of each process asked for (None: no
    /// such process in this row, or no cycle).
    cpu_per_k: Vec<Option<f64>>,
}

/// `clients` threads doing cycles back to back for `length`; the CPU time
/// of each process in `pids` is read around the run.
fn cycle_run(via: &Via, dest: &Dest, clients: usize, length: Duration, pids: &[Option<u32>]) -> CycleRun {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (via, dest, barrier, stop) =
                (via.clone(), dest.clone(), Arc::clone(&barrier), Arc::clone(&stop));
            thread::spawn(move || {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    match cycle(&via, &dest) {
                        Ok(d) => lat.push(d),
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                note(&format!("cycle failed: {e}"));
                            }
                            // A refusing proxy must not turn into a spin.
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let cpu0: Vec<Option<Duration>> = pids.iter().map(|p| p.map(cpu_time)).collect();
    barrier.wait();
    let t0 = Instant::now();
    thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("cycle client");
        lat.extend(l);
        errors += e;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let n = lat.len();
    let cpu_per_k = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| {
            let used = cpu_time((*p)?).saturating_sub((*c0)?).as_secs_f64();
            (n > 0).then(|| used * 1000.0 / n as f64)
        })
        .collect();
    CycleRun {
        rate: n as f64 / elapsed,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        errors,
        cpu_per_k,
    }
}

// ---------------------------------------------------------------------------
// Loopback sections

fn loopback_rows(cfg: &Config, env: &Env, target: &Target, sam: &FakeSam) -> Vec<Row> {
    BULK_BYTES.store(cfg.bulk_bytes, Ordering::Relaxed);
    let by_ip = MODES.map(|m| Dest::Ip(target.addr(m)));
    let mut rows = Vec::new();
    if cfg.row("direct") {
        rows.push(Row { name: "direct", via: Via::Direct, dests: by_ip.clone(), daemon: None });
    }
    if cfg.row("microsocks") {
        if env.microsocks.is_some() {
            let (d, addr) = start_microsocks();
            rows.push(Row {
                name: "microsocks",
                via: Via::Socks(addr),
                dests: by_ip.clone(),
                daemon: Some(d),
            });
        } else {
            note("microsocks is not installed: its rows are skipped (bench/run.sh installs it as root)");
        }
    }
    for (name, flags) in I2PSOCKS_ROWS.into_iter().filter(|(name, _)| cfg.row(name)) {
        let (d, addr) = start_i2psocks(cfg, &cfg.bin, flags, sam.addr, START_TIMEOUT);
        let dests = MODES.map(|m| Dest::Name(m.b32(), 80));
        rows.push(Row { name, via: Via::Socks(addr), dests, daemon: Some(d) });
    }
    if let Some(bin) = &cfg.compare {
        let (d, addr) = start_i2psocks(cfg, bin, &[], sam.addr, START_TIMEOUT);
        let dests = MODES.map(|m| Dest::Name(m.b32(), 80));
        rows.push(Row { name: COMPARE_ROW, via: Via::Socks(addr), dests, daemon: Some(d) });
    }
    // One warm-up cycle per row: first-connection costs are not the metric.
    for r in &rows {
        cycle(&r.via, &r.dests[Mode::Echo.index()])
            .unwrap_or_else(|e| panic!("{}: warm-up failed: {e}", r.name));
    }
    rows
}

fn profile_pause(cfg: &Config, rows: &[Row], what: &str) {
    if cfg.pause.is_zero() {
        return;
    }
    for r in rows.iter().filter(|r| r.name.starts_with("i2psocks")) {
        note(&format!("{what}: i2psocks pid {:?}; waiting {:?} for a profiler", r.pid(), cfg.pause));
    }
    thread::sleep(cfg.pause);
}

fn bench_bulk(cfg: &Config, rows: &[Row]) -> Vec<Table> {
    let mib = cfg.bulk_bytes as f64 / MIB;
    let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    let mut tables = Vec::new();
    for (title, f) in [
        ("Bulk upload, one connection (client → sink)", upload as fn(&Row, u64) -> io::Result<Duration>),
        ("Bulk download, one connection (source → client)", download),
    ] {
        profile_pause(cfg, rows, title);
        let mut rate: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
        for run in 0..cfg.runs {
            for (i, r) in rows.iter().enumerate() {
                let c0 = r.pid().map(cpu_time);
                let took = f(r, cfg.bulk_bytes).unwrap_or_else(|e| panic!("{title}, {}: {e}", r.name));
                if let (Some(p), Some(c0)) = (r.pid(), c0) {
                    cpu[i].push(cpu_time(p).saturating_sub(c0).as_secs_f64() / (mib / 1024.0));
                }
                rate[i].push(mib / took.as_secs_f64());
                note(&format!("{title} run {}: {} {:.0} MiB/s", run + 1, r.name, rate[i].last().unwrap()));
            }
        }
        let mut t = Table::new(
            &format!("{title}: MiB/s ({:.0} MiB per run, {} runs)", mib, cfg.runs),
            &["row", "median MiB/s", "min–max", "vs direct", "vs microsocks", "proxy CPU s/GiB"],
        );
        for (i, r) in rows.iter().enumerate() {
            t.row(vec![
                r.name.to_string(),
                format!("{:.0}", median(&rate[i])),
                range(&rate[i], 0),
                ratio(&names, &rate, i, "direct"),
                ratio(&names, &rate, i, "microsocks"),
                if cpu[i].is_empty() { "—".into() } else { format!("{:.2}", median(&cpu[i])) },
            ]);
        }
        tables.push(t);
    }
    tables
}

fn bench_cycles(cfg: &Config, rows: &[Row]) -> Vec<Table> {
    let mut tables = Vec::new();
    for clients in [1, CONCURRENT] {
        let what =
            if clients == 1 { "sequential".to_string() } else { format!("{clients} concurrent clients") };
        profile_pause(cfg, rows, &what);
        let mut runs: Vec<Vec<CycleRun>> = rows.iter().map(|_| Vec::new()).collect();
        for run in 0..cfg.runs {
            for (i, r) in rows.iter().enumerate() {
                let c = cycle_run(&r.via, &r.dests[Mode::Echo.index()], clients, cfg.cycle, &[r.pid()]);
                note(&format!(
                    "cycles {what} run {}: {} {:.0}/s p50 {:.0} µs p99 {:.0} µs{}",
                    run + 1,
                    r.name,
                    c.rate,
                    us(c.p50),
                    us(c.p99),
                    if c.errors > 0 { format!(" ({} errors)", c.errors) } else { String::new() }
                ));
                runs[i].push(c);
            }
        }
        tables.push(cycle_table(
            &format!(
                "Connection cycles, {what}: connect → SOCKS5 → CONNECT → 1-byte echo → close \
                 ({} runs of {:.1} s)",
                cfg.runs,
                cfg.cycle.as_secs_f64()
            ),
            rows.iter().map(|r| r.name).collect(),
            &runs,
            &["direct", "microsocks", HCW0_ROW],
            &["proxy"],
        ));
    }
    tables
}

/// `cpu` names the processes whose CPU time the runs measured, in the order
/// of [`CycleRun::cpu_per_k`].
fn cycle_table(title: &str, names: Vec<&str>, runs: &[Vec<CycleRun>], bases: &[&str], cpu: &[&str]) -> Table {
    let mut header = vec!["row", "median cycles/s", "min–max"];
    let base_cols: Vec<String> = bases.iter().map(|b| format!("vs {b}")).collect();
    header.extend(base_cols.iter().map(String::as_str));
    header.extend(["p50 µs", "p99 µs", "p99/p50"]);
    let cpu_cols: Vec<String> = cpu.iter().map(|p| format!("{p} CPU s/1,000 cycles")).collect();
    header.extend(cpu_cols.iter().map(String::as_str));
    header.push("errors");
    let mut t = Table::new(title, &header);
    let rates: Vec<Vec<f64>> = runs.iter().map(|r| r.iter().map(|c| c.rate).collect()).collect();
    for (i, name) in names.iter().enumerate() {
        let p50: Vec<f64> = runs[i].iter().map(|c| us(c.p50)).collect();
        let p99: Vec<f64> = runs[i].iter().map(|c| us(c.p99)).collect();
        let errors: usize = runs[i].iter().map(|c| c.errors).sum();
        let mut cells = vec![name.to_string(), format!("{:.0}", median(&rates[i])), range(&rates[i], 0)];
        for b in bases {
            cells.push(ratio(&names, &rates, i, b));
        }
        cells.extend([
            format!("{:.0}", median(&p50)),
            format!("{:.0}", median(&p99)),
            format!("{:.1}", median(&p99) / median(&p50).max(1e-9)),
        ]);
        for j in 0..cpu.len() {
            let v: Vec<f64> = runs[i].iter().filter_map(|c| c.cpu_per_k.get(j).copied().flatten()).collect();
            cells.push(if v.is_empty() { "—".into() } else { format!("{:.3}", median(&v)) });
        }
        cells.push(errors.to_string());
        t.row(cells);
    }
    t
}

/// One hold run.
struct HeldRun {
    ok: usize,
    /// RSS growth while the connections were held, per connection held.
    rss_per_conn_kib: f64,
    threads: u64,
    open_secs: f64,
    /// RSS before the connections (after one warm-up cycle), KiB.
    rss_idle_kib: u64,
    /// RSS and threads [`Config::after_close`] after they closed.
    after: Option<(u64, u64)>,
}

/// The hold row: i2psocks whose held clients have half-closed after their
/// echo, so each connection is a held FIN. Its wait is long enough that no
/// hold ends while the others are opened and measured (under a second),
/// short enough that all have ended when RSS is read again; its limit lets
/// every one of them be held (the default holds 16 and passes the rest on).
const HELD_FIN_ROW: &str = "i2psocks-fin-held";
const HELD_FIN_FLAGS: [&str; 4] = ["--half-close-wait", "10", "--half-close-max", "10000"];

fn bench_held(cfg: &Config, env: &Env, target: &Target, sam: &FakeSam) -> Table {
    let mut names = Vec::new();
    if cfg.row("microsocks") && env.microsocks.is_some() {
        names.push("microsocks");
    }
    for name in ["i2psocks", HELD_FIN_ROW] {
        if cfg.row(name) {
            names.push(name);
        }
    }
    if cfg.compare.is_some() {
        names.push(COMPARE_ROW);
    }
    let mut runs: Vec<Vec<HeldRun>> = names.iter().map(|_| Vec::new()).collect();
    // Proxies whose connections have closed, waiting to be read again:
    // (row, run, proxy, when the connections closed). Kept alive together so
    // that the wait after closing overlaps the next runs instead of adding up.
    let mut closed: Vec<(usize, usize, Daemon, Instant)> = Vec::new();
    for run in 0..cfg.runs {
        for (i, name) in names.iter().enumerate() {
            // A fresh proxy per run: the RSS delta then starts from the same state.
            let (daemon, via, dest) = if *name == "microsocks" {
                let (d, a) = start_microsocks();
                (d, Via::Socks(a), Dest::Ip(target.addr(Mode::Echo)))
            } else {
                let bin =
                    if *name == COMPARE_ROW { cfg.compare.as_deref().unwrap_or(&cfg.bin) } else { &cfg.bin };
                let flags: &[&str] = if *name == HELD_FIN_ROW { &HELD_FIN_FLAGS } else { &[] };
                let (d, a) = start_i2psocks(cfg, bin, flags, sam.addr, START_TIMEOUT);
                (d, Via::Socks(a), Dest::Name(Mode::Echo.b32(), 80))
            };
            let h = held_run(&via, &dest, daemon.pid(), cfg.held, *name == HELD_FIN_ROW);
            note(&format!(
                "held run {}: {name} {}/{} ok, {:.1} KiB/conn, {} threads, opened in {:.2} s",
                run + 1,
                h.ok,
                cfg.held,
                h.rss_per_conn_kib,
                h.threads,
                h.open_secs
            ));
            runs[i].push(h);
            closed.push((i, run, daemon, Instant::now()));
        }
    }
    // In the order they closed, so each wait is the time left for that one.
    for (i, run, daemon, at) in closed {
        thread::sleep((at + cfg.after_close).saturating_duration_since(Instant::now()));
        let (rss, threads) = (rss_kib(daemon.pid()), threads(daemon.pid()));
        note(&format!(
            "held run {}: {} {} KiB RSS, {threads} threads {:.0} s after closing (idle before: {} KiB)",
            run + 1,
            names[i],
            rss,
            at.elapsed().as_secs_f64(),
            runs[i][run].rss_idle_kib
        ));
        runs[i][run].after = Some((rss, threads));
        drop(daemon);
    }
    let after = cfg.after_close.as_secs_f64();
    let rss_after_title = format!("RSS {after:.0} s after closing, KiB");
    let ratio_title = format!("{after:.0} s after / idle");
    let threads_title = format!("threads {after:.0} s after");
    let mut t = Table::new(
        &format!(
            "{} connections held open at once, each relaying a 1-byte echo, then closed ({} runs)",
            cfg.held, cfg.runs
        ),
        &[
            "row",
            "succeeded (worst run)",
            "RSS KiB per held connection",
            "min–max",
            "vs microsocks",
            "threads while held",
            "time to open all, s",
            "idle RSS, KiB",
            &rss_after_title,
            &ratio_title,
            &threads_title,
        ],
    );
    let rss: Vec<Vec<f64>> = runs.iter().map(|r| r.iter().map(|h| h.rss_per_conn_kib).collect()).collect();
    for (i, name) in names.iter().enumerate() {
        let worst = runs[i].iter().map(|h| h.ok).min().unwrap_or(0);
        let col =
            |f: &dyn Fn(&HeldRun) -> Option<f64>| -> Vec<f64> { runs[i].iter().filter_map(f).collect() };
        let threads = col(&|h| Some(h.threads as f64));
        let open = col(&|h| Some(h.open_secs));
        let idle = col(&|h| Some(h.rss_idle_kib as f64));
        let later = col(&|h| h.after.map(|(r, _)| r as f64));
        let grown = col(&|h| h.after.map(|(r, _)| r as f64 / h.rss_idle_kib.max(1) as f64));
        let threads_later = col(&|h| h.after.map(|(_, n)| n as f64));
        t.row(vec![
            name.to_string(),
            format!("{worst}/{}", cfg.held),
            format!("{:.1}", median(&rss[i])),
            range(&rss[i], 1),
            ratio(&names, &rss, i, "microsocks"),
            format!("{:.0}", median(&threads)),
            format!("{:.2}", median(&open)),
            format!("{:.0}", median(&idle)),
            format!("{:.0}", median(&later)),
            format!("{:.2}×", median(&grown)),
            format!("{:.0}", median(&threads_later)),
        ]);
    }
    t
}

/// Opens `n` connections through the proxy `pid`, each echoing one byte
/// (then half-closed if `half_close`), and holds them all; RSS is read
/// before and while they are held, and they are closed before this returns.
fn held_run(via: &Via, dest: &Dest, pid: u32, n: usize, half_close: bool) -> HeldRun {
    // Warm up once, so the baseline includes what any first connection sets up.
    let _ = cycle(via, dest);
    thread::sleep(SETTLE);
    let rss0 = rss_kib(pid);
    let t0 = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let r = open(via, dest).and_then(|mut s| {
            s.write_all(b"h")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            if half_close {
                s.shutdown(Shutdown::Write)?;
            }
            Ok(s)
        });
        match r {
            Ok(s) => held.push(s),
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    note(&format!("holding a connection failed: {e}"));
                }
            }
        }
    }
    let open_secs = t0.elapsed().as_secs_f64();
    thread::sleep(SETTLE);
    let (rss1, threads) = (rss_kib(pid), threads(pid));
    let ok = held.len();
    drop(held);
    HeldRun {
        ok,
        // Per connection that was held: a proxy that refuses some is not
        // made to look cheaper by them.
        rss_per_conn_kib: rss1.saturating_sub(rss0) as f64 / ok.max(1) as f64,
        threads,
        open_secs,
        rss_idle_kib: rss0,
        after: None,
    }
}

// ---------------------------------------------------------------------------
// Real router

fn bench_router(cfg: &Config, env: &Env) -> Result<Vec<Table>, String> {
    if env.i2pd.is_none() {
        return Err(
            "i2pd is not installed (bench/run.sh installs it via tests/deps.sh as root): skipped".into()
        );
    }
    let mut tables = Vec::new();
    // Debian's i2pd, then the newest (tests/deps.sh unpacks it beside the system's), one
    // after the other so they do not share the machine.
    for build in [Build::System, Build::Sid] {
        note(&format!(
            "starting i2pd {} offline (12-20 s), then i2psocks' session on it (as long)",
            build.version()
        ));
        let Ok(router) = std::panic::catch_unwind(|| common::i2pd::Router::start_build(build)) else {
            let why = "did not start (see the messages above): skipped";
            tables
                .push(Table::note("Real router (offline i2pd)", &format!("i2pd {} {why}", build.version())));
            continue;
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| router_tables(cfg, &router))) {
            Ok(t) => tables.extend(t),
            Err(_) => tables.push(Table::note(
                &format!("Real router ({})", router.label()),
                "the router section failed (see the messages above)",
            )),
        }
        // The router goes after every SAM client is gone (router_tables stopped its proxy).
        drop(router);
    }
    Ok(tables)
}

fn router_tables(cfg: &Config, router: &common::i2pd::Router) -> Vec<Table> {
    let proxies: Vec<(&'static str, (Daemon, SocketAddr))> = I2PSOCKS_ROWS
        .into_iter()
        .filter(|(name, _)| cfg.row(name))
        .map(|(name, flags)| (name, start_i2psocks(cfg, &cfg.bin, flags, router.sam_addr(), SESSION_TIMEOUT)))
        .collect();
    let bare = cfg.row(BARE_SAM_ROW).then(|| BareSam::start(router));
    let compare =
        cfg.compare.as_deref().map(|bin| start_i2psocks(cfg, bin, &[], router.sam_addr(), SESSION_TIMEOUT));
    let site = Dest::Name(router.site_b32().to_string(), 80);
    let echo = Dest::Name(router.echo_b32().to_string(), 80);
    let echo_name = Dest::Name(router.echo_name().to_string(), 80);
    struct RRow {
        name: &'static str,
        via: Via,
        site: Dest,
        echo: Dest,
        /// The echo service by its address-book name (None: the row has no names).
        echo_name: Option<Dest>,
        pid: Option<u32>,
    }
    let mut rows = vec![RRow {
        name: "direct",
        via: Via::Direct,
        site: Dest::Ip(router.http.addr()),
        echo: Dest::Ip(router.echo.addr()),
        echo_name: None,
        pid: None,
    }];
    if cfg.row("i2pd-socks") {
        rows.push(RRow {
            name: "i2pd-socks",
            via: Via::Socks(router.socks_addr()),
            site: site.clone(),
            echo: echo.clone(),
            echo_name: Some(echo_name.clone()),
            pid: None,
        });
    }
    for (name, (proxy, addr)) in &proxies {
        let (site, echo) = (site.clone(), echo.clone());
        let echo_name = Some(echo_name.clone());
        rows.push(RRow { name, via: Via::Socks(*addr), site, echo, echo_name, pid: Some(proxy.pid()) });
    }
    if let Some(bare) = &bare {
        rows.push(RRow {
            name: BARE_SAM_ROW,
            via: Via::Sam(Arc::clone(bare)),
            site: Dest::Name(router.site_dest_b64().to_string(), 80),
            echo: Dest::Name(router.echo_dest_b64().to_string(), 80),
            echo_name: None,
            pid: None,
        });
    }
    if let Some((p, a)) = &compare {
        let (via, echo_name) = (Via::Socks(*a), Some(echo_name));
        rows.push(RRow { name: COMPARE_ROW, via, site, echo, echo_name, pid: Some(p.pid()) });
    }
    // Warm-up: LeaseSet lookups and the first streams are not the metric. A fetch may
    // meet the newest i2pd's lost tail (doc/i2pd-stream-end.md): try again.
    for r in &rows {
        let mut tries = 1;
        while let Err(e) = fetch(&r.via, &r.site, FETCH_SMALL) {
            assert!(tries < FETCH_TRIES, "{}: warm-up fetch failed {tries} times: {e}", r.name);
            note(&format!("{}: warm-up fetch failed ({e}); again", r.name));
            tries += 1;
        }
        for echo in [Some(&r.echo), r.echo_name.as_ref()].into_iter().flatten() {
            cycle(&r.via, echo).unwrap_or_else(|e| panic!("{}: warm-up echo failed: {e}", r.name));
        }
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    let mut tables = Vec::new();
    let label = router.label();
    for size in [FETCH_SMALL, FETCH_LARGE] {
        let mut secs: Vec<Vec<f64>> = rows.iter().map(|_| Vec::new()).collect();
        let mut failed = vec![0usize; rows.len()];
        for run in 0..cfg.runs {
            for (i, r) in rows.iter().enumerate() {
                let took = match fetch(&r.via, &r.site, size) {
                    Ok(took) => took,
                    Err(e) => {
                        note(&format!("fetch {} MiB run {}: {} failed: {e}", size >> 20, run + 1, r.name));
                        failed[i] += 1;
                        continue;
                    }
                };
                note(&format!(
                    "fetch {} MiB run {}: {} {:.3} s",
                    size >> 20,
                    run + 1,
                    r.name,
                    took.as_secs_f64()
                ));
                secs[i].push(took.as_secs_f64());
            }
        }
        let mut t = Table::new(
            &format!(
                "Real router ({label}): HTTP GET of {} MiB from the local I2P site (connect included; {} runs)",
                size >> 20,
                cfg.runs
            ),
            &["row", "median ms", "min–max ms", "MiB/s", "speed vs i2pd-socks", "speed vs bare-sam", "failed"],
        );
        for (i, r) in rows.iter().enumerate() {
            let ms: Vec<f64> = secs[i].iter().map(|s| s * 1000.0).collect();
            // A speed ratio: base time / row time, so ≥ 1 is as fast or faster.
            let inv: Vec<Vec<f64>> = secs.iter().map(|v| v.iter().map(|s| 1.0 / s).collect()).collect();
            t.row(vec![
                r.name.to_string(),
                format!("{:.1}", median(&ms)),
                range(&ms, 1),
                format!("{:.1}", size as f64 / MIB / median(&secs[i])),
                ratio(&names, &inv, i, "i2pd-socks"),
                ratio(&names, &inv, i, BARE_SAM_ROW),
                failed[i].to_string(),
            ]);
        }
        tables.push(t);
    }
    let length = Duration::from_secs_f64(ROUTER_CYCLE_SECS);
    // The router is on every row's path (the SOCKS port is part of it): its
    // CPU beside the proxy's shows which of the two limits a row.
    let router_pid = router.pid();
    for clients in [1, CONCURRENT] {
        let what =
            if clients == 1 { "sequential".to_string() } else { format!("{clients} concurrent clients") };
        let mut runs: Vec<Vec<CycleRun>> = rows.iter().map(|_| Vec::new()).collect();
        for run in 0..cfg.runs {
            for (i, r) in rows.iter().enumerate() {
                let c = cycle_run(&r.via, &r.echo, clients, length, &[r.pid, router_pid]);
                note(&format!(
                    "router cycles {what} run {}: {} {:.0}/s p50 {:.0} µs",
                    run + 1,
                    r.name,
                    c.rate,
                    us(c.p50)
                ));
                runs[i].push(c);
            }
        }
        tables.push(cycle_table(
            &format!(
                "Real router ({label}): connection cycles to the local echo service, {what} \
                 ({} runs of {:.0} s; bare-sam: HELLO, STREAM CONNECT, 1-byte echo, close)",
                cfg.runs, ROUTER_CYCLE_SECS
            ),
            names.clone(),
            &runs,
            &["i2pd-socks", BARE_SAM_ROW, HCW0_ROW],
            &["proxy", "i2pd"],
        ));
    }
    // CONNECT by address-book name, paced: what resolving names costs, or saves. Paced,
    // so that a connect's time is its own, not that of a queue behind the one before.
    let named: Vec<&RRow> = rows.iter().filter(|r| r.echo_name.is_some()).collect();
    let mut lat: Vec<Vec<Duration>> = named.iter().map(|_| Vec::new()).collect();
    for run in 0..cfg.runs {
        for (i, r) in named.iter().enumerate() {
            let Some(dest) = &r.echo_name else { continue };
            let got = paced_connects(&r.via, dest);
            note(&format!(
                "router CONNECT by name run {}: {} p50 {:.0} µs",
                run + 1,
                r.name,
                us(percentile(&got, 0.5))
            ));
            lat[i].extend(got);
        }
    }
    let mut t = Table::new(
        &format!(
            "Real router ({label}): SOCKS5 CONNECT to the echo service by name ({}), until the success \
             reply; {PACED_CONNECTS} per run, one every {} ms, {} runs",
            router.echo_name(),
            PACED_GAP.as_millis(),
            cfg.runs
        ),
        &["row", "connects", "p50 µs", "p90 µs", "p99 µs", "p50 vs i2pd-socks", "p50 vs i2psocks"],
    );
    let p50s: Vec<Vec<f64>> = lat.iter().map(|l| vec![us(percentile(l, 0.5))]).collect();
    let names: Vec<&str> = named.iter().map(|r| r.name).collect();
    for (i, r) in named.iter().enumerate() {
        t.row(vec![
            r.name.to_string(),
            lat[i].len().to_string(),
            format!("{:.0}", us(percentile(&lat[i], 0.5))),
            format!("{:.0}", us(percentile(&lat[i], 0.9))),
            format!("{:.0}", us(percentile(&lat[i], 0.99))),
            ratio(&names, &p50s, i, "i2pd-socks"),
            ratio(&names, &p50s, i, "i2psocks"),
        ]);
    }
    tables.push(t);
    drop(compare);
    drop(bare);
    drop(proxies);
    tables
}

/// The row of a minimal SAM client on the router: what any proxy that speaks SAM can reach.
const BARE_SAM_ROW: &str = "bare-sam";
/// Longest SAM reply line the bare client reads.
const MAX_SAM_REPLY: usize = 1 << 10;

/// A minimal SAM client with a STREAM session of its own (same tunnel options as a test's
/// peer session, tests/common/router.rs), held as long as this lives: each stream is a new
/// socket, `HELLO`, `STREAM CONNECT` and then payload, nothing more.
struct BareSam {
    sam: SocketAddr,
    id: String,
    /// The session's control socket: closing it ends the session.
    _control: common::sam_client::Sam,
}

impl BareSam {
    fn start(router: &common::i2pd::Router) -> Arc<BareSam> {
        let mut control = common::sam_client::Sam::connect(router.sam_addr()).expect("bare SAM: HELLO");
        let id = format!("bench-bare-{}", std::process::id());
        let options = router.peer_options();
        control
            .session_create_within("STREAM", &id, "TRANSIENT", &options, SESSION_TIMEOUT)
            .expect("bare SAM: SESSION CREATE");
        Arc::new(BareSam { sam: router.sam_addr(), id, _control: control })
    }

    /// HELLO, then `STREAM CONNECT` to `dest_b64`; the socket is then the stream.
    fn connect(&self, dest_b64: &str) -> io::Result<TcpStream> {
        let mut s = TcpStream::connect(self.sam)?;
        prepare(&s);
        s.write_all(b"HELLO VERSION MIN=3.1 MAX=3.3\n")?;
        sam_reply(&mut s)?;
        s.write_all(
            format!("STREAM CONNECT ID={} DESTINATION={dest_b64} SILENT=false\n", self.id).as_bytes(),
        )?;
        sam_reply(&mut s)?;
        Ok(s)
    }
}

/// Reads one SAM reply line and checks `RESULT=OK`. Buffered reads are safe here: the far
/// end sends nothing before the client's first byte, which comes after this reply.
fn sam_reply(s: &mut TcpStream) -> io::Result<()> {
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !line.ends_with(b"\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(ErrorKind::UnexpectedEof, "SAM closed before its reply"));
        }
        line.extend_from_slice(&buf[..n]);
        if line.len() > MAX_SAM_REPLY {
            return Err(io::Error::other("SAM reply too long"));
        }
    }
    let line = String::from_utf8_lossy(&line);
    if param(line.trim_end(), "RESULT") == Some("OK") {
        Ok(())
    } else {
        Err(io::Error::other(format!("SAM: {}", line.trim_end())))
    }
}

/// SOCKS5 CONNECTs in one paced run of [`router_tables`].
const PACED_CONNECTS: usize = 30;
/// Pause between them: at most ~50 far ends stay open at once (their FINs
/// held 5 s), so each connect meets a quiet router and echo service.
const PACED_GAP: Duration = Duration::from_millis(100);

/// [`PACED_CONNECTS`] CONNECTs to `dest`, one every [`PACED_GAP`]: the time from the TCP
/// connect to the SOCKS success reply of each (failures are left out, and noted).
fn paced_connects(via: &Via, dest: &Dest) -> Vec<Duration> {
    let mut out = Vec::with_capacity(PACED_CONNECTS);
    for _ in 0..PACED_CONNECTS {
        let t0 = Instant::now();
        match open(via, dest) {
            Ok(s) => {
                out.push(t0.elapsed());
                drop(s);
            }
            Err(e) => note(&format!("paced CONNECT failed: {e}")),
        }
        thread::sleep(PACED_GAP.saturating_sub(t0.elapsed()));
    }
    out
}

/// The `q` quantile (0..=1) of `v`, by rank; zero for no samples.
fn percentile(v: &[Duration], q: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get(((s.len() as f64 * q) as usize).min(s.len().saturating_sub(1))).copied().unwrap_or_default()
}

/// HTTP/1.0 GET /bytes/<n>; the time from connect to the last body byte (the close is not
/// waited for: the newest i2pd sometimes loses it). A read waits at most [`FETCH_STALL`].
fn fetch(via: &Via, dest: &Dest, n: usize) -> io::Result<Duration> {
    let t0 = Instant::now();
    let mut s = open(via, dest)?;
    s.set_read_timeout(Some(FETCH_STALL))?;
    let host = match dest {
        Dest::Name(h, _) => h.clone(),
        Dest::Ip(a) => a.to_string(),
    };
    s.write_all(format!("GET /bytes/{n} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut buf = vec![0u8; CHUNK];
    let mut head: Vec<u8> = Vec::new();
    let mut body = 0usize;
    let mut in_body = false;
    loop {
        let k = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if in_body {
            body += k;
            if body >= n {
                break;
            }
            continue;
        }
        head.extend_from_slice(&buf[..k]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.0 200") && !head.starts_with(b"HTTP/1.1 200") {
                let line = String::from_utf8_lossy(&head[..head.len().min(80)]).to_string();
                return Err(io::Error::other(format!("HTTP status {line:?}")));
            }
            body = head.len() - (p + 4);
            in_body = true;
            if body >= n {
                break;
            }
        } else if head.len() > MAX_HTTP_HEAD {
            return Err(io::Error::other("HTTP head too long"));
        }
    }
    let took = t0.elapsed();
    if body != n {
        return Err(io::Error::other(format!("body of {body} bytes, expected {n}")));
    }
    Ok(took)
}

// ---------------------------------------------------------------------------
// Statistics and tables

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn range(v: &[f64], decimals: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.decimals$}–{max:.decimals$}")
}

/// median(row i) / median(row `base`), or a dash when `base` is absent.
fn ratio(names: &[&str], values: &[Vec<f64>], i: usize, base: &str) -> String {
    let Some(b) = names.iter().position(|n| *n == base) else { return "—".into() };
    format!("{:.2}×", median(&values[i]) / median(&values[b]))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Table {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn note(title: &str, text: &str) -> Table {
        let mut t = Table::new(title, &["note"]);
        t.row(vec![text.into()]);
        t
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn print(&self) {
        println!("### {}", self.title);
        println!();
        println!("| {} |", self.header.join(" | "));
        println!("|{}", self.header.iter().map(|_| "---|").collect::<String>());
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
        println!();
    }
}
