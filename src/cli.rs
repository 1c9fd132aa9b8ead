//! Command-line flags → [`Config`]. Flags are the only configuration (no
//! config file, no environment except RUST_LOG for logging). Every number is
//! range-checked and every address is numeric: parsing never resolves a name.
//!
//! The usage line here is the man page's SYNOPSIS; keep them identical.

use crate::identity::Isolate;
use crate::listen::{unix, Endpoint};
use crate::sam::encryption::{self, Mode};
use crate::sam::linger::UNENDED_STREAM_HOLD;
use crate::sam::proto::{is_safe_key, is_safe_value};
use crate::spares::MAX_SPARES;
use crate::virtual_net::{self, Cidr};
use getopts::Options;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The usage line, identical to SYNOPSIS in man/i2psocks.8.
pub const USAGE: &str = "usage: i2psocks [-hqVv] [--allow-remote] [--check] [--prefer-no-auth] \
[--print-address] [-l addr:port|unix:path[,key=file]] [--unix-mode mode] [-s addr:port] [--sam-udp addr:port] \
[-k keyfile] [--key-dir dir] [--auth-file file] [--isolate none|auth|client] [--max-clients n] [--max-sessions n] [--spare-sessions n] \
[--handshake-timeout secs] [--connect-timeout secs] [--idle-timeout secs] [--half-close-wait secs] [--half-close-max n] \
[--session-idle-timeout secs] [--session-linger secs] [--shutdown-grace secs] [--hops n] [--tunnels n] \
[--encryption auto|pq|classic] [--sam-option key=value] [--virtual-net cidr] [--sandbox auto|require|off]";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:4447";
pub const DEFAULT_SAM: &str = "127.0.0.1:7656";

/// How long the I2P side must stay silent before a client's half-close is
/// passed on (`--half-close-wait`). The silence before an answer's first byte
/// is a round trip plus the server's own time, and a round trip over 3-hop
/// tunnels crosses 12 routers; 5 s leaves room for that with margin, while an
/// echo-style client that waits for the server's close is kept waiting no
/// more than this. Seconds. See the man page for the trade-off.
pub const DEFAULT_HALF_CLOSE_WAIT: u64 = 5;

/// Half-closes held at once, at most (`--half-close-max`); one more passes
/// the oldest on. Each hold keeps a worker thread asleep, and under a
/// stream of short connections that close first the holds turn over as fast
/// as clients arrive: with every place holding (1,008 of 1,024), each cycle
/// woke a thread that had slept through a thousand others, and `make bench`'s
/// 8-client cycles ran at 0.84x the rate of `--half-close-wait 0`; with 64
/// holds at 0.93x, with 16 at 1.00x (9 runs each, side by side). Sixteen
/// clients waiting at once for answers after their half-close is more than
/// the scripted clients that half-close (nc -N, socat) usually run.
pub const DEFAULT_HALF_CLOSE_MAX: usize = 16;

/// Written between a `-l` endpoint and its key file.
pub const LISTEN_KEY: &str = ",key=";

/// Most `-l` flags accepted: each listener has an accept thread and a
/// default identity (a SAM session) of its own.
pub const MAX_LISTENERS: usize = 16;

/// `--max-clients` by default: room for a thousand held connections, which
/// cost about 11 MiB (`make bench`: 10.7 KiB of RSS each, their worker
/// thread included), and three descriptors each (see the man page).
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// Most `--sam-option` flags accepted (each becomes part of one SAM line).
pub const MAX_SAM_OPTIONS: usize = 64;
/// Longest `--sam-option` KEY=VALUE accepted.
pub const MAX_SAM_OPTION_LEN: usize = 512;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    /// `--check`: validate flags and files, reach the bridge, exit.
    Check(Config),
    /// `--print-address`: print the persistent identities' b32s, exit.
    PrintAddress(Config),
    Help,
    Version,
}

