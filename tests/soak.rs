//! Identity churn through the proxy for minutes, as a busy user makes it, against real i2pd
//! routers: the load that crashed i2pd's SAM thread (a stream whose end the router never
//! delivered, doc/i2pd-stream-end.md, keeps a timer on a destination that closing its session
//! frees). The router must survive it, every request must succeed, and the proxy must give
//! back what the load took.
//!
//! The proxy runs with its default flags but for what an offline router needs (`-s`,
//! `--hops 0`) and the test's listener. Four loops fetch the local I2P site through it (curl,
//! SOCKS5), each request with credentials drawn at random from [`USERS`] names, more than
//! `--max-sessions`' default 32, so identities are evicted and spare sessions taken all the
//! time; a fifth loop sends no credentials. SIGHUP every [`HUP_EVERY`] retires every
//! transient identity, SIGUSR1 every [`USR1_EVERY`] asks for the status report; the proxy's
//! RSS, descriptors and threads are sampled every [`SAMPLE_EVERY`].
//!
//! Asserted per router: it is still running and its SAM port answers HELLO; no request
//! failed (but for a rare router fault named and tolerated, see [`UNREACHABLE_PER`]), and none
//! was refused for a limit (counted apart, by the flag the proxy names);
//! [`SETTLE`] after the load the proxy's descriptors and threads are back to their level
//! before it, plus what each session the status report says is held after close keeps
//! ([`HELD_FDS`], [`HELD_THREADS`]; 0 when the report has no such figure). A summary table is printed for each router; a
//! router that died is named with its exit, its log's tail and the kernel's lines about its
//! threads (segfaults and traps).
//!
//! `SOAK_SECONDS` sets the load's length ([`DEFAULT_SECONDS`]), `SOAK_ROUTERS` the routers,
//! run one after the other (`sid,trixie,2.45`; [`DEFAULT_ROUTERS`]): `make soak` runs all
//! three for 10 minutes each. Needs the packages of tests/deps.sh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::http::MARKER;
use common::i2pd::{answered_unreachable, curl, Build, Router};
use common::ports::random_u64;
use common::process::{open_fds, rss_kib, tasks, threads};
use common::proxy::Proxy;
use common::rng::Rng;
use common::router::RealRouter;
use common::sam_client::Sam;
use common::status::{self, Report};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The load's length when `SOAK_SECONDS` is not set: what `make test` runs.
const DEFAULT_SECONDS: u64 = 120;
/// The routers when `SOAK_ROUTERS` is not set: the newest i2pd, which crashed soonest.
const DEFAULT_ROUTERS: &str = "sid";
/// Loops that send credentials.
const LOOPS_WITH_CREDENTIALS: usize = 4;
/// User names they draw from: more than `--max-sessions`' default (32).
const USERS: usize = 60;
/// Between two SIGHUPs (new identities).
const HUP_EVERY: Duration = Duration::from_secs(20);
/// Between two status reports.
const USR1_EVERY: Duration = Duration::from_secs(60);
/// Between two samples of the proxy's RSS, descriptors and threads.
const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// From the end of the load to the check that the proxy gave back what it took: longer than
/// the pool's idle workers stay (30 s) and a spare session's build (12-20 s).
const SETTLE: Duration = Duration::from_secs(60);
/// What a session held after close keeps in the proxy (src/sam/stream.rs, control.rs): its
/// control socket, the clone that lets it be closed and its reader's clone; the supervisor
/// thread and the reader thread.
const HELD_FDS: u64 = 3;
const HELD_THREADS: u64 = 2;
/// How often the router and the proxy are looked at; a router's death is seen within it.
const TICK: Duration = Duration::from_millis(500);
/// One request's `--max-time`, seconds: above the proxy's `--connect-timeout` (120 s), so
/// the proxy's own answer comes first.
const REQUEST_MAX_TIME: &str = "150";
/// Longest pause between two requests of a loop, milliseconds: a person clicking, and
/// room on a small machine for the router among the curl processes.
const GAP_MAX_MS: usize = 250;
/// The default identity's and the first spare's session builds (i2pd 2.45 takes 20 s).
const SESSION_WAIT: Duration = Duration::from_secs(90);
/// The status report's wait after SIGUSR1.
const REPORT_WAIT: Duration = Duration::from_secs(30);
/// Failures listed in the summary (all are counted).
const FAILURES_SHOWN: usize = 10;
/// The kernel's lines about crashed threads: a use after free shows as a segfault, and
/// also as a trap (a divide error was seen once).
const DMESG: &str = "dmesg | grep -iE 'segfault|traps:'";
/// Kernel lines shown when none names one of the router's threads (they are then anyone's).
const DMESG_TAIL: usize = 3;
/// A request answered 0x04 ([`answered_unreachable`]) is tolerated and named up to one in
/// this many (at least one): the newest i2pd answered CANT_REACH_PEER once in 589 requests,
/// from a session built a moment before, for a site every other session reached (a router
/// fault, [`RealRouter::refuses_a_new_sessions_connect`]); the proxy's own failures are never
/// tolerated.
const UNREACHABLE_PER: u64 = 300;

