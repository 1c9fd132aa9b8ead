//! i2psocks: flags → logging → bind → SAM sessions → worker pool → one
//! accept loop per listener, and the orderly shutdown on SIGTERM/SIGINT.
//!
//! Startup failures print one line `i2psocks: <what failed>` on stderr and
//! exit non-zero: 64 usage error, 69 SAM bridge unavailable (`--check`,
//! `--print-address`), 78 bad key or auth file or unsafe Unix socket place,
//! or a sandbox required (`--sandbox require`) that cannot be applied in
//! full, 1 anything else.

use i2psocks::auth::AuthFile;
use i2psocks::cli::{self, Command, Config, Sandbox};
use i2psocks::client::Client;
use i2psocks::counters::{bump, COUNTERS};
use i2psocks::holds::HOLDS;
use i2psocks::identity::{Identities, KeyFile, Recipe};
use i2psocks::keydir;
use i2psocks::keyfile;
use i2psocks::listen::{BindError, Listener, Wake};
use i2psocks::log_limit::{held_back_suffix, RateLimit};
use i2psocks::memory;
use i2psocks::pool::Pool;
use i2psocks::proxy::{self, Shared};
use i2psocks::sam::conn;
use i2psocks::sam::datagram::DgSpec;
use i2psocks::sam::encryption::{self, Encryption, Mode};
use i2psocks::sam::stream::SessionSpec;
use i2psocks::sandbox::{self, Applied};
use i2psocks::status::Reporter;
use i2psocks::virtual_net::VirtualMap;
use log::{error, info, warn, LevelFilter};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use std::io::{ErrorKind, Write};
use std::net::Shutdown;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// sysexits(3) EX_USAGE.
const EXIT_USAGE: u8 = 64;
/// sysexits(3) EX_UNAVAILABLE: the SAM bridge cannot be reached.
const EXIT_UNAVAILABLE: u8 = 69;
/// sysexits(3) EX_CONFIG: a key or auth file cannot be used, a Unix
/// socket's place is unsafe or taken, or `--sandbox require` cannot be met.
const EXIT_CONFIG: u8 = 78;
const EXIT_FAILURE: u8 = 1;
/// After an accept error (EMFILE and the like) wait this long before the
/// next accept instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one "too many clients" or "accept failed" warning per this interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// A client finding every place taken waits at most this long for the place
/// of the held half-close it had released (src/holds.rs). The I2P side
/// answers a FIN by closing within milliseconds (i2pd ends the stream, an
/// echo-style server closes); one that does not keeps its place, as with
/// `--half-close-wait 0`, and the client is then refused. Bounded because
/// the accept loop waits meanwhile.
const ROOM_WAIT: Duration = Duration::from_millis(500);
/// Places kept free of holds: `--max-clients` / this (16 of the default
/// 1024; none below 64). When `--half-close-max` lets holds fill the places,
/// a stream of short connections fills them within seconds, and a client
/// that then had to wait for a released hold to end (the I2P side closing,
/// its worker finishing) before its handshake could begin made sequential
/// cycles a quarter slower than with `--half-close-wait 0` (`make bench`).
const RESERVE_DIVISOR: usize = 64;
/// After the grace period, how long stopped relays get to unwind.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// Between attempts at the wake-up connection when it cannot be made yet
/// (no free fd): a client that leaves frees one.
const WAKE_RETRY: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c @ (Command::Run(_) | Command::Check(_) | Command::PrintAddress(_))) => c,
        Ok(Command::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("i2psocks {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("i2psocks: {e} (see i2psocks -h)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match command {
        Command::Run(c) => {
            memory::limit_arenas();
            init_logging(c.verbosity);
            load_files(&c).and_then(|files| run(c, files))
        }
        Command::Check(c) => check(&c),
        Command::PrintAddress(c) => print_address(&c),
        Command::Help | Command::Version => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("i2psocks: {msg}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

/// The key files, the key directory and the auth file, checked before
/// anything is bound.
struct Files {
    /// One per listener: its key file, with the key if the file exists.
    listener_keys: Vec<Option<KeyFile>>,
    /// `--key-dir`'s keys now: (file stem, private key in I2P base64).
    users: Vec<(String, String)>,
    auth: Option<AuthFile>,
}

fn load_files(c: &Config) -> Result<Files, Failure> {
    let config = |e: String| (EXIT_CONFIG, e);
    let mut listener_keys = Vec::with_capacity(c.listen_keys.len());
    for k in &c.listen_keys {
        listener_keys.push(match k {
            Some(path) => {
                let key = keyfile::load(path).map_err(|e| config(e.to_string()))?;
                Some(KeyFile { path: path.clone(), key })
            }
            None => None,
        });
    }
    let users = match &c.key_dir {
        Some(dir) => {
            keydir::check(dir).map_err(|e| config(e.to_string()))?;
            keydir::existing(dir).map_err(|e| config(e.to_string()))?
        }
        None => Vec::new(),
    };
    let auth = match &c.auth_file {
        Some(p) => Some(AuthFile::load(p).map_err(config)?),
        None => None,
    };
    Ok(Files { listener_keys, users, auth })
}

/// `--check`: flags parsed already; files and the bridge now.
fn check(c: &Config) -> Result<(), Failure> {
    load_files(c)?;
    let minor = conn::probe(c.sam)
        .map_err(|e| (EXIT_UNAVAILABLE, format!("SAM bridge at {} unavailable: {e}", c.sam)))?;
    if c.encryption == Mode::Pq && minor < encryption::PQ_MIN_MINOR {
        let e = conn::CreateError::NoPostQuantum { minor };
        return Err((EXIT_UNAVAILABLE, format!("SAM bridge at {}: --encryption pq: {e}", c.sam)));
    }
    println!("i2psocks: configuration ok; SAM bridge at {} speaks SAM 3.{minor}", c.sam);
    Ok(())
}

/// `--print-address`: every persistent identity's address, one line each,
/// `listener ENDPOINT B32` or `user STEM B32`; a listener's missing key is
/// created (its flag asks for it), a user name's never is. With only
/// `-k` the bare address, as before there were more.
fn print_address(c: &Config) -> Result<(), Failure> {
    let files = load_files(c)?;
    let mut lines = Vec::new();
    for (ep, k) in c.listen.iter().zip(&files.listener_keys) {
        let Some(KeyFile { path, key }) = k else {
            continue;
        };
        let key = match key {
            Some(k) => k.clone(),
            None => {
                let k = conn::generate_key(c.sam).map_err(|e| {
                    (
                        EXIT_UNAVAILABLE,
                        format!("cannot create a key: SAM bridge at {} unavailable: {e}", c.sam),
                    )
                })?;
                keyfile::create(path, &k).map_err(|e| (EXIT_CONFIG, e.to_string()))?;
                k
            }
        };
        lines.push((format!("listener {ep}"), b32_of(&key, path)?));
    }
    if let Some(dir) = &c.key_dir {
        for (stem, key) in &files.users {
            lines.push((format!("user {stem}"), b32_of(key, &keydir::path(dir, stem))?));
        }
    }
    match lines.as_slice() {
        [(_, b32)] if c.key_dir.is_none() => println!("{b32}"),
        _ => {
            for (what, b32) in &lines {
                println!("{what} {b32}");
            }
        }
    }
    Ok(())
}

fn b32_of(key: &str, path: &std::path::Path) -> Result<String, Failure> {
    i2psocks::i2p_addr::b32_of_b64(key)
        .ok_or((EXIT_CONFIG, format!("key file {}: unreadable", path.display())))
}

fn init_logging(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.format(|buf, rec| {
        writeln!(buf, "i2psocks: {}: {}", rec.level().as_str().to_ascii_lowercase(), rec.args())
    });
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}

/// SESSION CREATE options from the flags: ours first, the user's after.
/// The encryption types are not among them: each build picks them after
/// HELLO (`sam::encryption`).
fn session_options(c: &Config) -> Vec<(String, String)> {
    let mut o: Vec<(String, String)> = vec![
        ("inbound.length".into(), c.hops.to_string()),
        ("outbound.length".into(), c.hops.to_string()),
        ("inbound.quantity".into(), c.tunnels.to_string()),
        ("outbound.quantity".into(), c.tunnels.to_string()),
    ];
    for (k, v) in &c.sam_options {
        // A user option replaces ours of the same key rather than repeating it.
        o.retain(|(ok, _)| ok != k);
        o.push((k.clone(), v.clone()));
    }
    o
}

fn run(config: Config, files: Files) -> Result<(), Failure> {
    let fail = |m: String| (EXIT_FAILURE, m);
    // Before anything is announced: a signal sent as soon as `listening on`
    // (or the destination) is logged must be caught, not kill us (SIGHUP's
    // default action is to terminate). Signals arriving now are queued.
    let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(|e| fail(format!("cannot install signal handlers: {e}")))?;
    // All bound before any is announced, so that a failure leaves no socket
    // behind (a Unix socket file is removed when its listener drops).
    let mut listeners = Vec::with_capacity(config.listen.len());
    for ep in &config.listen {
        let l = Listener::bind(ep, config.unix_mode).map_err(|e| match e {
            BindError::Config(m) => (EXIT_CONFIG, m),
            BindError::Other(m) => fail(m),
        })?;
        listeners.push(l);
    }
    let mut wakers = Vec::with_capacity(listeners.len());
    let mut names = Vec::with_capacity(listeners.len());
    for l in &listeners {
        let local = l.local().map_err(|e| fail(format!("cannot read the listening address: {e}")))?;
        wakers.push(l.waker());
        names.push(local.to_string());
    }
    for name in &names {
        info!("listening on {name}");
    }
    // Opened now: the sandbox allows no file opens later (see watch_signals).
    let spare = std::fs::File::open("/dev/null").ok();
    // A missing key file is created from the first session's key.
    let new_keyfiles: Vec<&std::path::Path> =
        files.listener_keys.iter().flatten().filter(|k| k.key.is_none()).map(|k| k.path.as_path()).collect();
    // Before the first thread starts: a ruleset binds the calling thread and
    // the threads it starts afterwards, not those already running.
    let plan = sandbox::plan(&config, &new_keyfiles);
    let applied = sandbox::apply(&plan, config.sandbox)
        .map_err(|e| (EXIT_CONFIG, format!("--sandbox require: {e}")))?;
    let sandbox_line = sandbox::summary(&plan, &applied);
    match &applied {
        Applied::NotApplied { .. } if config.sandbox == Sandbox::Auto => warn!("{sandbox_line}"),
        _ => info!("{sandbox_line}"),
    }

    if config.key_dir.is_some() && config.auth_file.is_none() {
        warn!(
            "--key-dir without --auth-file: any program that can connect and sends a user name gets \
             that name's persistent identity (add --auth-file, or listen on a Unix socket with a tight --unix-mode)"
        );
    }
    let options = session_options(&config);
    let encryption = Arc::new(Encryption::new(config.encryption));
    let recipe = Recipe {
        default: SessionSpec {
            sam: config.sam,
            destination: "TRANSIENT".into(),
            options: options.clone(),
            encryption: Arc::clone(&encryption),
            label: "default identity".into(),
            limit_warnings: false,
        },
        // A missing key file is created from its identity's first session's key.
        listener_keys: files.listener_keys,
        key_dir: config.key_dir.clone(),
        preload: files.users.into_iter().map(|(stem, _)| stem).collect(),
        datagram: DgSpec { sam: config.sam, sam_udp: config.sam_udp_addr(), options, encryption },
        max_sessions: config.max_sessions,
        idle_timeout: config.session_idle_timeout,
        linger: config.session_linger,
        spare_sessions: config.spare_sessions,
    };
    let identities =
        Identities::start(recipe).map_err(|e| fail(format!("cannot start the SAM session thread: {e}")))?;
    identities.spawn_reaper().map_err(|e| fail(format!("cannot start a thread: {e}")))?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        identities: Arc::clone(&identities),
        auth: files.auth,
        stop: AtomicBool::new(false),
        // A random first address: one a program kept from an earlier run of
        // the proxy is then unlikely to belong to another name now.
        virtual_net: Mutex::new(VirtualMap::new(
            config.virtual_net,
            u64::from_le_bytes(i2psocks::rand::random_bytes::<8>()),
        )),
    });

    let stopping = Arc::new(AtomicBool::new(false));
    let wake_started = wakers.clone();
    let status =
        Arc::new(Reporter::new(config.sam, config.max_clients, Arc::clone(&identities), sandbox_line));
    let watch = Watch {
        stopping: Arc::clone(&stopping),
        wakers,
        ids: Arc::clone(&identities),
        status: Arc::clone(&status),
        spare,
    };
    watch_signals(signals, watch).map_err(fail)?;

    HOLDS.set_limit(config.half_close_max);
    let worker_shared = Arc::clone(&shared);
    let pool = Pool::new(config.max_clients, move |(c, n): (Client, usize)| {
        proxy::serve(c, n, &worker_shared);
        bump(&COUNTERS.clients_ended);
    });

    // One blocking accept loop per listener, all feeding the one pool. Each
    // owns its listener, so the socket closes (and a Unix socket file goes)
    // as soon as its loop ends.
    let started = thread::scope(|scope| {
        for (n, (mut listener, name)) in listeners.into_iter().zip(&names).enumerate() {
            let (pool, stop, max) = (&pool, &*stopping, config.max_clients);
            let spawned = thread::Builder::new()
                .name(format!("accept {}", n + 1))
                .spawn_scoped(scope, move || accept_loop(&mut listener, n, name, pool, stop, max));
            if let Err(e) = spawned {
                // Without all its listeners the proxy does not run: end the
                // loops already started, as SIGTERM would.
                error!("cannot start an accept thread: {e}");
                stopping.store(true, Ordering::SeqCst);
                for w in &wake_started {
                    let _ = w.poke();
                }
                return Err(format!("cannot start an accept thread: {e}"));
            }
        }
        Ok(())
    });
    info!("shutting down: waiting up to {} s for {} client(s)", config.shutdown_grace.as_secs(), pool.busy());
    if !pool.wait_idle(Instant::now() + config.shutdown_grace) {
        shared.stop.store(true, Ordering::SeqCst);
        // Held relays sleep until their hold ends: wake them for the stop.
        HOLDS.end_all();
        if !pool.wait_idle(Instant::now() + STOP_WAIT) {
            error!("{} client(s) still running at exit", pool.busy());
        }
    }
    status.log();
    identities.close_all();
    info!("stopped");
    started.map_err(fail)
}

/// Accept clients of listener `n` (`name` in logs) and hand them to the
/// pool until `stopping` is set (then woken: [`Wake`]).
fn accept_loop(
    listener: &mut Listener,
    n: usize,
    name: &str,
    pool: &Pool<(Client, usize)>,
    stopping: &AtomicBool,
    max_clients: usize,
) {
    let mut overload_log = RateLimit::new(LOG_INTERVAL);
    let mut accept_log = RateLimit::new(LOG_INTERVAL);
    loop {
        let conn = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(client) => match submit_or_make_room(pool, (client, n)) {
                Ok(()) => bump(&COUNTERS.clients),
                Err((client, _)) => {
                    bump(&COUNTERS.refused_overload);
                    if let Some(more) = overload_log.due(Instant::now()) {
                        let more = held_back_suffix(more);
                        warn!("too many clients (--max-clients {max_clients}): refusing new ones{more}");
                    }
                    let _ = client.shutdown(Shutdown::Both);
                }
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like last as long as the clients holding
                // the descriptors: one line per interval, not one per pause.
                if let Some(more) = accept_log.due(Instant::now()) {
                    let more = held_back_suffix(more);
                    warn!("accept failed on {name}: {e}; pausing{more}");
                }
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
}

/// Hand `job` to the pool. With every place taken, the oldest held
/// half-close is passed on and its place waited for (at most [`ROOM_WAIT`]);
/// with nothing held, the job comes back at once. Once fewer places than
/// the reserve ([`RESERVE_DIVISOR`]) are left free, each client admitted
/// has the oldest hold passed on too, so that the next finds a place
/// without waiting.
fn submit_or_make_room<T: Send + 'static>(pool: &Pool<T>, job: T) -> Result<(), T> {
    let job = match pool.submit(job) {
        Ok(()) => {
            if pool.busy() + pool.max() / RESERVE_DIVISOR > pool.max() {
                HOLDS.release_oldest();
            }
            return Ok(());
        }
        Err(job) => job,
    };
    if !HOLDS.release_oldest() || !pool.wait_room(Instant::now() + ROOM_WAIT) {
        return Err(job);
    }
    pool.submit(job)
}

/// SIGTERM/SIGINT: flag the stop and wake each listener's blocking accept
/// ([`Wake`]). SIGHUP: new identities for new streams.
/// SIGUSR1: the status report.
/// What the signal thread acts on.
struct Watch {
    stopping: Arc<AtomicBool>,
    wakers: Vec<Wake>,
    ids: Arc<Identities>,
    status: Arc<Reporter>,
    /// A wake-up connection needs an fd. When idle clients hold every one
    /// (EMFILE) and none is pending, accept blocks and would never see the
    /// stop: one fd is kept in reserve and given back just before
    /// connecting. The wake-ups are made one after the other, each closed
    /// before the next, so one fd serves them all.
    spare: Option<std::fs::File>,
}

fn watch_signals(mut signals: signal_hook::iterator::Signals, watch: Watch) -> Result<(), String> {
    let Watch { stopping, wakers, ids, status, mut spare } = watch;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    if let Err(e) = ids.retire_transient() {
                        error!("cannot make a new identity: {e}");
                    }
                    continue;
                }
                if sig == SIGUSR1 {
                    status.log();
                    continue;
                }
                stopping.store(true, Ordering::SeqCst);
                drop(spare.take());
                for w in &wakers {
                    // Another thread may take the freed fd first; then wait
                    // for the next one rather than leave accept blocked.
                    while w.poke().is_err() {
                        thread::sleep(WAKE_RETRY);
                    }
                }
                return;
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
