//! Which end-to-end encryption types a new session asks for
//! (`i2cp.leaseSetEncType`), decided after HELLO from the SAM version the
//! bridge negotiated, and the one fallback when a post-quantum create is
//! refused. Pure decisions and a shared flag; the exchange itself is
//! `conn::create_session`.
//!
//! Types: 0 ElGamal, 4 ECIES-X25519, 6 ML-KEM-768 + X25519 (post-quantum
//! hybrid, I2P 2.10 / i2pd 2.58). A list names what the destination accepts,
//! preferred first. The negotiated version is the only safe signal before a
//! type above 4 is sent: i2pd 2.45.1 (SAM 3.1) exits on a SESSION CREATE
//! with type 6 (measured on Debian 12's package), while every
//! bridge that answers HELLO with 3.3 (i2pd 2.58+, Java I2P) either uses
//! type 6 or leaves it out by itself.
//!
//! What a refusal looks like on the wire: nothing specific to crypto.
//! i2pd 2.57+ silently skips types its build cannot do (Destination.cpp,
//! "skip PQ keys if not supported"); i2pd answers a destination it could not
//! make with `SESSION STATUS RESULT=DUPLICATED_DEST` (SAM.cpp, CreateSession
//! returning no session) and other failures with `RESULT=I2P_ERROR
//! MESSAGE="..."`; Java I2P drops unknown types with an "Unsupported crypto
//! type" log line of its own (RequestLeaseSetMessageHandler) and reports a
//! session that could not be made as `SESSION STATUS RESULT=I2P_ERROR
//! DESTINATION=... MESSAGE="<exception text>"` (SAMv3Handler). MESSAGE is
//! free text, so only RESULT counts: with `auto`, a post-quantum create
//! answered I2P_ERROR or DUPLICATED_DEST is tried once more with the classic
//! types, and if that succeeds the classic types are used from then on.

use crate::sam::proto::SamResult;
use std::sync::atomic::{AtomicBool, Ordering};

/// The SESSION CREATE option this module decides.
pub const OPTION: &str = "i2cp.leaseSetEncType";
/// Post-quantum hybrid preferred, then the classic types.
pub const PQ_TYPES: &str = "6,4,0";
/// ECIES-X25519, with ElGamal for peers that know nothing newer.
pub const CLASSIC_TYPES: &str = "4,0";
/// The SAM minor version from which a bridge is known to survive type 6.
pub const PQ_MIN_MINOR: u32 = 3;

/// `--encryption`, and what happens when `--sam-option` names the types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Post-quantum where the bridge negotiated SAM 3.3, classic elsewhere.
    Auto,
    /// Post-quantum or no session at all.
    Pq,
    /// Classic types only.
    Classic,
    /// The user's own `i2cp.leaseSetEncType` option is sent as given.
    AsGiven,
}

/// What one SESSION CREATE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Send `i2cp.leaseSetEncType=<this>`.
    Send(&'static str),
    /// Send nothing of ours (the options hold the user's value).
    Nothing,
    /// Post-quantum is required and this bridge cannot be trusted with it.
    Unsupported,
}

/// The mode and what the bridge taught us; shared by every session.
#[derive(Debug)]
pub struct Encryption {
    mode: Mode,
    /// A post-quantum create was refused and the classic retry worked.
    fell_back: AtomicBool,
}