/// The proxy's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// In command-line order.
    pub listen: Vec<Endpoint>,
    /// Beside `listen`, one per listener: the key file of its default
    /// identity (`-l ...,key=FILE`; `--keyfile` is the first listener's).
    pub listen_keys: Vec<Option<PathBuf>>,
    /// `--key-dir`: keys of the identities selected by user name. The one
    /// place the proxy writes to at run time besides the listeners' key
    /// files (a sandbox must allow it).
    pub key_dir: Option<PathBuf>,
    /// Mode of the Unix socket files.
    pub unix_mode: u32,
    pub sam: SocketAddr,
    /// The bridge's datagram port; None: SAM's address with port - 1.
    pub sam_udp: Option<SocketAddr>,
    pub max_clients: usize,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// Zero means never.
    pub idle_timeout: Duration,
    /// Silence from the I2P side before a client's half-close is passed on;
    /// zero means at once.
    pub half_close_wait: Duration,
    /// Half-closes held at once; zero holds none.
    pub half_close_max: usize,
    pub shutdown_grace: Duration,
    pub hops: u8,
    pub tunnels: u8,
    /// Extra SESSION CREATE options, validated to be safe on the wire.
    pub sam_options: Vec<(String, String)>,
    /// -v count minus -q count: 0 = info.
    pub verbosity: i8,
    /// SOCKS5 users and passwords; when set, clients must authenticate.
    pub auth_file: Option<PathBuf>,
    pub isolate: Isolate,
    pub prefer_no_auth: bool,
    pub max_sessions: usize,
    /// Zero means never.
    pub session_idle_timeout: Duration,
    /// How long a closed identity's session stays open on the router after
    /// a stream the router did not end (src/sam/linger.rs); zero: not at all.
    pub session_linger: Duration,
    /// Where RESOLVE's addresses for I2P names come from.
    pub virtual_net: Cidr,
    /// Sessions built ahead of need for new identities.
    pub spare_sessions: usize,
    /// Which encryption types sessions ask for (`AsGiven` when a
    /// `--sam-option` names them).
    pub encryption: Mode,
    /// Whether the process restricts itself once started (`sandbox`).
    pub sandbox: Sandbox,
}

/// `--sandbox`: Landlock and no new privileges after start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// What the kernel supports; the start-up line says what that was.
    Auto,
    /// All of it, or exit 78 with the reason (an audited deployment fails closed).
    Require,
    /// None (debugging); logged.
    Off,
}

impl Config {
    /// Whether any identity keeps its key: a listener's or `--key-dir`.
    pub fn has_persistent(&self) -> bool {
        self.key_dir.is_some() || self.listen_keys.iter().any(Option::is_some)
    }

    /// Where datagrams for the bridge go: `--sam-udp`, or the SAM address
    /// with its port minus one (where i2pd and Java I2P put it by default).
    pub fn sam_udp_addr(&self) -> SocketAddr {
        self.sam_udp.unwrap_or_else(|| SocketAddr::new(self.sam.ip(), self.sam.port().saturating_sub(1)))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 4447)))],
            listen_keys: vec![None],
            key_dir: None,
            unix_mode: unix::DEFAULT_MODE,
            sam: SocketAddr::from(([127, 0, 0, 1], 7656)),
            sam_udp: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            handshake_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(1800),
            half_close_wait: Duration::from_secs(DEFAULT_HALF_CLOSE_WAIT),
            half_close_max: DEFAULT_HALF_CLOSE_MAX,
            shutdown_grace: Duration::from_secs(5),
            hops: 3,
            tunnels: 2,
            sam_options: Vec::new(),
            verbosity: 0,
            auth_file: None,
            isolate: Isolate::Auth,
            prefer_no_auth: false,
            max_sessions: 32,
            session_idle_timeout: Duration::from_secs(600),
            session_linger: UNENDED_STREAM_HOLD,
            virtual_net: virtual_net::DEFAULT,
            spare_sessions: 1,
            encryption: Mode::Auto,
            sandbox: Sandbox::Auto,
        }
    }
}

