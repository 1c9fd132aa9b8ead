//! Warnings about SAM sessions that could not be built or were lost, at
//! most one line per kind per [`BUILD_LOG_INTERVAL`], the next one saying how
//! many were held back (those are logged at debug). When the router goes
//! away every identity's session, every spare and every datagram build fails
//! together and keeps retrying: unlimited, a busy proxy wrote a warn line per
//! failed build (some 1,500 in a minute), enough to fill an init script's
//! log file during an outage. The listeners' default identities are not
//! limited: there are few of them, their backoff spaces their lines, and
//! each line says when the next attempt comes.

use crate::log_limit::{due_shared, held_back_suffix, RateLimit};
use log::{debug, warn};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// One line per kind per this long: an outage is still told at once, and
/// its end shows within a backoff period or two (the longest is 60 s).
pub const BUILD_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A stream session could not be created.
    StreamCreate,
    /// A ready stream session's control socket ended.
    StreamLost,
    /// A datagram session could not be created.
    DatagramCreate,
    /// A ready datagram session ended.
    DatagramLost,
}

static LIMITS: [Mutex<RateLimit>; 4] = [
    Mutex::new(RateLimit::new(BUILD_LOG_INTERVAL)),
    Mutex::new(RateLimit::new(BUILD_LOG_INTERVAL)),
    Mutex::new(RateLimit::new(BUILD_LOG_INTERVAL)),
    Mutex::new(RateLimit::new(BUILD_LOG_INTERVAL)),
];

/// Warn with `line`; when `limited`, only if no line of this kind went out
/// in the last [`BUILD_LOG_INTERVAL`] (else it is counted and logged at
/// debug).
pub fn warn_limited(kind: Kind, limited: bool, line: fmt::Arguments<'_>) {
    if !limited {
        warn!("{line}");
        return;
    }
    let slot = match kind {
        Kind::StreamCreate => &LIMITS[0],
        Kind::StreamLost => &LIMITS[1],
        Kind::DatagramCreate => &LIMITS[2],
        Kind::DatagramLost => &LIMITS[3],
    };
    match due_shared(slot) {
        Some(held) => warn!("{line}{}", held_back_suffix(held)),
        None => debug!("{line}"),
    }
}