impl Encryption {
    pub fn new(mode: Mode) -> Encryption {
        Encryption { mode, fell_back: AtomicBool::new(false) }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The types for a bridge that negotiated SAM 3.`minor`.
    pub fn choose(&self, minor: u32) -> Choice {
        choose(self.mode, minor, self.fell_back.load(Ordering::Relaxed))
    }

    /// Whether a create that sent `sent` and got `result` is tried once
    /// more with [`CLASSIC_TYPES`].
    pub fn retry_classic(&self, sent: Choice, result: &SamResult) -> bool {
        self.mode == Mode::Auto
            && sent == Choice::Send(PQ_TYPES)
            && matches!(result, SamResult::I2pError | SamResult::DuplicatedDest)
    }

    /// The classic retry worked: no more post-quantum attempts. True the
    /// first time (so the caller logs it once).
    pub fn note_fallback(&self) -> bool {
        !self.fell_back.swap(true, Ordering::Relaxed)
    }
}

/// The decision table.
pub fn choose(mode: Mode, minor: u32, fell_back: bool) -> Choice {
    let pq_ok = minor >= PQ_MIN_MINOR;
    match mode {
        Mode::Auto if pq_ok && !fell_back => Choice::Send(PQ_TYPES),
        Mode::Auto | Mode::Classic => Choice::Send(CLASSIC_TYPES),
        Mode::Pq if pq_ok => Choice::Send(PQ_TYPES),
        Mode::Pq => Choice::Unsupported,
        Mode::AsGiven => Choice::Nothing,
    }
}

/// `options` with our choice appended (a copy; the caller's stay as they are).
pub fn with_choice(options: &[(String, String)], choice: Choice) -> Vec<(String, String)> {
    let mut o = options.to_vec();
    if let Choice::Send(types) = choice {
        o.push((OPTION.into(), types.into()));
    }
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn table() {
        use Choice::*;
        // (mode, minor, fell back) → choice
        let rows = [
            (Mode::Auto, 1, false, Send(CLASSIC_TYPES)),
            (Mode::Auto, 2, false, Send(CLASSIC_TYPES)),
            (Mode::Auto, 3, false, Send(PQ_TYPES)),
            (Mode::Auto, 4, false, Send(PQ_TYPES)),
            (Mode::Auto, 3, true, Send(CLASSIC_TYPES)),
            (Mode::Pq, 1, false, Unsupported),
            (Mode::Pq, 2, false, Unsupported),
            (Mode::Pq, 3, false, Send(PQ_TYPES)),
            (Mode::Pq, 3, true, Send(PQ_TYPES)),
            (Mode::Classic, 1, false, Send(CLASSIC_TYPES)),
            (Mode::Classic, 3, false, Send(CLASSIC_TYPES)),
            (Mode::AsGiven, 1, false, Nothing),
            (Mode::AsGiven, 3, false, Nothing),
        ];
        for (mode, minor, fell_back, want) in rows {
            assert_eq!(choose(mode, minor, fell_back), want, "{mode:?} 3.{minor} {fell_back}");
        }
    }

    #[test]
    fn fallback_once_and_only_from_pq_on_auto() {
        let e = Encryption::new(Mode::Auto);
        let pq = e.choose(3);
        assert_eq!(pq, Choice::Send(PQ_TYPES));
        assert!(e.retry_classic(pq, &SamResult::I2pError));
        assert!(e.retry_classic(pq, &SamResult::DuplicatedDest));
        for r in [SamResult::InvalidId, SamResult::DuplicatedId, SamResult::InvalidKey, SamResult::Ok] {
            assert!(!e.retry_classic(pq, &r), "{r:?}");
        }
        assert!(!e.retry_classic(Choice::Send(CLASSIC_TYPES), &SamResult::I2pError));
        assert!(e.note_fallback());
        assert!(!e.note_fallback(), "logged once");
        assert_eq!(e.choose(3), Choice::Send(CLASSIC_TYPES), "sticky");
        let pq_only = Encryption::new(Mode::Pq);
        assert!(!pq_only.retry_classic(pq_only.choose(3), &SamResult::I2pError), "pq insists");
    }

    #[test]
    fn option_appended() {
        let base = vec![("inbound.length".to_string(), "0".to_string())];
        assert_eq!(
            with_choice(&base, Choice::Send(PQ_TYPES)),
            vec![base[0].clone(), (OPTION.to_string(), "6,4,0".to_string())]
        );
        assert_eq!(with_choice(&base, Choice::Nothing), base);
        assert_eq!(with_choice(&base, Choice::Unsupported), base);
    }
}