/// A usage error: one line for stderr; exit status 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn options() -> Options {
    let mut o = Options::new();
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o.optflagmulti("v", "verbose", "more logging (-v debug, -vv trace)");
    o.optflagmulti("q", "quiet", "less logging (warnings and errors only)");
    o.optflag(
        "",
        "allow-remote",
        "allow a non-loopback --listen address, or a --unix-mode that lets others connect",
    );
    o.optflag("", "check", "check the flags, files and SAM bridge, then exit");
    o.optflag("", "prefer-no-auth", "pick no-auth when a client offers it and username/password");
    o.optflag(
        "",
        "print-address",
        "print each persistent identity's .b32.i2p address (creating listeners' keys) and exit",
    );
    o.optopt(
        "k",
        "keyfile",
        "persistent private key of the first listener's default identity (created if missing)",
        "FILE",
    );
    o.optopt(
        "",
        "key-dir",
        "keep the key of each identity selected by a user name in DIR (created if missing)",
        "DIR",
    );
    o.optopt("", "auth-file", "require SOCKS5 username/password from FILE (lines user:password)", "FILE");
    o.optopt("", "isolate", "identity per: none, auth (credentials; default) or client (connection)", "MODE");
    o.optopt("", "max-sessions", "I2P identities (SAM sessions) at once, 1-1024 (default 32)", "N");
    o.optopt(
        "",
        "spare-sessions",
        "sessions built ahead for new identities, 0-16, within --max-sessions (default 1)",
        "N",
    );
    o.optopt(
        "",
        "session-idle-timeout",
        "close identities unused this long, 0-604800, 0 = never (default 600)",
        "SECS",
    );
    o.optopt(
        "",
        "session-linger",
        "keep a closed identity's SAM session open this long after a stream its router did not end, \
         0-7200 (default 3660)",
        "SECS",
    );
    o.optmulti(
        "l",
        "listen",
        "SOCKS listen address, or unix:/path; repeatable, up to 16, each with its own default identity, \
         persistent with ,key=FILE (default 127.0.0.1:4447; port 0 picks one)",
        "ADDR:PORT",
    );
    o.optopt("", "unix-mode", "mode of unix: listener sockets, octal 0600-0777 (default 0600)", "MODE");
    o.optopt("s", "sam", "SAM v3 bridge address (default 127.0.0.1:7656)", "ADDR:PORT");
    o.optopt(
        "",
        "sam-udp",
        "SAM datagram (UDP) port of the bridge (default: the SAM port minus 1)",
        "ADDR:PORT",
    );
    o.optopt("", "max-clients", "concurrent clients, 1-10000 (default 1024)", "N");
    o.optopt("", "handshake-timeout", "whole SOCKS handshake deadline, 1-3600 (default 30)", "SECS");
    o.optopt("", "connect-timeout", "I2P stream connect deadline, 1-3600 (default 120)", "SECS");
    o.optopt("", "idle-timeout", "close relays idle this long, 0-604800, 0 = never (default 1800)", "SECS");
    o.optopt(
        "",
        "half-close-wait",
        "pass a client's half-close on once I2P is silent this long, 0-600, 0 = at once (default 5)",
        "SECS",
    );
    o.optopt(
        "",
        "half-close-max",
        "half-closes held at once, 0-10000, beyond it the oldest goes on (default 16)",
        "N",
    );
    o.optopt("", "shutdown-grace", "on SIGTERM let relays finish this long, 0-600 (default 5)", "SECS");
    o.optopt("", "hops", "tunnel length, inbound and outbound, 0-7 (default 3)", "N");
    o.optopt("", "tunnels", "tunnel quantity, inbound and outbound, 1-16 (default 2)", "N");
    o.optopt(
        "",
        "encryption",
        "lease set encryption: auto (post-quantum where the bridge speaks SAM 3.3), pq or classic (default auto)",
        "MODE",
    );
    o.optopt(
        "",
        "sandbox",
        "Landlock sandbox once started: auto (what the kernel allows), require or off (default auto)",
        "MODE",
    );
    o.optmulti("", "sam-option", "extra SAM SESSION CREATE option (repeatable)", "KEY=VALUE");
    o.optopt(
        "",
        "virtual-net",
        "IPv4 range RESOLVE takes .i2p names' addresses from, /1-/24, not in 0/8, 127/8 or 224/3 \
         (default 10.192.0.0/10)",
        "CIDR",
    );
    o
}

/// The text `-h` prints: the usage line and one line per flag.
pub fn help() -> String {
    options().usage(USAGE)
}

