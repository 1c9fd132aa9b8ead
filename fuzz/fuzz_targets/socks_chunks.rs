//! Fuzz target: the SOCKS server handshake (`socks::Handshake`) fed a client
//! byte stream in reads whose sizes the input chooses, driven the way
//! `src/proxy/mod.rs` drives it, for every command (CONNECT, BIND, UDP
//! ASSOCIATE, and Tor's RESOLVE and RESOLVE_PTR, which torsocks sends).
//!
//! Input: one flags byte (bit 0 `require_auth`, bit 1 `prefer_no_auth`,
//! bit 2 the password check's verdict), a read-size header (see
//! `i2psocks_fuzz::split_reads`), then the client's bytes.
//!
//! Checked on every input: no panic; each step consumes at most what it was
//! given, and only a complete message; NeedMore and Fail consume nothing;
//! the whole handshake takes at most `MAX_HANDSHAKE` bytes and every byte is
//! either consumed or left over as payload; the steps come in protocol order;
//! the request obeys the policy (no SOCKS4 and no request without accepted
//! credentials when auth is required) and the codec's limits; a finished
//! handshake refuses all further input and verdicts; and the outcome, reasons
//! and payload included, is the same as when the stream comes in one read.

#![no_main]

use i2psocks::socks::{
    reply, Action, Addr, Command, Credentials, Handshake, Policy, Request, Version, MAX_HANDSHAKE,
    MAX_HOSTNAME, MAX_USERID,
};
use i2psocks_fuzz::{reads, split_reads};
use libfuzzer_sys::fuzz_target;

/// What a client would observe: every action but NeedMore (how many of those
/// come depends on the split), then the bytes not consumed.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Action>,
    left: Vec<u8>,
}

/// Where the conversation is, to check that steps come in protocol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    /// SOCKS5 method reply sent choosing 0x00.
    NoAuth,
    /// SOCKS5 method reply sent choosing 0x02.
    WantAuth,
    /// Credentials accepted.
    Authed,
    Over,
}

fn drive(policy: Policy, verdict: bool, input: &[&[u8]]) -> Outcome {
    let total_len: usize = input.iter().map(|r| r.len()).sum();
    let mut h = Handshake::new(policy);
    let mut pending: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut consumed_total = 0usize;
    let mut stage = Stage::Start;
    let mut creds = Credentials::None;
    let mut rest = input.iter();
    'reads: for read in rest.by_ref() {
        pending.extend_from_slice(read);
        loop {
            assert!(!h.is_finished());
            let step = h.handshake(&pending);
            assert!(step.consumed <= pending.len(), "consumed {} of {}", step.consumed, pending.len());
            consumed_total += step.consumed;
            assert!(consumed_total <= MAX_HANDSHAKE, "handshake took {consumed_total} bytes");
            match &step.action {
                Action::NeedMore | Action::Fail { .. } => assert_eq!(step.consumed, 0),
                _ => assert!(step.consumed > 0, "{:?} consumed nothing", step.action),
            }
            pending.drain(..step.consumed);
            match step.action {
                Action::NeedMore => {
                    assert!(!h.is_finished());
                    continue 'reads;
                }
                Action::Reply(bytes) => {
                    assert_eq!(stage, Stage::Start, "second method reply");
                    assert_eq!(h.version(), Some(Version::V5));
                    assert!(!h.is_finished());
                    stage = match bytes.as_slice() {
                        [5, 0] if !policy.require_auth => Stage::NoAuth,
                        [5, 2] => Stage::WantAuth,
                        other => panic!("method reply {other:x?} under {policy:?}"),
                    };
                    events.push(Action::Reply(bytes));
                }
                Action::CheckAuth { user, pass } => {
                    assert_eq!(stage, Stage::WantAuth, "credentials without method 0x02");
                    assert!(!h.is_finished());
                    assert!(user.len() <= 255 && pass.len() <= 255);
                    let answer = h.auth_verdict(verdict);
                    assert_eq!(answer, [1, u8::from(!verdict)]);
                    creds = Credentials::UserPass { user: user.clone(), pass: pass.clone() };
                    events.push(Action::CheckAuth { user, pass });
                    events.push(Action::Reply(answer));
                    if !verdict {
                        stage = Stage::Over;
                        check_dead(&mut h, &pending);
                        break 'reads;
                    }
                    stage = Stage::Authed;
                }
                Action::Done(request) => {
                    check_request(&request, policy, stage, &creds, &h);
                    stage = Stage::Over;
                    events.push(Action::Done(request));
                    check_dead(&mut h, &pending);
                    break 'reads;
                }
                Action::Fail { reply: bytes, reason } => {
                    check_fail_reply(&bytes, stage, &h);
                    assert!(!reason.is_empty());
                    stage = Stage::Over;
                    events.push(Action::Fail { reply: bytes, reason });
                    check_dead(&mut h, &pending);
                    break 'reads;
                }
            }
        }
    }
    if stage != Stage::Over {
        assert!(!h.is_finished());
    }
    for read in rest {
        pending.extend_from_slice(read);
    }
    assert_eq!(consumed_total + pending.len(), total_len, "bytes lost or invented");
    Outcome { events, left: pending }
}

