//! Warnings that a program talks to the proxy in a way that leaks or
//! cannot work, at the default log level: one that hands over an IP address
//! has looked the name up itself, so its DNS query already went out
//! unprotected; one that asks for a name outside I2P was pointed at the wrong
//! proxy. The line says which SOCKS version, the destination port, the
//! client (or its listener), the likely cause and the fix — never the target
//! itself (no target above debug level). At most one line per kind per
//! [`LEAK_LOG_INTERVAL`], the next one saying how many were held back, as
//! Tor's SafeSocks warning does.

use crate::error::Denied;
use crate::log_limit::{due_shared, held_back_suffix, RateLimit};
use crate::socks::{Addr, Request, Version};
use log::warn;
use std::sync::Mutex;
use std::time::Duration;

/// One line per kind per this long (Tor's SafeSocks warns as often).
pub const LEAK_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What a client did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leak {
    /// An IP address where a name belongs.
    IpAddress,
    /// A name that is not `.i2p`.
    NotI2p,
}

impl Leak {
    /// The kind of leak a refusal shows, if any (a malformed I2P name is a
    /// typo, not a misconfigured program).
    pub fn of(denied: Denied) -> Option<Leak> {
        match denied {
            Denied::IpAddress => Some(Leak::IpAddress),
            Denied::NotI2p => Some(Leak::NotI2p),
            Denied::Malformed => None,
        }
    }
}

/// The process's rate limits, one per kind.
static LIMITS: [Mutex<RateLimit>; 2] =
    [Mutex::new(RateLimit::new(LEAK_LOG_INTERVAL)), Mutex::new(RateLimit::new(LEAK_LOG_INTERVAL))];

/// How a request names its SOCKS version (SOCKS4 with a name is 4a).
pub fn socks_label(req: &Request) -> &'static str {
    match (req.version, &req.addr) {
        (Version::V5, _) => "SOCKS5",
        (Version::V4, Addr::Domain(_)) => "SOCKS4a",
        (Version::V4, _) => "SOCKS4",
    }
}

/// Warn, within the rate limit, that `client` (its address, or its
/// listener) sent `leak` in a `socks` request for `port`.
pub fn warn_leak(leak: Leak, socks: &str, port: u16, client: &str) {
    let limit = match leak {
        Leak::IpAddress => &LIMITS[0],
        Leak::NotI2p => &LIMITS[1],
    };
    if let Some(held_back) = due_shared(limit) {
        warn!("{}", message(leak, socks, port, client, held_back));
    }
}

/// The warning's text.
pub fn message(leak: Leak, socks: &str, port: u16, client: &str, held_back: u64) -> String {
    let more = held_back_suffix(held_back);
    match leak {
        Leak::IpAddress => format!(
            "{socks} client {client} gave an IP address, not a name (port {port}): the program \
             resolved the name itself, so its DNS query went out unprotected, and this proxy \
             reaches only I2P; make it pass the name to the proxy (socks5h:// URLs, curl \
             --socks5-hostname, SOCKS4a instead of SOCKS4, or run it under torsocks){more}"
        ),
        Leak::NotI2p => format!(
            "{socks} client {client} asked for a name outside I2P (port {port}): this proxy \
             reaches only I2P names (ending in .i2p) and never the ordinary Internet; send only \
             I2P names here (and names, not addresses: socks5h://, --socks5-hostname, SOCKS4a, \
             torsocks){more}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks::{Command, Credentials};

    #[test]
    fn messages() {
        assert_eq!(
            message(Leak::IpAddress, "SOCKS5", 80, "127.0.0.1:40000", 0),
            "SOCKS5 client 127.0.0.1:40000 gave an IP address, not a name (port 80): the program \
             resolved the name itself, so its DNS query went out unprotected, and this proxy \
             reaches only I2P; make it pass the name to the proxy (socks5h:// URLs, curl \
             --socks5-hostname, SOCKS4a instead of SOCKS4, or run it under torsocks)"
        );
        assert_eq!(
            message(Leak::NotI2p, "SOCKS4a", 443, "unix:/run/i2psocks.sock", 99),
            "SOCKS4a client unix:/run/i2psocks.sock asked for a name outside I2P (port 443): this \
             proxy reaches only I2P names (ending in .i2p) and never the ordinary Internet; send only \
             I2P names here (and names, not addresses: socks5h://, --socks5-hostname, SOCKS4a, \
             torsocks) (99 more since the last such line)"
        );
    }

    #[test]
    fn labels_and_kinds() {
        let req = |version, addr| Request {
            version,
            command: Command::Connect,
            addr,
            port: 80,
            credentials: Credentials::None,
        };
        assert_eq!(socks_label(&req(Version::V5, Addr::Ipv4([1, 2, 3, 4]))), "SOCKS5");
        assert_eq!(socks_label(&req(Version::V4, Addr::Ipv4([1, 2, 3, 4]))), "SOCKS4");
        assert_eq!(socks_label(&req(Version::V4, Addr::Domain(b"a.i2p".to_vec()))), "SOCKS4a");
        assert_eq!(Leak::of(Denied::IpAddress), Some(Leak::IpAddress));
        assert_eq!(Leak::of(Denied::NotI2p), Some(Leak::NotI2p));
        assert_eq!(Leak::of(Denied::Malformed), None);
    }
}