#[test]
fn identity_churn() {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .map(|s| s.trim().parse::<u64>().unwrap_or_else(|_| panic!("SOAK_SECONDS={s:?}: not a number")))
        .unwrap_or(DEFAULT_SECONDS);
    let names = std::env::var("SOAK_ROUTERS").unwrap_or_else(|_| DEFAULT_ROUTERS.into());
    let builds: Vec<Build> = names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(build).collect();
    assert!(!builds.is_empty(), "SOAK_ROUTERS={names:?} names no router");
    let mut outcomes = Vec::new();
    for b in builds {
        let o = soak(b, Duration::from_secs(seconds));
        // Printed at once too: with several routers the first result is worth seeing early.
        eprintln!("{}", o.summary());
        outcomes.push(o);
    }
    eprintln!("\n======== soak summary");
    for o in &outcomes {
        eprintln!("{}", o.summary());
    }
    let problems: Vec<String> = outcomes.iter().flat_map(Outcome::problems).collect();
    assert!(problems.is_empty(), "soak:\n  {}", problems.join("\n  "));
}

/// A `SOAK_ROUTERS` name.
fn build(name: &str) -> Build {
    match name {
        "sid" | "newest" => Build::Sid,
        "trixie" | "2.56" => Build::Trixie,
        "2.45" | "system" | "bookworm" => Build::System,
        _ => panic!("SOAK_ROUTERS: unknown router {name:?} (sid or newest, trixie or 2.56, 2.45 or system)"),
    }
}

/// The proxy's resources at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Since the load began.
    at: Duration,
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

impl Sample {
    fn take(pid: u32, at: Duration) -> Sample {
        Sample { at, rss_kib: rss_kib(pid), fds: open_fds(pid), threads: threads(pid) }
    }
}

/// What the request loops counted.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Of the failed, those the proxy answered 0x04: the router could not reach the site.
    unreachable: AtomicU64,
    slowest_ms: AtomicU64,
    /// The first [`FAILURES_SHOWN`] failures, as said.
    failures: Mutex<Vec<String>>,
    /// When each failed request ended, since the load began.
    failure_ends: Mutex<Vec<Duration>>,
}

/// The request loops, running until [`Load::stop`].
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    loops: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &str, site: &str, t0: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let loops = (0..=LOOPS_WITH_CREDENTIALS)
            .map(|n| {
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                let (proxy, url) = (proxy.to_owned(), format!("http://{site}/"));
                let with_credentials = n < LOOPS_WITH_CREDENTIALS;
                thread::spawn(move || {
                    let mut rng = Rng::new(random_u64() >> 1);
                    while !stop.load(Ordering::SeqCst) {
                        let user = with_credentials.then(|| format!("user{:02}", rng.below(USERS)));
                        request(&proxy, &url, user.as_deref(), &tally, t0);
                        thread::sleep(Duration::from_millis(rng.below(GAP_MAX_MS + 1) as u64));
                    }
                })
            })
            .collect();
        Load { stop, tally, loops }
    }

    /// Stops the loops once their requests in flight have ended (within [`REQUEST_MAX_TIME`]).
    fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        for l in self.loops {
            l.join().expect("a request loop panicked");
        }
        self.tally
    }
}

/// One GET of the site's page through the proxy, as `user` (password `soak`) or without
/// credentials, counted in `tally`.
fn request(proxy: &str, url: &str, user: Option<&str>, tally: &Tally, t0: Instant) {
    let via = match user {
        Some(u) => format!("socks5h://{u}:soak@{proxy}"),
        None => format!("socks5h://{proxy}"),
    };
    let t = Instant::now();
    let out = curl(&["-x", &via, "--max-time", REQUEST_MAX_TIME, url]);
    let took = t.elapsed();
    tally.slowest_ms.fetch_max(took.as_millis() as u64, Ordering::SeqCst);
    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(MARKER) {
        tally.ok.fetch_add(1, Ordering::SeqCst);
        return;
    }
    tally.failed.fetch_add(1, Ordering::SeqCst);
    if answered_unreachable(&String::from_utf8_lossy(&out.stderr)) {
        tally.unreachable.fetch_add(1, Ordering::SeqCst);
    }
    let end = t0.elapsed();
    tally.failure_ends.lock().unwrap().push(end);
    let mut failures = tally.failures.lock().unwrap();
    if failures.len() < FAILURES_SHOWN {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let why = if why.is_empty() { "no page, no error".to_owned() } else { why };
        failures.push(format!(
            "ended at {:.1} s, {}, after {took:.1?}: {} {why}",
            end.as_secs_f64(),
            user.unwrap_or("no credentials"),
            out.status
        ));
    }
}