/// A request must fit the policy, the stage it came in and the codec's limits.
fn check_request(r: &Request, policy: Policy, stage: Stage, creds: &Credentials, h: &Handshake) {
    assert!(h.is_finished());
    assert_eq!(h.version(), Some(r.version));
    // Port 0 is the client's own "unknown" for UDP ASSOCIATE (RFC 1928 §7) and
    // means nothing to RESOLVE and RESOLVE_PTR; a stream needs a port.
    match r.command {
        Command::Connect | Command::Bind => assert_ne!(r.port, 0),
        Command::UdpAssociate | Command::Resolve | Command::ResolvePtr => {}
    }
    if let Addr::Domain(name) = &r.addr {
        assert!(!name.is_empty() && name.len() <= MAX_HOSTNAME, "domain of {} bytes", name.len());
    }
    match r.version {
        Version::V4 => {
            assert_eq!(stage, Stage::Start);
            assert!(!policy.require_auth, "SOCKS4 request let through with auth required");
            assert_eq!(r.command, Command::Connect);
            match &r.credentials {
                Credentials::None => {}
                Credentials::UserId(id) => {
                    assert!(!id.is_empty() && id.len() <= MAX_USERID && !id.contains(&0));
                }
                other => panic!("SOCKS4 credentials {other:?}"),
            }
            if let Addr::Domain(name) = &r.addr {
                assert!(!name.contains(&0));
            }
            assert!(!matches!(r.addr, Addr::Ipv6(_) | Addr::Ipv4([0, 0, 0, _])));
        }
        Version::V5 => {
            match stage {
                Stage::NoAuth => assert_eq!(r.credentials, Credentials::None),
                Stage::Authed => assert_eq!(&r.credentials, creds),
                other => panic!("SOCKS5 request at stage {other:?}"),
            }
            if policy.require_auth {
                assert_eq!(stage, Stage::Authed, "request without accepted credentials");
            }
        }
    }
}

/// A refusal is silent, an HTTP 501, or a well-formed reply in the client's version.
fn check_fail_reply(bytes: &[u8], stage: Stage, h: &Handshake) {
    assert!(h.is_finished());
    if bytes.is_empty() {
        return;
    }
    if bytes.starts_with(b"HTTP/1.0 501 ") {
        assert_eq!((stage, h.version()), (Stage::Start, None));
        return;
    }
    match h.version() {
        Some(Version::V4) => assert_eq!(bytes, reply(Version::V4, i2psocks::socks::Rep::GeneralFailure)),
        Some(Version::V5) if stage == Stage::Start => {
            assert!(bytes == [5, 0xff] || is_v5_failure(bytes), "greeting refusal {bytes:x?}");
        }
        Some(Version::V5) => assert!(is_v5_failure(bytes), "request refusal {bytes:x?}"),
        None => panic!("reply {bytes:x?} before the version is known"),
    }
}

fn is_v5_failure(bytes: &[u8]) -> bool {
    matches!(bytes, [5, 1..=8, 0, 1, 0, 0, 0, 0, 0, 0])
}

/// After Done or Fail every further call fails, consumes nothing and
/// unlocks nothing.
fn check_dead(h: &mut Handshake, pending: &[u8]) {
    assert!(h.is_finished());
    for input in [pending, b"\x05\x01\x00", b"\x04\x01\x00\x50\x01\x02\x03\x04\x00", b""] {
        let step = h.handshake(input);
        assert_eq!(step.consumed, 0);
        assert!(matches!(step.action, Action::Fail { ref reply, .. } if reply.is_empty()), "{step:?}");
    }
    assert_eq!(h.auth_verdict(true), [1, 1]);
    assert!(h.is_finished());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((sizes, stream)) = split_reads(rest) else { return };
    let policy = Policy { require_auth: flags & 1 != 0, prefer_no_auth: flags & 2 != 0 };
    let verdict = flags & 4 != 0;

    let whole = drive(policy, verdict, &[stream]);
    let split = drive(policy, verdict, &reads(sizes, stream));
    assert_eq!(split, whole, "outcome depends on the split");

    // A request does not depend on the payload after it: the handshake
    // bytes alone give the same steps and leave nothing over.
    if let Some(Action::Done(_)) = whole.events.last() {
        let used = stream.len() - whole.left.len();
        let alone = drive(policy, verdict, &[&stream[..used]]);
        assert_eq!(alone, Outcome { events: whole.events.clone(), left: Vec::new() });
    }
});