/// Parse the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let m = options().parse(args).map_err(|e| UsageError(e.to_string()))?;
    if m.opt_present("h") {
        return Ok(Command::Help);
    }
    if m.opt_present("V") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(UsageError(format!("unexpected argument '{extra}'")));
    }
    let mut c =
        Config { verbosity: clamp_i8(m.opt_count("v")) - clamp_i8(m.opt_count("q")), ..Config::default() };
    let given = m.opt_strs("l");
    if given.len() > MAX_LISTENERS {
        return Err(UsageError(format!("at most {MAX_LISTENERS} --listen flags")));
    }
    if !given.is_empty() {
        (c.listen, c.listen_keys) = listen(&given)?;
    }
    if let Some(s) = m.opt_str("s") {
        c.sam = addr("--sam", &s)?;
    }
    if let Some(s) = m.opt_str("sam-udp") {
        c.sam_udp = Some(addr("--sam-udp", &s)?);
    }
    let allow_remote = m.opt_present("allow-remote");
    for ep in &c.listen {
        if let Endpoint::Tcp(a) = ep {
            if !a.ip().is_loopback() && !allow_remote {
                return Err(UsageError(format!(
                    "--listen {a} is not a loopback address: anyone who can reach it could use this proxy; add --allow-remote if that is intended"
                )));
            }
        }
    }
    if let Some(s) = m.opt_str("unix-mode") {
        if !c.listen.iter().any(|e| matches!(e, Endpoint::Unix(_))) {
            return Err(UsageError("--unix-mode needs a --listen unix:/path".into()));
        }
        c.unix_mode = unix_mode(&s)?;
        if c.unix_mode & 0o007 != 0 && !allow_remote {
            return Err(UsageError(format!(
                "--unix-mode {s} lets every local user connect; add --allow-remote if that is intended"
            )));
        }
    }
    if let Some(n) = num(&m, "max-clients", 1, 10_000)? {
        c.max_clients = n as usize;
    }
    if let Some(n) = num(&m, "handshake-timeout", 1, 3600)? {
        c.handshake_timeout = Duration::from_secs(n);
    }
    if let Some(n) = num(&m, "connect-timeout", 1, 3600)? {
        c.connect_timeout = Duration::from_secs(n);
    }
    if let Some(n) = num(&m, "idle-timeout", 0, 604_800)? {
        c.idle_timeout = Duration::from_secs(n);
    }
    if let Some(n) = num(&m, "half-close-wait", 0, 600)? {
        c.half_close_wait = Duration::from_secs(n);
    }
    if let Some(n) = num(&m, "half-close-max", 0, 10_000)? {
        c.half_close_max = n as usize;
    }
    if let Some(n) = num(&m, "shutdown-grace", 0, 600)? {
        c.shutdown_grace = Duration::from_secs(n);
    }
    if let Some(n) = num(&m, "hops", 0, 7)? {
        c.hops = n as u8;
    }
    if let Some(n) = num(&m, "tunnels", 1, 16)? {
        c.tunnels = n as u8;
    }
    if let Some(n) = num(&m, "max-sessions", 1, 1024)? {
        c.max_sessions = n as usize;
    }
    if let Some(n) = num(&m, "session-idle-timeout", 0, 604_800)? {
        c.session_idle_timeout = Duration::from_secs(n);
    }
    if let Some(n) = num(&m, "session-linger", 0, 7200)? {
        c.session_linger = Duration::from_secs(n);
    }
    if let Some(s) = m.opt_str("virtual-net") {
        c.virtual_net = Cidr::parse(&s).map_err(|e| UsageError(format!("--virtual-net '{s}': {e}")))?;
    }
    if let Some(n) = num(&m, "spare-sessions", 0, MAX_SPARES as u64)? {
        c.spare_sessions = n as usize;
    }
    if let Some(k) = m.opt_str("k") {
        match c.listen_keys.first_mut() {
            Some(slot @ None) => *slot = Some(key_path("--keyfile", &k)?),
            _ => {
                return Err(UsageError(
                    "--keyfile is the first listener's key: give it once (-k or ,key=)".into(),
                ))
            }
        }
    }
    distinct_keys(&c.listen_keys)?;
    c.key_dir = m.opt_str("key-dir").map(|d| key_path("--key-dir", &d)).transpose()?;
    c.auth_file = m.opt_str("auth-file").map(PathBuf::from);
    c.prefer_no_auth = m.opt_present("prefer-no-auth");
    if c.prefer_no_auth && c.auth_file.is_some() {
        return Err(UsageError(
            "--prefer-no-auth conflicts with --auth-file (authentication is required)".into(),
        ));
    }
    if let Some(mode) = m.opt_str("isolate") {
        c.isolate = match mode.as_str() {
            "none" => Isolate::None,
            "auth" => Isolate::Auth,
            "client" => Isolate::Client,
            _ => return Err(UsageError(format!("--isolate '{mode}': expected none, auth or client"))),
        };
    }
    if c.key_dir.is_some() && c.isolate != Isolate::Auth {
        return Err(UsageError("--key-dir needs --isolate auth (identities by user name)".into()));
    }
    let opts = m.opt_strs("sam-option");
    if opts.len() > MAX_SAM_OPTIONS {
        return Err(UsageError(format!("at most {MAX_SAM_OPTIONS} --sam-option flags")));
    }
    for o in opts {
        c.sam_options.push(sam_option(&o)?);
    }
    c.encryption = encryption_mode(m.opt_str("encryption"), &c.sam_options)?;
    if let Some(mode) = m.opt_str("sandbox") {
        c.sandbox = match mode.as_str() {
            "auto" => Sandbox::Auto,
            "require" => Sandbox::Require,
            "off" => Sandbox::Off,
            _ => return Err(UsageError(format!("--sandbox '{mode}': expected auto, require or off"))),
        };
    }
    let check = m.opt_present("check");
    let print = m.opt_present("print-address");
    match (check, print) {
        (true, true) => Err(UsageError("--check and --print-address are exclusive".into())),
        (true, false) => Ok(Command::Check(c)),
        (false, true) if !c.has_persistent() => Err(UsageError(
            "--print-address needs --keyfile, a -l ...,key=FILE or --key-dir (a transient identity has no lasting address)"
                .into(),
        )),
        (false, true) => Ok(Command::PrintAddress(c)),
        (false, false) => Ok(Command::Run(c)),
    }
}