/// How one router's soak went.
struct Outcome {
    label: String,
    ran: Duration,
    ok: u64,
    /// Requests that failed, the refused ones not counted.
    failed: u64,
    /// Of those, the ones that ended after the router died (or within a [`TICK`] before
    /// its death was seen).
    failed_after_death: u64,
    /// Of the failed, those answered 0x04 ([`answered_unreachable`]).
    unreachable: u64,
    failures: Vec<String>,
    slowest: Duration,
    /// Requests refused for a limit, by the flag the proxy named (`--max-sessions`).
    refused: BTreeMap<String, u64>,
    /// The last status report.
    report: Option<Report>,
    held: u64,
    idle: Sample,
    samples: Vec<Sample>,
    /// [`SETTLE`] after the load; `None` when the router died (nothing to settle to).
    after: Option<Sample>,
    /// How the router ended, with its log's tail and the kernel's lines; `None`: it runs.
    death: Option<String>,
    /// When its death was seen, since the load began.
    death_at: Option<Duration>,
    /// The SAM port answered HELLO at the end.
    hello: bool,
    /// The proxy exited by itself.
    proxy_exit: Option<ExitStatus>,
}

/// Soaks `build` for `length`, then lets the proxy settle.
fn soak(build: Build, length: Duration) -> Outcome {
    let mut router = Router::start_build(build);
    let label = router.label().to_owned();
    // Its threads, SAM's among them, all start with it: the kernel names a crash by one.
    let router_threads = router.pid().map_or_else(Vec::new, tasks);
    let sam = router.sam_addr().to_string();
    let mut proxy = Proxy::start(&["-s", &sam, "--hops", "0"]);
    proxy.ready_b32("default identity", SESSION_WAIT).expect("the proxy's default identity");
    proxy.ready_b32("spare #1", SESSION_WAIT).expect("the proxy's first spare session");
    let pid = proxy.pid();
    let idle = Sample::take(pid, Duration::ZERO);
    eprintln!("{label}: soak for {length:?}; the proxy idle: {idle:?}");

    let t0 = Instant::now();
    let load = Load::start(&proxy.addr().to_string(), router.site_b32(), t0);
    let (mut next_sample, mut next_hup, mut next_usr1) = (Duration::ZERO, HUP_EVERY, USR1_EVERY);
    let mut samples = Vec::new();
    let mut death = None;
    let mut proxy_exit = None;
    while t0.elapsed() < length {
        let now = t0.elapsed();
        if let Some(st) = router.exited() {
            death = Some((died(&router, &router_threads, st, now), now));
            break;
        }
        if let Some(st) = proxy.wait_exit(Duration::ZERO) {
            proxy_exit = Some(st);
            break;
        }
        if now >= next_sample {
            let s = Sample::take(pid, now);
            let t = &load.tally;
            eprintln!(
                "{label}: {:>4} s: {} ok, {} failed; proxy RSS {} KiB, {} fds, {} threads",
                now.as_secs(),
                t.ok.load(Ordering::SeqCst),
                t.failed.load(Ordering::SeqCst),
                s.rss_kib,
                s.fds,
                s.threads
            );
            samples.push(s);
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_hup {
            proxy.signal("HUP");
            next_hup += HUP_EVERY;
        }
        if now >= next_usr1 {
            status::ask(&proxy, REPORT_WAIT);
            next_usr1 += USR1_EVERY;
        }
        thread::sleep(TICK);
    }
    let ran = t0.elapsed();
    if proxy_exit.is_none() {
        samples.push(Sample::take(pid, ran));
    }
    let tally = load.stop();
    eprintln!("{label}: load stopped after {ran:?}, its last requests {:?} later", t0.elapsed() - ran);

    let mut after = None;
    if death.is_none() && proxy_exit.is_none() {
        // The identities the last requests made would stay for --session-idle-timeout (600 s):
        // retire them as the SIGHUPs did all along, so the proxy can go back to idle.
        proxy.signal("HUP");
        let settled = Instant::now();
        while settled.elapsed() < SETTLE {
            if let Some(st) = router.exited() {
                death = Some((died(&router, &router_threads, st, t0.elapsed()), t0.elapsed()));
                break;
            }
            thread::sleep(TICK);
        }
        if death.is_none() {
            after = Some(Sample::take(pid, t0.elapsed()));
        }
    }
    if death.is_none() {
        if let Some(st) = router.exited() {
            death = Some((died(&router, &router_threads, st, t0.elapsed()), t0.elapsed()));
        }
    }
    let hello = death.is_none() && Sam::connect(router.sam_addr()).is_ok();
    let report = proxy_exit.is_none().then(|| status::ask(&proxy, REPORT_WAIT));
    let held = report.as_ref().and_then(|r| r.find_count("identities", "held after close")).unwrap_or(0);
    let overload = report.as_ref().map_or(0, |r| r.count("refused", "overload"));
    let refused = refusals(&proxy.lines(), overload);
    let failed_all = tally.failed.load(Ordering::SeqCst);
    let death_at = death.as_ref().map(|(_, at)| *at);
    let failed_after_death = death_at.map_or(0, |at| {
        tally.failure_ends.lock().unwrap().iter().filter(|&&end| end + TICK >= at).count() as u64
    });
    let outcome = Outcome {
        label,
        ran,
        ok: tally.ok.load(Ordering::SeqCst),
        failed: failed_all.saturating_sub(refused.values().sum()),
        failed_after_death,
        unreachable: tally.unreachable.load(Ordering::SeqCst),
        failures: tally.failures.lock().unwrap().clone(),
        slowest: Duration::from_millis(tally.slowest_ms.load(Ordering::SeqCst)),
        refused,
        report,
        held,
        idle,
        samples,
        after,
        death: death.map(|(text, _)| text),
        death_at,
        hello,
        proxy_exit,
    };
    // The proxy first: its SAM sessions closed, i2pd stops on SIGTERM.
    drop(proxy);
    drop(router);
    outcome
}

/// What is known of a router that exited `at` into the load: its exit, log and the kernel's
/// lines about its `threads` (printed at once too, before anything else can get in the way).
fn died(router: &Router, threads: &[u32], st: ExitStatus, at: Duration) -> String {
    let how = match st.signal() {
        Some(11) => "killed by signal 11 (SIGSEGV)".to_owned(),
        Some(6) => "killed by signal 6 (SIGABRT)".to_owned(),
        Some(8) => "killed by signal 8 (SIGFPE)".to_owned(),
        Some(n) => format!("killed by signal {n}"),
        None => format!("exited with {st}"),
    };
    let dmesg = Command::new("sh").args(["-c", DMESG]).output();
    let kernel = match dmesg {
        Ok(o) if !o.stdout.is_empty() => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let all: Vec<&str> = text.lines().collect();
            let ours: Vec<&str> = all
                .iter()
                .copied()
                .filter(|l| threads.iter().any(|t| l.contains(&format!("[{t}]"))))
                .collect();
            if ours.is_empty() {
                let tail = &all[all.len().saturating_sub(DMESG_TAIL)..];
                format!("(none names one of its threads; the last, anyone's:)\n{}\n", tail.join("\n"))
            } else {
                format!("{}\n", ours.join("\n"))
            }
        }
        Ok(o) => format!("(nothing; {})\n", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("(not readable: {e})\n"),
    };
    let text = format!(
        "ROUTER DIED: {} {how} {:.0} s into the load\n{}---- `{DMESG}`\n{kernel}",
        router.label(),
        at.as_secs_f64(),
        router.log_tail()
    );
    eprintln!("{text}");
    text
}

/// Requests refused for a limit, by the limit: the proxy's `refusing` warnings name their flag
/// (`too many identities (--max-sessions 32): refusing a client`), a rate-limited one with
/// how many it held back. `overload` (the status report's count of such refusals) covers
/// any the lines do not name.
fn refusals(lines: &[String], overload: u64) -> BTreeMap<String, u64> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.contains("refusing")) {
        let Some(at) = l.find("(--") else { continue };
        let flag: String = l[at + 1..].chars().take_while(|c| !matches!(c, ' ' | ')')).collect();
        let more = l
            .split(" (")
            .find_map(|p| p.strip_suffix(" more since the last such line)"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        *by.entry(flag).or_default() += 1 + more;
    }
    let named: u64 = by.values().sum();
    if overload > named {
        by.insert("overload, no limit named".into(), overload - named);
    }
    by
}

impl Outcome {
    /// The session counts of the last status report: built, rebuilt, failed.
    fn sessions(&self) -> Option<(u64, u64, u64)> {
        let r = self.report.as_ref()?;
        Some((
            r.count("identities", "built"),
            r.count("identities", "rebuilt"),
            r.count("identities", "failed"),
        ))
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "---- soak on {}: {:.0} s of load", self.label, self.ran.as_secs_f64());
        let alive = match (&self.death, self.hello) {
            (Some(d), _) => d.lines().next().unwrap_or("died").to_owned(),
            (None, true) => "yes; SAM answers HELLO".to_owned(),
            (None, false) => "running, but SAM does not answer HELLO".to_owned(),
        };
        let _ = writeln!(s, "| router alive | {alive} |");
        let refused: u64 = self.refused.values().sum();
        let _ = writeln!(
            s,
            "| requests | {} ok, {} failed{}, {refused} refused{}; slowest {:.1?} |",
            self.ok,
            self.failed,
            match self.death_at {
                Some(at) => format!(
                    " ({} of them ended after the router died, seen at {:.1} s)",
                    self.failed_after_death,
                    at.as_secs_f64()
                ),
                None => String::new(),
            },
            if self.refused.is_empty() { String::new() } else { format!(" ({:?})", self.refused) },
            self.slowest
        );
        let sessions = match self.sessions() {
            Some((b, r, f)) => format!("{b} built, {r} rebuilt, {f} failed; {} held after close", self.held),
            None => "no status report (the proxy exited)".to_owned(),
        };
        let _ = writeln!(s, "| SAM sessions (status report) | {sessions} |");
        if let Some(st) = self.proxy_exit {
            let _ = writeln!(s, "| proxy | EXITED: {st} |");
        }
        let _ = writeln!(s, "| proxy at | RSS KiB | fds | threads |");
        let row = |s: &mut String, what: &str, x: &Sample| {
            let _ = writeln!(s, "| {what} | {} | {} | {} |", x.rss_kib, x.fds, x.threads);
        };
        row(&mut s, "idle before", &self.idle);
        for x in &self.samples {
            row(&mut s, &format!("{} s", x.at.as_secs()), x);
        }
        match &self.after {
            Some(x) => row(&mut s, &format!("{} s after the load", SETTLE.as_secs()), x),
            None => s.push_str("| after the load | not measured |\n"),
        }
        for f in &self.failures {
            let _ = writeln!(s, "  failed: {f}");
        }
        s
    }

    /// Each way this soak failed, said in a line.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let l = &self.label;
        if let Some(d) = &self.death {
            p.push(d.lines().next().unwrap_or("the router died").to_owned());
        } else if !self.hello {
            p.push(format!("{l}: runs, but its SAM port does not answer HELLO"));
        }
        if let Some(st) = self.proxy_exit {
            p.push(format!("{l}: the proxy exited during the load: {st}"));
        }
        let tolerated = (self.ok + self.failed) / UNREACHABLE_PER;
        let tolerated = if self.death.is_none() { self.unreachable.min(tolerated.max(1)) } else { 0 };
        if tolerated > 0 {
            eprintln!(
                "{l}: router fault tolerated: {tolerated} requests answered 0x04, the router could not \
                 reach the site (at most 1 in {UNREACHABLE_PER})"
            );
        }
        if self.failed > tolerated {
            p.push(format!(
                "{l}: {} requests failed ({} after the router died, {tolerated} tolerated); first: {:?}",
                self.failed,
                self.failed_after_death,
                self.failures.first()
            ));
        }
        if !self.refused.is_empty() {
            p.push(format!("{l}: requests refused for a limit, with default flags: {:?}", self.refused));
        }
        if let Some(a) = &self.after {
            let held = self.held;
            if a.fds as u64 > self.idle.fds as u64 + held * HELD_FDS {
                p.push(format!(
                    "{l}: {} descriptors {}s after the load, {} before it (+{HELD_FDS} for each of {held} \
                     held after close)",
                    a.fds,
                    SETTLE.as_secs(),
                    self.idle.fds
                ));
            }
            if a.threads > self.idle.threads + held * HELD_THREADS {
                p.push(format!(
                    "{l}: {} threads {}s after the load, {} before it (+{HELD_THREADS} for each of {held} \
                     held after close)",
                    a.threads,
                    SETTLE.as_secs(),
                    self.idle.threads
                ));
            }
        }
        p
    }
}
