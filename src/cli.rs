//! Command-line flags → [`Config`]. Flags are the only configuration (no
//! config file, no environment except RUST_LOG for logging). Every number is
//! range-checked and every address is numeric: parsing never resolves a name.
//!
//! The usage line here is the man page's SYNOPSIS; keep them identical.

use crate::sam::proto::{is_safe_key, is_safe_value};
use getopts::Options;
use std::net::SocketAddr;
use std::time::Duration;

/// The usage line, identical to SYNOPSIS in man/i2psocks.8.
pub const USAGE: &str = "usage: i2psocks [-hqVv] [--allow-remote] [-l addr:port] [-s addr:port] \
[--max-clients n] [--handshake-timeout secs] [--connect-timeout secs] [--idle-timeout secs] \
[--shutdown-grace secs] [--hops n] [--tunnels n] [--sam-option key=value]";

pub const DEFAULT_LISTEN: &str = "127.0.0.1:4447";
pub const DEFAULT_SAM: &str = "127.0.0.1:7656";

/// Most `--sam-option` flags accepted (each becomes part of one SAM line).
pub const MAX_SAM_OPTIONS: usize = 64;
/// Longest `--sam-option` KEY=VALUE accepted.
pub const MAX_SAM_OPTION_LEN: usize = 512;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Config),
    Help,
    Version,
}

/// The proxy's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub sam: SocketAddr,
    pub max_clients: usize,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// Zero means never.
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    pub hops: u8,
    pub tunnels: u8,
    /// Extra SESSION CREATE options, validated to be safe on the wire.
    pub sam_options: Vec<(String, String)>,
    /// -v count minus -q count: 0 = info.
    pub verbosity: i8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4447)),
            sam: SocketAddr::from(([127, 0, 0, 1], 7656)),
            max_clients: 256,
            handshake_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(1800),
            shutdown_grace: Duration::from_secs(5),
            hops: 3,
            tunnels: 2,
            sam_options: Vec::new(),
            verbosity: 0,
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
    o.optflag("", "allow-remote", "allow a non-loopback --listen address");
    o.optopt(
        "l",
        "listen",
        "SOCKS listen address (default 127.0.0.1:4447; port 0 picks one)",
        "ADDR:PORT",
    );
    o.optopt(
        "s",
        "sam",
        "SAM v3 bridge address (default 127.0.0.1:7656)",
        "ADDR:PORT",
    );
    o.optopt(
        "",
        "max-clients",
        "concurrent clients, 1-10000 (default 256)",
        "N",
    );
    o.optopt(
        "",
        "handshake-timeout",
        "whole SOCKS handshake deadline, 1-3600 (default 30)",
        "SECS",
    );
    o.optopt(
        "",
        "connect-timeout",
        "I2P stream connect deadline, 1-3600 (default 120)",
        "SECS",
    );
    o.optopt(
        "",
        "idle-timeout",
        "close relays idle this long, 0-604800, 0 = never (default 1800)",
        "SECS",
    );
    o.optopt(
        "",
        "shutdown-grace",
        "on SIGTERM let relays finish this long, 0-600 (default 5)",
        "SECS",
    );
    o.optopt(
        "",
        "hops",
        "tunnel length, inbound and outbound, 0-7 (default 3)",
        "N",
    );
    o.optopt(
        "",
        "tunnels",
        "tunnel quantity, inbound and outbound, 1-16 (default 2)",
        "N",
    );
    o.optmulti(
        "",
        "sam-option",
        "extra SAM SESSION CREATE option (repeatable)",
        "KEY=VALUE",
    );
    o
}

/// The text `-h` prints: the usage line and one line per flag.
pub fn help() -> String {
    options().usage(USAGE)
}