/// `--encryption`, or `AsGiven` when a `--sam-option` names the types
/// itself; both at once is a conflict (which one should win is not ours to
/// guess).
fn encryption_mode(flag: Option<String>, sam_options: &[(String, String)]) -> Result<Mode, UsageError> {
    let given = sam_options.iter().any(|(k, _)| k.eq_ignore_ascii_case(encryption::OPTION));
    let mode = match flag.as_deref() {
        None if given => return Ok(Mode::AsGiven),
        None | Some("auto") => Mode::Auto,
        Some("pq") => Mode::Pq,
        Some("classic") => Mode::Classic,
        Some(other) => {
            return Err(UsageError(format!("--encryption '{other}': expected auto, pq or classic")))
        }
    };
    if given {
        return Err(UsageError(format!(
            "--encryption conflicts with --sam-option {}=...: give one of them",
            encryption::OPTION
        )));
    }
    Ok(mode)
}

fn clamp_i8(n: usize) -> i8 {
    i8::try_from(n.min(8)).unwrap_or(8)
}

fn addr(flag: &str, s: &str) -> Result<SocketAddr, UsageError> {
    s.parse().map_err(|_| {
        UsageError(format!("{flag} '{s}': expected a numeric ADDR:PORT such as 127.0.0.1:4447 or [::1]:4447"))
    })
}

/// The `-l` values: parsed, each with its key file if it names one, and
/// none given twice (a fixed port or a path can be bound once; the second
/// bind would fail with a misleading error).
fn listen(values: &[String]) -> Result<(Vec<Endpoint>, Vec<Option<PathBuf>>), UsageError> {
    let mut out: Vec<Endpoint> = Vec::with_capacity(values.len());
    let mut keys = Vec::with_capacity(values.len());
    for s in values {
        // The key sits on the listener's own flag, so that it cannot be
        // paired with another listener by a reordered or missing flag.
        let (at, key) = match s.split_once(LISTEN_KEY) {
            Some((at, k)) => (at, Some(key_path("--listen ...,key=", k)?)),
            None => (s.as_str(), None),
        };
        let ep = Endpoint::parse(at).map_err(|e| UsageError(format!("--listen {e}")))?;
        let fixed = !matches!(&ep, Endpoint::Tcp(a) if a.port() == 0);
        if fixed && out.contains(&ep) {
            return Err(UsageError(format!("--listen {ep} is given twice")));
        }
        out.push(ep);
        keys.push(key);
    }
    Ok((out, keys))
}

/// A key file's or the key directory's path: not empty, no NUL.
fn key_path(flag: &str, s: &str) -> Result<PathBuf, UsageError> {
    if s.is_empty() || s.contains('\0') {
        return Err(UsageError(format!("{flag}: expected a file name")));
    }
    Ok(PathBuf::from(s))
}

/// One key in two sessions at once is refused by the routers (and would be
/// one address for two listeners): every listener's key file differs.
fn distinct_keys(keys: &[Option<PathBuf>]) -> Result<(), UsageError> {
    let given: Vec<&PathBuf> = keys.iter().flatten().collect();
    for (n, k) in given.iter().enumerate() {
        if given.iter().skip(n + 1).any(|o| o == k) {
            return Err(UsageError(format!("key file {} is given for two listeners", k.display())));
        }
    }
    Ok(())
}

