//! Why a client's request failed, and the one table that turns each cause
//! into the SOCKS reply the client sees (the table is in doc/clients.md, "What
//! the client sees", and in the man page).
//!
//! Every refusal in the proxy goes through [`Error::rep`]; nothing else picks
//! a reply code. SOCKS4 collapses every failure to 0x5B in `socks::reply`.
//! The SAM layer reports its own failures (`sam::stream::ConnectError`,
//! `sam::ready::NotReady`); they become an [`Error`] here, so `sam` needs
//! to know nothing of SOCKS.

use crate::i2p_addr::AddrError;
use crate::sam::proto::SamResult;
use crate::sam::ready::NotReady;
use crate::sam::stream::ConnectError;
use crate::socks::Rep;
use std::fmt;

/// Why a target is not one the proxy will try (all are 0x02). The kind
/// matters to the user: an IP address means the program resolved the name
/// itself, through DNS; a name outside I2P means it was pointed at the
/// wrong proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    IpAddress,
    NotI2p,
    /// A malformed I2P name, port 0, or a request no target can satisfy.
    Malformed,
}

impl From<AddrError> for Denied {
    fn from(e: AddrError) -> Self {
        match e {
            AddrError::IpAddress => Denied::IpAddress,
            AddrError::NotI2p => Denied::NotI2p,
            AddrError::Empty
            | AddrError::TooLong
            | AddrError::BadChar
            | AddrError::BadB32
            | AddrError::BadB33
            | AddrError::BadName => Denied::Malformed,
        }
    }
}

/// A failed request, from validation to the SAM stream reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Clearnet name, IP address, malformed I2P name or port 0.
    TargetNotAllowed(Denied),
    /// BIND, or a command this build does not serve.
    CommandNotSupported,
    /// An address type other than IPv4, domain or IPv6, or a RESOLVE_PTR
    /// for something that is not an address.
    AddrTypeNotSupported,
    /// A virtual address (`--virtual-net`) that no name has now.
    NoMapping,
    /// The SAM bridge answered STREAM CONNECT (or HELLO) with this result.
    Sam(SamResult),
    /// The bridge refused without a clear reason (`I2P_ERROR`, or a close
    /// without STREAM STATUS) and a NAMING LOOKUP on the session says the
    /// router does not know the target.
    UnknownDestination,
    /// The bridge closed the stream without a STREAM STATUS, while the
    /// session and the lookup still worked: the destination was not reached.
    NoStatus,
    /// Our own connect deadline passed before the bridge answered.
    ConnectTimeout,
    /// The SAM bridge could not be reached or broke the protocol.
    SamUnreachable,
    /// The SAM session is down (being rebuilt).
    SessionDown,
    /// Too many clients or sessions.
    Overloaded,
}

impl Error {
    /// The single cause → SOCKS5 reply table.
    pub fn rep(&self) -> Rep {
        match self {
            Error::TargetNotAllowed(_) => Rep::NotAllowed,
            Error::CommandNotSupported => Rep::CommandNotSupported,
            Error::AddrTypeNotSupported => Rep::AddrTypeNotSupported,
            Error::NoMapping | Error::UnknownDestination | Error::NoStatus => Rep::HostUnreachable,
            Error::ConnectTimeout => Rep::TtlExpired,
            Error::SamUnreachable | Error::SessionDown | Error::Overloaded => Rep::GeneralFailure,
            Error::Sam(r) => match r {
                SamResult::CantReachPeer
                | SamResult::InvalidKey
                | SamResult::KeyNotFound
                | SamResult::PeerNotFound => Rep::HostUnreachable,
                SamResult::ConnectionRefused => Rep::ConnectionRefused,
                SamResult::Timeout => Rep::TtlExpired,
                SamResult::Ok
                | SamResult::I2pError
                | SamResult::InvalidId
                | SamResult::DuplicatedDest
                | SamResult::DuplicatedId
                | SamResult::NoVersion
                | SamResult::Other(_) => Rep::GeneralFailure,
            },
        }
    }
}

