//! The status report: a few lines that say what the proxy is doing, logged
//! at info on SIGUSR1 and at shutdown. Counts only: no target, no client,
//! no destination but the proxy's own default address. Formatting is pure
//! (the caller gathers the numbers), so the exact lines are unit-tested.

use crate::counters::{get, live, Counters, COUNTERS};
use crate::identity::{Census, Identities};
use crate::sam::ready::State;
use log::info;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The SAM bridge as the first listener's default identity sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bridge {
    /// Its session is up: the negotiated SAM minor version and our address.
    Ready { minor: u32, b32: String },
    /// A session is being built.
    Starting,
    /// The last attempt failed or the session was lost; retrying.
    Down,
}

/// Everything a report shows besides the counters.
#[derive(Debug, Clone)]
pub struct Report {
    pub uptime: Duration,
    pub sam: SocketAddr,
    pub bridge: Bridge,
    pub clients_max: usize,
    pub identities: Census,
    /// What the sandbox applied at start (`sandbox::summary`).
    pub sandbox: String,
}

/// Gathers a report when asked and logs it.
pub struct Reporter {
    started: Instant,
    sam: SocketAddr,
    max_clients: usize,
    identities: Arc<Identities>,
    sandbox: String,
}

impl Reporter {
    /// Uptime counts from now.
    pub fn new(sam: SocketAddr, max_clients: usize, identities: Arc<Identities>, sandbox: String) -> Self {
        Reporter { started: Instant::now(), sam, max_clients, identities, sandbox }
    }

    /// Log the report at info, a line at a time.
    pub fn log(&self) {
        let bridge = match self.identities.default_state() {
            Some(State::Ready(s)) => Bridge::Ready { minor: s.minor, b32: s.b32.clone() },
            Some(State::Starting) => Bridge::Starting,
            Some(State::Down | State::Closed) | None => Bridge::Down,
        };
        let report = Report {
            uptime: self.started.elapsed(),
            sam: self.sam,
            bridge,
            clients_max: self.max_clients,
            identities: self.identities.census(),
            sandbox: self.sandbox.clone(),
        };
        for line in lines(&report, &COUNTERS) {
            info!("{line}");
        }
    }
}

/// The report's lines, each starting `status: `.
pub fn lines(r: &Report, c: &Counters) -> Vec<String> {
    let bridge = match &r.bridge {
        Bridge::Ready { minor, b32 } => format!("ready (SAM 3.{minor}); default identity {b32}"),
        Bridge::Starting => "building a session".to_string(),
        Bridge::Down => "down (retrying)".to_string(),
    };
    let i = &r.identities;
    vec![
        format!("status: up {} s; SAM bridge {}: {bridge}", r.uptime.as_secs(), r.sam),
        format!(
            "status: clients: {} now (--max-clients {}), {} since start",
            live(&c.clients, &c.clients_ended),
            r.clients_max,
            get(&c.clients)
        ),
        format!(
            "status: refused: {} not I2P, {} IP address given, {} auth failed, {} overload, \
             {} handshake timeout, {} malformed",
            get(&c.refused_not_i2p),
            get(&c.refused_ip),
            get(&c.refused_auth),
            get(&c.refused_overload),
            get(&c.refused_handshake_timeout),
            get(&c.refused_malformed)
        ),
        format!(
            "status: streams: {} now, {} since start, {} failed to open; {} bytes out, {} bytes in \
             (streams that ended)",
            live(&c.streams_opened, &c.streams_ended),
            get(&c.streams_opened),
            get(&c.streams_failed),
            get(&c.bytes_out),
            get(&c.bytes_in)
        ),
        format!(
            "status: half-closes held: {} now, {} since start, {} passed on early for a new client",
            live(&c.holds, &c.holds_ended),
            get(&c.holds),
            get(&c.holds_released_early)
        ),
        format!(
            "status: identities: {} default, {} persistent, {} by credentials, {} per connection, \
             {} spare, {} held after close; SAM sessions: {} built, {} rebuilt ({} of them stuck), {} failed",
            i.default,
            i.persistent,
            i.by_credentials,
            i.per_connection,
            i.spare,
            i.held,
            get(&c.session_builds),
            get(&c.session_rebuilds),
            get(&c.session_stuck),
            get(&c.session_failures)
        ),
        format!(
            "status: UDP: {} associations now, {} since start; datagrams {} to I2P, {} from I2P, \
             {} dropped",
            live(&c.udp_opened, &c.udp_ended),
            get(&c.udp_opened),
            get(&c.datagrams_out),
            get(&c.datagrams_in),
            get(&c.datagrams_dropped)
        ),
        format!("status: {}", r.sandbox),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::counters::add;

    #[test]
    fn exact_lines() {
        let c = Counters::new();
        add(&c.clients, 12);
        add(&c.clients_ended, 10);
        add(&c.refused_not_i2p, 1);
        add(&c.refused_ip, 2);
        add(&c.refused_auth, 3);
        add(&c.refused_overload, 4);
        add(&c.refused_handshake_timeout, 5);
        add(&c.refused_malformed, 6);
        add(&c.streams_opened, 9);
        add(&c.streams_ended, 7);
        add(&c.streams_failed, 1);
        add(&c.bytes_out, 1000);
        add(&c.bytes_in, 2000);
        add(&c.holds, 30);
        add(&c.holds_ended, 27);
        add(&c.holds_released_early, 11);
        add(&c.session_builds, 4);
        add(&c.session_rebuilds, 1);
        add(&c.session_failures, 2);
        add(&c.session_stuck, 1);
        add(&c.udp_opened, 3);
        add(&c.udp_ended, 3);
        add(&c.datagrams_out, 10);
        add(&c.datagrams_in, 8);
        add(&c.datagrams_dropped, 2);
        let r = Report {
            uptime: Duration::from_millis(3_723_900),
            sam: "127.0.0.1:7656".parse().unwrap(),
            bridge: Bridge::Ready { minor: 1, b32: "x.b32.i2p".into() },
            clients_max: 256,
            identities: Census {
                default: 1,
                persistent: 3,
                by_credentials: 2,
                per_connection: 0,
                spare: 1,
                held: 4,
            },
            sandbox: "sandbox: Landlock ABI 7: connect only to port 7656".into(),
        };
        assert_eq!(
            lines(&r, &c),
            [
                "status: up 3723 s; SAM bridge 127.0.0.1:7656: ready (SAM 3.1); default identity x.b32.i2p",
                "status: clients: 2 now (--max-clients 256), 12 since start",
                "status: refused: 1 not I2P, 2 IP address given, 3 auth failed, 4 overload, \
                 5 handshake timeout, 6 malformed",
                "status: streams: 2 now, 9 since start, 1 failed to open; 1000 bytes out, 2000 bytes in \
                 (streams that ended)",
                "status: half-closes held: 3 now, 30 since start, 11 passed on early for a new client",
                "status: identities: 1 default, 3 persistent, 2 by credentials, 0 per connection, 1 spare, \
                 4 held after close; SAM sessions: 4 built, 1 rebuilt (1 of them stuck), 2 failed",
                "status: UDP: 0 associations now, 3 since start; datagrams 10 to I2P, 8 from I2P, 2 dropped",
                "status: sandbox: Landlock ABI 7: connect only to port 7656",
            ]
        );
        let down = Report { bridge: Bridge::Down, ..r.clone() };
        assert!(lines(&down, &c)[0].ends_with("127.0.0.1:7656: down (retrying)"));
        let starting = Report { bridge: Bridge::Starting, ..r };
        assert!(lines(&starting, &c)[0].ends_with(": building a session"));
    }
}