/// An octal socket mode: the owner must keep read and write (else the
/// proxy's own user could not connect), and nothing beyond 0777.
fn unix_mode(s: &str) -> Result<u32, UsageError> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 && m & 0o600 == 0o600 => Ok(m),
        _ => Err(UsageError(format!(
            "--unix-mode '{s}': expected an octal mode from 0600 to 0777 that keeps the owner's read and write"
        ))),
    }
}

fn num(m: &getopts::Matches, name: &str, lo: u64, hi: u64) -> Result<Option<u64>, UsageError> {
    let Some(s) = m.opt_str(name) else {
        return Ok(None);
    };
    match s.parse::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(UsageError(format!("--{name} '{s}': expected a whole number from {lo} to {hi}"))),
    }
}

/// Keys and values that SAM reserves for us, or that would change what the
/// proxy is (its identity or its tunnels are set by their own flags).
const RESERVED_KEYS: &[&str] = &[
    "STYLE",
    "ID",
    "DESTINATION",
    "SIGNATURE_TYPE",
    "PORT",
    "HOST",
    "FROM_PORT",
    "TO_PORT",
    "PROTOCOL",
    "SILENT",
];

fn sam_option(s: &str) -> Result<(String, String), UsageError> {
    let bad = || {
        UsageError(format!(
            "--sam-option '{}': expected KEY=VALUE with KEY of [A-Za-z0-9._-] and VALUE of [A-Za-z0-9._~=+/,-]",
            s.escape_debug()
        ))
    };
    if s.len() > MAX_SAM_OPTION_LEN {
        return Err(bad());
    }
    let (k, v) = s.split_once('=').ok_or_else(bad)?;
    if !is_safe_key(k) || !is_safe_value(v) {
        return Err(bad());
    }
    if RESERVED_KEYS.iter().any(|r| r.eq_ignore_ascii_case(k)) {
        return Err(UsageError(format!("--sam-option: {k} is set by i2psocks itself")));
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    fn run(args: &[&str]) -> Result<Config, UsageError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&v)? {
            Command::Run(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].to_string(), DEFAULT_LISTEN);
        assert_eq!(c.unix_mode, 0o600);
        assert_eq!(c.sam.to_string(), DEFAULT_SAM);
        assert!(c.connect_timeout >= Duration::from_secs(90));
        assert_eq!(c.sam_udp_addr().to_string(), "127.0.0.1:7655");
        assert_eq!(c.half_close_wait, Duration::from_secs(DEFAULT_HALF_CLOSE_WAIT));
        let h = help().split_whitespace().collect::<Vec<_>>().join(" ");
        let entry = h.split("--half-close-wait SECS ").nth(1).unwrap().split(" --").next().unwrap();
        assert!(entry.contains(&format!("(default {DEFAULT_HALF_CLOSE_WAIT})")), "{entry}");
        assert_eq!(c.half_close_max, DEFAULT_HALF_CLOSE_MAX);
        let entry = h.split("--half-close-max N ").nth(1).unwrap().split(" --").next().unwrap();
        assert!(entry.contains(&format!("(default {DEFAULT_HALF_CLOSE_MAX})")), "{entry}");
    }

    #[test]
    fn flags() {
        let c = run(&[
            "-l",
            "127.0.0.1:0",
            "-s",
            "[::1]:7000",
            "--max-clients",
            "3",
            "--hops",
            "0",
            "--tunnels",
            "1",
            "--idle-timeout",
            "0",
            "--half-close-wait",
            "0",
            "--sam-option",
            "inbound.lengthVariance=0",
            "-vv",
            "-q",
        ])
        .unwrap();
        assert_eq!(c.listen, vec![Endpoint::Tcp("127.0.0.1:0".parse().unwrap())]);
        assert_eq!(c.sam.to_string(), "[::1]:7000");
        assert_eq!(c.sam_udp_addr().to_string(), "[::1]:6999");
        assert_eq!(c.max_clients, 3);
        assert_eq!((c.hops, c.tunnels), (0, 1));
        assert_eq!(c.idle_timeout, Duration::ZERO);
        assert_eq!(c.half_close_wait, Duration::ZERO);
        assert_eq!(c.sam_options, vec![("inbound.lengthVariance".into(), "0".into())]);
        assert_eq!(c.verbosity, 1);

        let c = run(&["-s", "127.0.0.1:7000", "--sam-udp", "127.0.0.2:9"]).unwrap();
        assert_eq!(c.sam_udp_addr().to_string(), "127.0.0.2:9");

        let c = run(&["--half-close-max", "0"]).unwrap();
        assert_eq!(c.half_close_max, 0);
        let c = run(&["--half-close-max", "10000"]).unwrap();
        assert_eq!(c.half_close_max, 10_000);

        let c = run(&["--half-close-wait", "600"]).unwrap();
        assert_eq!(c.half_close_wait, Duration::from_secs(600));

        assert_eq!(c.virtual_net.to_string(), virtual_net::DEFAULT_NET);
        let c = run(&["--virtual-net", "172.16.0.0/12"]).unwrap();
        assert_eq!(c.virtual_net.to_string(), "172.16.0.0/12");
    }

    #[test]
    fn refusals() {
        for args in [
            &["--max-clients", "0"][..],
            &["--max-clients", "10001"],
            &["--hops", "8"],
            &["--hops", "-1"],
            &["--tunnels", "0"],
            &["--handshake-timeout", "0"],
            &["--connect-timeout", "x"],
            &["--half-close-wait", "601"],
            &["--half-close-max", "10001"],
            &["--half-close-max", "-1"],
            &["--half-close-wait", "-1"],
            &["--half-close-wait", "1.5"],
            &["-l", "0.0.0.0:4447"],
            &["-l", "localhost:4447"],
            &["-l", "127.0.0.1"],
            &["-s", "example.com:7656"],
            &["--sam-udp", "localhost:7655"],
            &["--sam-udp", "7655"],
            &["--sam-option", "a=b c"],
            &["--sam-option", "bad"],
            &["--sam-option", "a=\"x\""],
            &["--sam-option", "a=b\nSTREAM"],
            &["--sam-option", "=b"],
            &["--sam-option", "a="],
            &["--sam-option", "DESTINATION=x"],
            &["--bogus"],
            &["--isolate", "tor"],
            &["--max-sessions", "0"],
            &["--virtual-net", "127.192.0.0/10"],
            &["--virtual-net", "10.0.0.0/25"],
            &["--virtual-net", "10.0.0.1/24"],
            &["--virtual-net", "10.0.0.0"],
            &["--spare-sessions", "17"],
            &["--spare-sessions", "-1"],
            &["--spare-sessions", "x"],
            &["--encryption", "PQ"],
            &["--encryption", "none"],
            &["--encryption", ""],
            &["--encryption", "auto", "--sam-option", "i2cp.leaseSetEncType=4"],
            &["--encryption", "classic", "--sam-option", "i2cp.leasesetenctype=4,0"],
            &["--print-address"],
            &["--check", "--print-address", "-k", "k"],
            &["--prefer-no-auth", "--auth-file", "f"],
            &["extra"],
            &["-l", "unix:relative/s"],
            &["-l", "unix:/tmp/s", "-l", "unix:/tmp/s"],
            &["-l", "127.0.0.1:5000", "-l", "127.0.0.1:5000"],
            &["-l", "unix:/tmp/s", "--unix-mode", "0400"],
            &["-l", "unix:/tmp/s", "--unix-mode", "1600"],
            &["-l", "unix:/tmp/s", "--unix-mode", "0x1"],
            &["-l", "unix:/tmp/s", "--unix-mode", "0666"],
            &["-l", "unix:/tmp/s", "--unix-mode", "0604"],
            &["--unix-mode", "0660"],
            &["-l", "127.0.0.1:0", "-l", "0.0.0.0:0"],
            &["-l", "127.0.0.1:0,key="],
            &["-l", "127.0.0.1:0,key=/k/a", "-l", "127.0.0.1:0,key=/k/a"],
            &["-l", "127.0.0.1:0,key=/k/a", "-k", "/k/b"],
            &["-l", "127.0.0.1:0,key=/k/a", "-l", "127.0.0.1:1,key=/k/b", "-k", "/k/a"],
            &["-l", "127.0.0.1:0,keys=/k/a"],
            &["-l", "127.0.0.1:0,/k/a"],
            &["--key-dir", ""],
            &["--key-dir", "/k", "--isolate", "none"],
            &["--key-dir", "/k", "--isolate", "client"],
        ] {
            let e = run(args).unwrap_err();
            assert!(!e.0.contains('\n'), "{args:?}: one line: {e}");
        }
    }

    #[test]
    fn spares_and_encryption() {
        let c = run(&[]).unwrap();
        assert_eq!((c.spare_sessions, c.encryption), (1, Mode::Auto));
        assert_eq!(run(&["--spare-sessions", "0"]).unwrap().spare_sessions, 0);
        assert_eq!(run(&["--spare-sessions", "16"]).unwrap().spare_sessions, 16);
        for (arg, mode) in [("auto", Mode::Auto), ("pq", Mode::Pq), ("classic", Mode::Classic)] {
            assert_eq!(run(&["--encryption", arg]).unwrap().encryption, mode);
        }
        // The user's own types are sent as given, not negotiated.
        let c = run(&["--sam-option", "i2cp.leaseSetEncType=4"]).unwrap();
        assert_eq!(c.encryption, Mode::AsGiven);
        assert_eq!(c.sam_options, vec![("i2cp.leaseSetEncType".into(), "4".into())]);
    }

    #[test]
    fn remote_needs_flag() {
        let c = run(&["-l", "0.0.0.0:0", "--allow-remote"]).unwrap();
        assert_eq!(c.listen, vec![Endpoint::Tcp("0.0.0.0:0".parse().unwrap())]);
        assert!(run(&["-l", "[::1]:0"]).is_ok());
        let c = run(&["-l", "unix:/tmp/s", "--unix-mode", "0666", "--allow-remote"]).unwrap();
        assert_eq!(c.unix_mode, 0o666);
    }

    #[test]
    fn several_listeners_in_order() {
        let c = run(&[
            "-l",
            "127.0.0.1:0",
            "-l",
            "unix:/run/i2psocks/s",
            "-l",
            "[::1]:4448",
            "-l",
            "127.0.0.1:0",
        ])
        .unwrap();
        let shown: Vec<String> = c.listen.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown, ["127.0.0.1:0", "unix:/run/i2psocks/s", "[::1]:4448", "127.0.0.1:0"]);
        let c = run(&["-l", "unix:/run/s", "--unix-mode", "660"]).unwrap();
        assert_eq!(c.unix_mode, 0o660);
        let many: Vec<String> =
            (0..=MAX_LISTENERS).flat_map(|_| ["-l".to_string(), "127.0.0.1:0".into()]).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(run(&refs).is_err());
        assert_eq!(run(&refs[2..]).unwrap().listen.len(), MAX_LISTENERS);
        let long = format!("unix:/{}", "a".repeat(unix::MAX_PATH));
        assert!(run(&["-l", &long]).is_err());
    }

    #[test]
    fn persistent_keys() {
        let c = run(&[
            "-l",
            "127.0.0.1:4448,key=/var/lib/i2psocks/irc.key",
            "-l",
            "127.0.0.1:4449",
            "-l",
            "unix:/run/i2psocks/git,key=git.key",
        ])
        .unwrap();
        let shown: Vec<String> = c.listen.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown, ["127.0.0.1:4448", "127.0.0.1:4449", "unix:/run/i2psocks/git"]);
        assert_eq!(
            c.listen_keys,
            [Some(PathBuf::from("/var/lib/i2psocks/irc.key")), None, Some(PathBuf::from("git.key"))]
        );
        assert!(c.has_persistent() && c.key_dir.is_none());
        // -k is the first listener's key, as before.
        let c = run(&["-k", "/k/a"]).unwrap();
        assert_eq!(c.listen_keys, [Some(PathBuf::from("/k/a"))]);
        let c = run(&["-l", "127.0.0.1:0", "-l", "127.0.0.1:0,key=/k/b", "-k", "/k/a"]).unwrap();
        assert_eq!(c.listen_keys, [Some(PathBuf::from("/k/a")), Some(PathBuf::from("/k/b"))]);
        let c = run(&["--key-dir", "/var/lib/i2psocks/users"]).unwrap();
        assert_eq!(c.key_dir, Some(PathBuf::from("/var/lib/i2psocks/users")));
        assert!(c.has_persistent());
        assert!(!run(&[]).unwrap().has_persistent());
        let print = |args: &[&str]| parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(matches!(print(&["--print-address", "--key-dir", "/k"]), Ok(Command::PrintAddress(_))));
        assert!(matches!(
            print(&["--print-address", "-l", "127.0.0.1:0,key=/k"]),
            Ok(Command::PrintAddress(_))
        ));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["-h".to_string()]).unwrap(), Command::Help);
        assert_eq!(parse(&["-V".to_string()]).unwrap(), Command::Version);
        assert!(help().starts_with(USAGE));
    }
}