/// Parse the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let m = options()
        .parse(args)
        .map_err(|e| UsageError(e.to_string()))?;
    if m.opt_present("h") {
        return Ok(Command::Help);
    }
    if m.opt_present("V") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(UsageError(format!("unexpected argument '{extra}'")));
    }
    let mut c = Config::default();
    c.verbosity = clamp_i8(m.opt_count("v")) - clamp_i8(m.opt_count("q"));
    if let Some(s) = m.opt_str("l") {
        c.listen = addr("--listen", &s)?;
    }
    if let Some(s) = m.opt_str("s") {
        c.sam = addr("--sam", &s)?;
    }
    if !c.listen.ip().is_loopback() && !m.opt_present("allow-remote") {
        return Err(UsageError(format!(
            "--listen {} is not a loopback address: anyone who can reach it could use this proxy; add --allow-remote if that is intended",
            c.listen
        )));
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
    if let Some(n) = num(&m, "shutdown-grace", 0, 600)? {
        c.shutdown_grace = Duration::from_secs(n);
    }
    if let Some(n) = num(&m, "hops", 0, 7)? {
        c.hops = n as u8;
    }
    if let Some(n) = num(&m, "tunnels", 1, 16)? {
        c.tunnels = n as u8;
    }
    let opts = m.opt_strs("sam-option");
    if opts.len() > MAX_SAM_OPTIONS {
        return Err(UsageError(format!(
            "at most {MAX_SAM_OPTIONS} --sam-option flags"
        )));
    }
    for o in opts {
        c.sam_options.push(sam_option(&o)?);
    }
    Ok(Command::Run(c))
}

fn clamp_i8(n: usize) -> i8 {
    i8::try_from(n.min(8)).unwrap_or(8)
}

fn addr(flag: &str, s: &str) -> Result<SocketAddr, UsageError> {
    s.parse().map_err(|_| {
        UsageError(format!(
            "{flag} '{s}': expected a numeric ADDR:PORT such as 127.0.0.1:4447 or [::1]:4447"
        ))
    })
}

fn num(m: &getopts::Matches, name: &str, lo: u64, hi: u64) -> Result<Option<u64>, UsageError> {
    let Some(s) = m.opt_str(name) else {
        return Ok(None);
    };
    match s.parse::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(UsageError(format!(
            "--{name} '{s}': expected a whole number from {lo} to {hi}"
        ))),
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
        return Err(UsageError(format!(
            "--sam-option: {k} is set by i2psocks itself"
        )));
    }
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
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
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.sam.to_string(), DEFAULT_SAM);
        assert!(c.connect_timeout >= Duration::from_secs(90));
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
            "--sam-option",
            "inbound.lengthVariance=0",
            "-vv",
            "-q",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.sam.to_string(), "[::1]:7000");
        assert_eq!(c.max_clients, 3);
        assert_eq!((c.hops, c.tunnels), (0, 1));
        assert_eq!(c.idle_timeout, Duration::ZERO);
        assert_eq!(
            c.sam_options,
            vec![("inbound.lengthVariance".into(), "0".into())]
        );
        assert_eq!(c.verbosity, 1);
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
            &["-l", "0.0.0.0:4447"],
            &["-l", "localhost:4447"],
            &["-l", "127.0.0.1"],
            &["-s", "example.com:7656"],
            &["--sam-option", "a=b c"],
            &["--sam-option", "bad"],
            &["--sam-option", "a=\"x\""],
            &["--sam-option", "a=b\nSTREAM"],
            &["--sam-option", "=b"],
            &["--sam-option", "a="],
            &["--sam-option", "DESTINATION=x"],
            &["--bogus"],
            &["extra"],
        ] {
            let e = run(args).unwrap_err();
            assert!(!e.0.contains('\n'), "{args:?}: one line: {e}");
        }
    }

    #[test]
    fn remote_needs_flag() {
        let c = run(&["-l", "0.0.0.0:0", "--allow-remote"]).unwrap();
        assert!(c.listen.ip().is_unspecified());
        assert!(run(&["-l", "[::1]:0"]).is_ok());
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["-h".to_string()]).unwrap(), Command::Help);
        assert_eq!(parse(&["-V".to_string()]).unwrap(), Command::Version);
        assert!(help().starts_with(USAGE));
    }
}
