//! i2psocks: flags → logging → bind → SAM session → worker pool → accept
//! loop, and the orderly shutdown on SIGTERM/SIGINT.
//!
//! Startup failures print one line `i2psocks: <what failed>` on stderr and
//! exit non-zero: 64 for usage errors, 1 for anything else.

use i2psocks::cli::{self, Command, Config};
use i2psocks::pool::Pool;
use i2psocks::sam::client::{Session, SessionSpec};
use i2psocks::server::{self, Shared};
use log::{error, info, warn, LevelFilter};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// sysexits(3) EX_USAGE.
const EXIT_USAGE: u8 = 64;
const EXIT_FAILURE: u8 = 1;
/// After an accept error (EMFILE and the like) wait this long before the
/// next accept instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one "too many clients" warning per this interval.
const OVERLOAD_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// After the grace period, how long stopped relays get to unwind.
const STOP_WAIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match cli::parse(&args) {
        Ok(Command::Run(c)) => c,
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
    init_logging(config.verbosity);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("i2psocks: {msg}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
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
        writeln!(
            buf,
            "i2psocks: {}: {}",
            rec.level().as_str().to_ascii_lowercase(),
            rec.args()
        )
    });
    b.target(env_logger::Target::Stderr);
    let _ = b.try_init();
}

/// SESSION CREATE options from the flags: ours first, the user's after.
fn session_options(c: &Config) -> Vec<(String, String)> {
    let mut o: Vec<(String, String)> = vec![
        ("inbound.length".into(), c.hops.to_string()),
        ("outbound.length".into(), c.hops.to_string()),
        ("inbound.quantity".into(), c.tunnels.to_string()),
        ("outbound.quantity".into(), c.tunnels.to_string()),
        ("i2cp.leaseSetEncType".into(), "4,0".into()),
    ];
    for (k, v) in &c.sam_options {
        // A user option replaces ours of the same key rather than repeating it.
        o.retain(|(ok, _)| ok != k);
        o.push((k.clone(), v.clone()));
    }
    o
}

fn run(config: Config) -> Result<(), String> {
    let listener = TcpListener::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    info!("listening on {local}");

    let spec = SessionSpec {
        sam: config.sam,
        destination: "TRANSIENT".into(),
        options: session_options(&config),
        label: "default identity".into(),
    };
    let session =
        Session::spawn(spec).map_err(|e| format!("cannot start the SAM session thread: {e}"))?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        session,
        stop: AtomicBool::new(false),
    });

    let stopping = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stopping), local)?;

    let worker_shared = Arc::clone(&shared);
    let pool = Pool::new(config.max_clients, move |s: TcpStream| {
        server::serve(s, &worker_shared)
    });

    let mut last_overload_log: Option<Instant> = None;
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                if let Err(stream) = pool.submit(stream) {
                    if last_overload_log.map_or(true, |t| t.elapsed() >= OVERLOAD_LOG_INTERVAL) {
                        warn!(
                            "too many clients (--max-clients {}): refusing new ones",
                            config.max_clients
                        );
                        last_overload_log = Some(Instant::now());
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                warn!("accept failed: {e}; pausing");
                thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
    drop(listener);
    info!(
        "shutting down: waiting up to {} s for {} client(s)",
        config.shutdown_grace.as_secs(),
        pool.busy()
    );
    if !pool.wait_idle(Instant::now() + config.shutdown_grace) {
        shared.stop.store(true, Ordering::SeqCst);
        if !pool.wait_idle(Instant::now() + STOP_WAIT) {
            error!("{} client(s) still running at exit", pool.busy());
        }
    }
    shared.session.close();
    info!("stopped");
    Ok(())
}

/// SIGTERM/SIGINT: flag the stop and wake the blocking accept with a
/// connection to ourselves.
fn watch_signals(stopping: Arc<AtomicBool>, local: SocketAddr) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let wake = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port())
        }
        _ => local,
    };
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stopping.store(true, Ordering::SeqCst);
                let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}