impl Error {
    /// A failure to open a stream that passed every local check: the router
    /// or the bridge said no, or did not answer in time.
    pub fn reached_the_router(&self) -> bool {
        matches!(
            self,
            Error::Sam(_)
                | Error::UnknownDestination
                | Error::NoStatus
                | Error::ConnectTimeout
                | Error::SamUnreachable
                | Error::SessionDown
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TargetNotAllowed(why) => write!(f, "target not allowed ({why:?})"),
            Error::CommandNotSupported => f.write_str("command not supported"),
            Error::AddrTypeNotSupported => f.write_str("address type not supported"),
            Error::NoMapping => f.write_str("no name has this virtual address"),
            Error::Sam(r) => write!(f, "SAM result {r:?}"),
            Error::UnknownDestination => f.write_str("the router does not know the destination"),
            Error::NoStatus => f.write_str("the SAM bridge ended the stream without a STREAM STATUS"),
            Error::ConnectTimeout => f.write_str("connect deadline passed"),
            Error::SamUnreachable => f.write_str("SAM bridge unreachable"),
            Error::SessionDown => f.write_str("SAM session down"),
            Error::Overloaded => f.write_str("overloaded"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::SessionDown => Error::SessionDown,
            ConnectError::Timeout => Error::ConnectTimeout,
            ConnectError::Unreachable => Error::SamUnreachable,
            ConnectError::Refused(r) => Error::Sam(r),
            ConnectError::BadTarget => Error::TargetNotAllowed(Denied::Malformed),
            ConnectError::NoStatus => Error::NoStatus,
            ConnectError::UnknownDestination => Error::UnknownDestination,
            ConnectError::Busy => Error::Overloaded,
        }
    }
}

impl From<NotReady> for Error {
    fn from(e: NotReady) -> Self {
        ConnectError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row of the reply table, in order.
    #[test]
    fn reply_table() {
        let rows: &[(Error, u8)] = &[
            (Error::Sam(SamResult::Ok), 0x01), // OK is never an error; if it were, fail closed
            (Error::TargetNotAllowed(Denied::IpAddress), 0x02),
            (Error::TargetNotAllowed(Denied::NotI2p), 0x02),
            (Error::TargetNotAllowed(Denied::Malformed), 0x02),
            (Error::Sam(SamResult::CantReachPeer), 0x04),
            (Error::Sam(SamResult::InvalidKey), 0x04),
            (Error::Sam(SamResult::KeyNotFound), 0x04),
            (Error::Sam(SamResult::PeerNotFound), 0x04),
            (Error::NoMapping, 0x04),
            (Error::UnknownDestination, 0x04),
            (Error::NoStatus, 0x04),
            (Error::Sam(SamResult::ConnectionRefused), 0x05),
            (Error::Sam(SamResult::Timeout), 0x06),
            (Error::ConnectTimeout, 0x06),
            (Error::CommandNotSupported, 0x07),
            (Error::AddrTypeNotSupported, 0x08),
            (Error::Sam(SamResult::I2pError), 0x01),
            (Error::Sam(SamResult::InvalidId), 0x01),
            (Error::Sam(SamResult::DuplicatedId), 0x01),
            (Error::Sam(SamResult::DuplicatedDest), 0x01),
            (Error::Sam(SamResult::NoVersion), 0x01),
            (Error::Sam(SamResult::Other("WHATEVER".into())), 0x01),
            (Error::SamUnreachable, 0x01),
            (Error::SessionDown, 0x01),
            (Error::Overloaded, 0x01),
        ];
        for (err, code) in rows {
            assert_eq!(err.rep() as u8, *code, "{err:?}");
        }
    }

    /// The SAM layer's own failures, through the table.
    #[test]
    fn connect_errors() {
        let rows: &[(ConnectError, u8)] = &[
            (ConnectError::UnknownDestination, 0x04),
            (ConnectError::NoStatus, 0x04),
            (ConnectError::Refused(SamResult::I2pError), 0x01),
            (ConnectError::Refused(SamResult::CantReachPeer), 0x04),
            (ConnectError::Busy, 0x01),
            (ConnectError::SessionDown, 0x01),
            (ConnectError::Unreachable, 0x01),
            (ConnectError::Timeout, 0x06),
            (ConnectError::BadTarget, 0x02),
        ];
        for (e, code) in rows {
            assert_eq!(Error::from(e.clone()).rep() as u8, *code, "{e:?}");
        }
    }

    #[test]
    fn socks4_collapses_failures() {
        use crate::socks::{reply, Version};
        assert_eq!(reply(Version::V4, Error::Sam(SamResult::Timeout).rep()), [0, 0x5b, 0, 0, 0, 0, 0, 0]);
        assert_eq!(reply(Version::V4, Rep::Succeeded), [0, 0x5a, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            reply(Version::V5, Error::Sam(SamResult::CantReachPeer).rep()),
            [5, 4, 0, 1, 0, 0, 0, 0, 0, 0]
        );
    }
}
