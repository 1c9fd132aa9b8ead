//! SOCKS 4, 4a and 5 server handshake as a sans-IO state machine.
//!
//! [`Handshake::handshake`] is given the bytes a client sent that are not yet
//! consumed and answers with how many bytes one complete message took and
//! what the caller must do: write a reply, check credentials, open the stream,
//! or write a last reply and close. It never touches a socket, never blocks
//! and never looks at a clock (the caller owns the one overall handshake
//! deadline). It does not decide what a valid target is: [`Addr::Domain`]
//! carries the client's raw bytes to `i2p_addr`, and IP targets, BIND and UDP
//! ASSOCIATE are returned so the server can refuse them with the right reply.
//! SOCKS5 also carries Tor's RESOLVE (0xF0) and RESOLVE_PTR (0xF1), which
//! torsocks sends; their port means nothing and may be 0. Every reply to a
//! request, in either version, is encoded by [`reply_bound`]. The UDP
//! ASSOCIATE datagram header is in `udp`.
//! Specs: RFC 1928 (SOCKS5), RFC 1929 (username/password), the SOCKS4 and
//! SOCKS4a protocol notes, Tor's socks-extensions.txt (RESOLVE, RESOLVE_PTR).

pub mod udp;

use std::fmt;
use std::mem;
use std::net::{IpAddr, SocketAddr};

/// Most bytes a whole handshake (every message up to and including the
/// request) may take; a client still talking past this is failed.
pub const MAX_HANDSHAKE: usize = 1024;
/// Longest SOCKS4 USERID, without its NUL.
pub const MAX_USERID: usize = 255;
/// Longest SOCKS4a hostname or SOCKS5 domain name.
pub const MAX_HOSTNAME: usize = 255;

const SOCKS4_VERSION: u8 = 4;
const SOCKS5_VERSION: u8 = 5;
/// First bytes of the HTTP methods a browser would send (GET, HEAD, POST,
/// PUT, CONNECT, OPTIONS, DELETE, TRACE) when set up to use us as an HTTP proxy.
const HTTP_FIRST_BYTES: &[u8] = b"GHPCODT";

/// SOCKS4 CD for CONNECT; the only SOCKS4 command we take.
const SOCKS4_CONNECT: u8 = 1;

// RFC 1928 §3 methods.
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;

// RFC 1929 §2: sub-negotiation version and status bytes.
const AUTH_VERSION: u8 = 1;
const AUTH_SUCCESS: u8 = 0;
const AUTH_FAILURE: u8 = 1;

// RFC 1928 §4 commands and address types.
const CMD_CONNECT: u8 = 1;
const CMD_BIND: u8 = 2;
const CMD_UDP_ASSOCIATE: u8 = 3;
// Tor's SOCKS extensions: a name to an address, an address to a name.
const CMD_RESOLVE: u8 = 0xf0;
const CMD_RESOLVE_PTR: u8 = 0xf1;
// Shared with the UDP request header (`udp`), which uses the same three.
pub(crate) const ATYP_IPV4: u8 = 1;
pub(crate) const ATYP_DOMAIN: u8 = 3;
pub(crate) const ATYP_IPV6: u8 = 4;

/// Body of the answer to a browser that mistook us for an HTTP proxy.
const HTTP_501_BODY: &str = "This is i2psocks, a SOCKS proxy to the I2P network, not an HTTP proxy.\n\
Configure your client to use it as a SOCKS5 proxy that resolves names itself,\n\
for example socks5h://127.0.0.1:4447 (the default address).\n";

/// SOCKS protocol version chosen by the client's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// SOCKS5 reply codes (RFC 1928 §6). SOCKS4 maps 0x00 to 0x5A and all else to 0x5B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rep {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddrTypeNotSupported = 0x08,
}

/// SOCKS command from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
    /// Tor's RESOLVE: the address of a name, answered in BND.ADDR.
    Resolve,
    /// Tor's RESOLVE_PTR: the name of an address, answered in BND.ADDR.
    ResolvePtr,
}

/// Destination address as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Ipv4([u8; 4]),
    Ipv6([u8; 16]),
    /// SOCKS5 ATYP=3 or a SOCKS4a hostname: raw bytes (1..=255 of them),
    /// NOT validated here: they may hold NUL, spaces, quotes, anything.
    Domain(Vec<u8>),
}

/// Credentials the client presented (used for identity isolation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    /// RFC 1929 username/password (either may be empty).
    UserPass {
        user: Vec<u8>,
        pass: Vec<u8>,
    },
    /// SOCKS4/4a USERID (non-empty).
    UserId(Vec<u8>),
}

/// A complete, syntactically valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub version: Version,
    pub command: Command,
    pub addr: Addr,
    pub port: u16,
    pub credentials: Credentials,
}

/// Server-side policy the handshake needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Access control is on: SOCKS5 must use method 0x02; SOCKS4/4a is refused.
    pub require_auth: bool,
    /// When the client offers both 0x00 and 0x02 and auth is not required, pick 0x00.
    pub prefer_no_auth: bool,
}

/// What the caller must do after feeding bytes.
///
/// The caller drops `consumed` bytes, then: on `Reply` writes it and calls
/// again with what is left; on `CheckAuth` writes the result of
/// [`Handshake::auth_verdict`] and, if that accepted, calls again; on `Done`
/// opens the stream and later forwards what is left as payload; on `Fail`
/// writes the reply and closes. `NeedMore` means read more and call again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Need more bytes. Nothing of an incomplete message is consumed.
    NeedMore,
    /// Write these bytes to the client, then keep feeding.
    Reply(Vec<u8>),
    /// RFC 1929 credentials arrived; call [`Handshake::auth_verdict`].
    CheckAuth { user: Vec<u8>, pass: Vec<u8> },
    /// The request is complete. The caller validates the target and later
    /// sends [`reply`] with the outcome. Bytes after the request belong to the stream.
    Done(Request),
    /// Write `reply` (may be empty), then close gracefully. `consumed` is 0.
    Fail { reply: Vec<u8>, reason: &'static str },
}

/// Result of one [`Handshake::handshake`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How many input bytes were consumed.
    pub consumed: usize,
    pub action: Action,
}

/// Where the handshake is; each state names the message expected next.
enum State {
    /// Nothing parsed: the first byte picks SOCKS4 (the whole request is one
    /// message) or SOCKS5 (the method greeting).
    Initial,
    /// SOCKS5 chose method 0x02: the RFC 1929 sub-negotiation comes next.
    Auth,
    /// Credentials were handed out in [`Action::CheckAuth`]; the caller owes
    /// [`Handshake::auth_verdict`] before any more input is taken.
    AuthVerdict { user: Vec<u8>, pass: Vec<u8> },
    /// SOCKS5 method negotiation is over: the request comes next.
    Request { credentials: Credentials },
    /// A request was returned; the rest of the input is stream payload.
    Done,
    /// A `Fail` was returned or the credentials were rejected.
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Initial => "Initial",
            State::Auth => "Auth",
            State::AuthVerdict { .. } => "AuthVerdict",
            State::Request { .. } => "Request",
            State::Done => "Done",
            State::Failed => "Failed",
        }
    }
}

/// The server-side handshake state machine.
pub struct Handshake {
    policy: Policy,
    state: State,
    version: Option<Version>,
    /// Bytes of completed messages so far, held against [`MAX_HANDSHAKE`].
    consumed: usize,
}

/// Written by hand so that a password never reaches a log through `{:?}`.
impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("policy", &self.policy)
            .field("state", &self.state.name())
            .field("version", &self.version)
            .field("consumed", &self.consumed)
            .finish()
    }
}

impl Handshake {
    pub fn new(policy: Policy) -> Self {
        Handshake { policy, state: State::Initial, version: None, consumed: 0 }
    }

    /// Feed the unconsumed input (caller keeps any bytes not consumed and
    /// presents them again with more appended). One message is handled per
    /// call; see [`Action`] for what the caller does next.
    pub fn handshake(&mut self, input: &[u8]) -> Step {
        // The parser never sees past the budget, so a client that is still
        // mid-message when the budget runs out fails whatever it sends later,
        // and the outcome does not depend on how the bytes were split.
        let budget = MAX_HANDSHAKE.saturating_sub(self.consumed);
        let window = input.get(..budget).unwrap_or(input);
        match self.parse(window) {
            Ok((consumed, action, next)) => {
                self.state = next;
                self.consumed = self.consumed.saturating_add(consumed);
                Step { consumed, action }
            }
            Err(Stop::Incomplete) if input.len() > window.len() => {
                let reply = self.version.map(|v| reply(v, Rep::GeneralFailure)).unwrap_or_default();
                self.fail(reply, "handshake longer than MAX_HANDSHAKE bytes")
            }
            Err(Stop::Incomplete) => Step { consumed: 0, action: Action::NeedMore },
            Err(Stop::Bad { reply, reason }) => self.fail(reply, reason),
        }
    }

    /// Answer a [`Action::CheckAuth`]: returns the RFC 1929 reply bytes
    /// (`01 00` or `01 01`); after `false` the handshake is failed and the
    /// caller closes. Called at any other time it fails the handshake and
    /// returns `01 01`.
    pub fn auth_verdict(&mut self, ok: bool) -> Vec<u8> {
        match mem::replace(&mut self.state, State::Failed) {
            State::AuthVerdict { user, pass } if ok => {
                self.state = State::Request { credentials: Credentials::UserPass { user, pass } };
                vec![AUTH_VERSION, AUTH_SUCCESS]
            }
            _ => vec![AUTH_VERSION, AUTH_FAILURE],
        }
    }

    /// The SOCKS version, once known (from the client's first byte, so it is
    /// known even while the rest of the first message is still missing).
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// True once `Done` or `Fail` was returned (or credentials rejected):
    /// every later call to [`Handshake::handshake`] returns `Fail`.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    fn fail(&mut self, reply: Vec<u8>, reason: &'static str) -> Step {
        self.state = State::Failed;
        Step { consumed: 0, action: Action::Fail { reply, reason } }
    }

    /// Parse the next message: its length, what to tell the caller, and the
    /// state after it.
    fn parse(&mut self, input: &[u8]) -> Parsed<(usize, Action, State)> {
        match &self.state {
            State::Initial => {
                let first = *input.first().ok_or(Stop::Incomplete)?;
                match first {
                    SOCKS4_VERSION => {
                        self.version = Some(Version::V4);
                        let (request, len) = parse_socks4(input, self.policy)?;
                        Ok((len, Action::Done(request), State::Done))
                    }
                    SOCKS5_VERSION => {
                        self.version = Some(Version::V5);
                        let (method, len) = parse_greeting(input, self.policy)?;
                        let next = if method == METHOD_USER_PASS {
                            State::Auth
                        } else {
                            State::Request { credentials: Credentials::None }
                        };
                        Ok((len, Action::Reply(vec![SOCKS5_VERSION, method]), next))
                    }
                    b if HTTP_FIRST_BYTES.contains(&b) => {
                        Err(bad(http_501(), "HTTP request on the SOCKS port"))
                    }
                    _ => Err(bad(Vec::new(), "not a SOCKS 4 or 5 client")),
                }
            }
            State::Auth => {
                let (user, pass, len) = parse_user_pass(input)?;
                let action = Action::CheckAuth { user: user.clone(), pass: pass.clone() };
                Ok((len, action, State::AuthVerdict { user, pass }))
            }
            // Taking input before the verdict would let a caller bug skip
            // the password check.
            State::AuthVerdict { .. } => Err(bad(Vec::new(), "input before auth_verdict")),
            State::Request { credentials } => {
                let (request, len) = parse_socks5_request(input, credentials)?;
                Ok((len, Action::Done(request), State::Done))
            }
            State::Done | State::Failed => Err(bad(Vec::new(), "handshake already finished")),
        }
    }
}

/// Reply bytes for a request outcome in the client's version, with BND
/// `0.0.0.0:0` (OpenBSD nc rejects a domain there); see [`reply_bound`].
pub fn reply(version: Version, rep: Rep) -> Vec<u8> {
    reply_bound(version, rep, SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// BND.ADDR and BND.PORT of a SOCKS5 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound<'a> {
    Ip(SocketAddr),
    /// A name (ATYP 3): RESOLVE_PTR's answer. At most 255 bytes.
    Domain(&'a [u8], u16),
}

impl From<SocketAddr> for Bound<'_> {
    fn from(a: SocketAddr) -> Self {
        Bound::Ip(a)
    }
}

/// Every reply to a request is encoded here. SOCKS5: `05 REP 00 ATYP BND.ADDR
/// BND.PORT` with BND = `bnd` (UDP ASSOCIATE's relay address, RESOLVE's
/// address or RESOLVE_PTR's name; `0.0.0.0:0` otherwise). A name that does
/// not fit the length byte (none of ours: validated names are shorter) turns
/// the reply into a general failure rather than a malformed one. SOCKS4 has
/// no bound address: `00 5A|5B 00 00 00 00 00 00`.
pub fn reply_bound<'a>(version: Version, rep: Rep, bnd: impl Into<Bound<'a>>) -> Vec<u8> {
    match version {
        Version::V5 => {
            let mut out = vec![SOCKS5_VERSION, rep as u8, 0];
            let port = match bnd.into() {
                Bound::Ip(a) => {
                    match a.ip() {
                        IpAddr::V4(ip) => {
                            out.push(ATYP_IPV4);
                            out.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            out.push(ATYP_IPV6);
                            out.extend_from_slice(&ip.octets());
                        }
                    }
                    a.port()
                }
                Bound::Domain(name, port) => match u8::try_from(name.len()) {
                    Ok(len) if len > 0 => {
                        out.extend_from_slice(&[ATYP_DOMAIN, len]);
                        out.extend_from_slice(name);
                        port
                    }
                    _ => return reply(version, Rep::GeneralFailure),
                },
            };
            out.extend_from_slice(&port.to_be_bytes());
            out
        }
        Version::V4 => {
            let code = if rep == Rep::Succeeded { 0x5a } else { 0x5b };
            vec![0, code, 0, 0, 0, 0, 0, 0]
        }
    }
}

/// The short answer to a browser that talks HTTP to us.
fn http_501() -> Vec<u8> {
    format!(
        "HTTP/1.0 501 Not Implemented\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         \r\n\
         {}",
        HTTP_501_BODY.len(),
        HTTP_501_BODY
    )
    .into_bytes()
}

/// Why a message could not be taken.
enum Stop {
    /// The message is not all there yet.
    Incomplete,
    /// The message is wrong: write `reply` (may be empty) and close.
    Bad { reply: Vec<u8>, reason: &'static str },
}

type Parsed<T> = Result<T, Stop>;

fn bad(reply: Vec<u8>, reason: &'static str) -> Stop {
    Stop::Bad { reply, reason }
}

fn bad4(rep: Rep, reason: &'static str) -> Stop {
    bad(reply(Version::V4, rep), reason)
}

fn bad5(rep: Rep, reason: &'static str) -> Stop {
    bad(reply(Version::V5, rep), reason)
}

/// Reads one message front to back. Fields are checked as soon as they are
/// read, so whether a message fails, and why, depends only on its bytes and
/// never on where the reads split them.
struct Cursor<'a> {
    rest: &'a [u8],
    used: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { rest: buf, used: 0 }
    }

    fn take(&mut self, n: usize) -> Parsed<&'a [u8]> {
        let head = self.rest.get(..n).ok_or(Stop::Incomplete)?;
        self.rest = self.rest.get(n..).unwrap_or_default();
        self.used = self.used.saturating_add(n);
        Ok(head)
    }

    fn byte(&mut self) -> Parsed<u8> {
        let (&b, rest) = self.rest.split_first().ok_or(Stop::Incomplete)?;
        self.rest = rest;
        self.used = self.used.saturating_add(1);
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Parsed<[u8; N]> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| Stop::Incomplete)
    }

    /// Network byte order (RFC 1928 §4, SOCKS4 DSTPORT).
    fn port(&mut self) -> Parsed<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A SOCKS4 NUL-terminated string of at most `max` bytes. Fails as soon
    /// as `max + 1` bytes without a NUL are here rather than waiting for more.
    fn socks4_string(&mut self, max: usize, too_long: &'static str) -> Parsed<&'a [u8]> {
        let limit = max.saturating_add(1);
        let window = self.rest.get(..limit).unwrap_or(self.rest);
        match window.iter().position(|&b| b == 0) {
            Some(len) => {
                let s = self.take(len)?;
                self.byte()?;
                Ok(s)
            }
            None if window.len() >= limit => Err(bad4(Rep::GeneralFailure, too_long)),
            None => Err(Stop::Incomplete),
        }
    }
}

/// SOCKS4/4a request: VN CD DSTPORT DSTIP USERID NUL [HOSTNAME NUL].
fn parse_socks4(input: &[u8], policy: Policy) -> Parsed<(Request, usize)> {
    let mut c = Cursor::new(input);
    c.byte()?; // VN, already seen to be 4
    if c.byte()? != SOCKS4_CONNECT {
        return Err(bad4(Rep::CommandNotSupported, "SOCKS4 command is not CONNECT"));
    }
    let port = c.port()?;
    if port == 0 {
        return Err(bad4(Rep::NotAllowed, "SOCKS4 port 0"));
    }
    let ip: [u8; 4] = c.array()?;
    // SOCKS4a: 0.0.0.x with x != 0 says a hostname follows the USERID.
    let socks4a = matches!(ip, [0, 0, 0, x] if x != 0);
    if ip == [0, 0, 0, 0] {
        return Err(bad4(Rep::NotAllowed, "SOCKS4 address 0.0.0.0"));
    }
    let userid = c.socks4_string(MAX_USERID, "SOCKS4 USERID too long")?;
    let addr = if socks4a {
        let host = c.socks4_string(MAX_HOSTNAME, "SOCKS4a hostname too long")?;
        if host.is_empty() {
            return Err(bad4(Rep::NotAllowed, "SOCKS4a hostname empty"));
        }
        Addr::Domain(host.to_vec())
    } else {
        Addr::Ipv4(ip)
    };
    // Checked last so the client has sent its whole request and reads the
    // reply instead of losing it to a reset.
    if policy.require_auth {
        return Err(bad4(Rep::NotAllowed, "SOCKS4 cannot carry a password and access control is on"));
    }
    let credentials =
        if userid.is_empty() { Credentials::None } else { Credentials::UserId(userid.to_vec()) };
    let request = Request { version: Version::V4, command: Command::Connect, addr, port, credentials };
    Ok((request, c.used))
}

/// SOCKS5 method greeting (RFC 1928 §3): VER NMETHODS METHODS.
fn parse_greeting(input: &[u8], policy: Policy) -> Parsed<(u8, usize)> {
    let none_acceptable = || vec![SOCKS5_VERSION, METHOD_NONE_ACCEPTABLE];
    let mut c = Cursor::new(input);
    c.byte()?; // VER, already seen to be 5
    let nmethods = c.byte()?;
    if nmethods == 0 {
        return Err(bad(none_acceptable(), "SOCKS5 greeting offers no method"));
    }
    let methods = c.take(usize::from(nmethods))?;
    match choose_method(methods, policy) {
        Some(method) => Ok((method, c.used)),
        None => Err(bad(none_acceptable(), "no acceptable SOCKS5 method")),
    }
}

/// 0x02 wins when offered unless told otherwise: the credentials are what
/// keeps one application's identity apart from another's.
fn choose_method(offered: &[u8], policy: Policy) -> Option<u8> {
    let no_auth = offered.contains(&METHOD_NO_AUTH);
    let user_pass = offered.contains(&METHOD_USER_PASS);
    match (no_auth, user_pass) {
        (_, true) if policy.require_auth => Some(METHOD_USER_PASS),
        _ if policy.require_auth => None,
        (true, true) if policy.prefer_no_auth => Some(METHOD_NO_AUTH),
        (_, true) => Some(METHOD_USER_PASS),
        (true, false) => Some(METHOD_NO_AUTH),
        (false, false) => None,
    }
}

/// RFC 1929 §2: VER ULEN UNAME PLEN PASSWD.
fn parse_user_pass(input: &[u8]) -> Parsed<(Vec<u8>, Vec<u8>, usize)> {
    let mut c = Cursor::new(input);
    if c.byte()? != AUTH_VERSION {
        // Nothing in RFC 1929 to answer a wrong version with: just close.
        return Err(bad(Vec::new(), "RFC 1929 sub-negotiation version is not 1"));
    }
    let ulen = c.byte()?;
    let user = c.take(usize::from(ulen))?;
    let plen = c.byte()?;
    let pass = c.take(usize::from(plen))?;
    Ok((user.to_vec(), pass.to_vec(), c.used))
}

/// SOCKS5 request (RFC 1928 §4): VER CMD RSV ATYP DST.ADDR DST.PORT.
fn parse_socks5_request(input: &[u8], credentials: &Credentials) -> Parsed<(Request, usize)> {
    let mut c = Cursor::new(input);
    if c.byte()? != SOCKS5_VERSION {
        return Err(bad5(Rep::GeneralFailure, "SOCKS5 request version is not 5"));
    }
    let command = match c.byte()? {
        CMD_CONNECT => Command::Connect,
        CMD_BIND => Command::Bind,
        CMD_UDP_ASSOCIATE => Command::UdpAssociate,
        CMD_RESOLVE => Command::Resolve,
        CMD_RESOLVE_PTR => Command::ResolvePtr,
        _ => return Err(bad5(Rep::CommandNotSupported, "unknown SOCKS5 command")),
    };
    if c.byte()? != 0 {
        return Err(bad5(Rep::GeneralFailure, "SOCKS5 reserved byte is not 0"));
    }
    let addr = match c.byte()? {
        ATYP_IPV4 => Addr::Ipv4(c.array()?),
        ATYP_IPV6 => Addr::Ipv6(c.array()?),
        ATYP_DOMAIN => {
            let len = c.byte()?;
            // An empty name is a malformed target, refused like the others.
            if len == 0 {
                return Err(bad5(Rep::NotAllowed, "SOCKS5 domain name empty"));
            }
            Addr::Domain(c.take(usize::from(len))?.to_vec())
        }
        _ => return Err(bad5(Rep::AddrTypeNotSupported, "unknown SOCKS5 address type")),
    };
    let port = c.port()?;
    // For UDP ASSOCIATE the address and port are the client's own, and RFC
    // 1928 §7 says a client that does not know them yet sends all zeros.
    // RESOLVE and RESOLVE_PTR ignore the port (tor-resolve sends 0).
    let port_matters = matches!(command, Command::Connect | Command::Bind);
    if port == 0 && port_matters {
        return Err(bad5(Rep::NotAllowed, "SOCKS5 port 0"));
    }
    let request = Request { version: Version::V5, command, addr, port, credentials: credentials.clone() };
    Ok((request, c.used))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    // Exact failure replies, spelled out once.
    const V4_GRANTED: &[u8] = b"\x00\x5a\x00\x00\x00\x00\x00\x00";
    const V4_REJECTED: &[u8] = b"\x00\x5b\x00\x00\x00\x00\x00\x00";
    const V5_GENERAL: &[u8] = b"\x05\x01\x00\x01\x00\x00\x00\x00\x00\x00";
    const V5_NOT_ALLOWED: &[u8] = b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00";
    const V5_BAD_COMMAND: &[u8] = b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00";
    const V5_BAD_ATYP: &[u8] = b"\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00";
    const V5_NO_METHOD: &[u8] = b"\x05\xff";

    const GREET_NO_AUTH: &[u8] = b"\x05\x01\x00";
    const GREET_USER_PASS: &[u8] = b"\x05\x01\x02";
    const REQ_IPV4: &[u8] = b"\x05\x01\x00\x01\x02\x02\x02\x02\x11\x11";
    const REQ_DOMAIN: &[u8] = b"\x05\x01\x00\x03\x07foo.i2p\x00\x50";
    /// torsocks' RESOLVE: ATYP 3 and the dummy port 42.
    const REQ_RESOLVE: &[u8] = b"\x05\xf0\x00\x03\x07foo.i2p\x00\x2a";
    /// torsocks' RESOLVE_PTR: ATYP 1 and port 42.
    const REQ_RESOLVE_PTR: &[u8] = b"\x05\xf1\x00\x01\x0a\xc0\x00\x01\x00\x2a";

    fn new() -> Handshake {
        Handshake::new(Policy::default())
    }

    fn step(h: &mut Handshake, input: &[u8]) -> Step {
        let s = h.handshake(input);
        assert!(s.consumed <= input.len());
        s
    }

    /// Feed one complete message that must be answered with `Reply(reply)`.
    fn expect_reply(h: &mut Handshake, input: &[u8], reply: &[u8]) {
        let s = step(h, input);
        assert_eq!(s.action, Action::Reply(reply.to_vec()));
        assert_eq!(s.consumed, input.len());
    }

    /// The input must fail with exactly `reply`, leaving the handshake dead.
    fn expect_fail(h: &mut Handshake, input: &[u8], reply: &[u8]) {
        let s = step(h, input);
        match s.action {
            Action::Fail { reply: r, .. } => assert_eq!(r, reply),
            other => panic!("expected Fail, got {other:?}"),
        }
        assert_eq!(s.consumed, 0);
        assert!(h.is_finished());
        let again = step(h, b"\x05\x01\x00");
        assert!(matches!(again.action, Action::Fail { ref reply, .. } if reply.is_empty()));
    }

    fn expect_done(h: &mut Handshake, input: &[u8], consumed: usize) -> Request {
        let s = step(h, input);
        assert_eq!(s.consumed, consumed);
        assert!(h.is_finished());
        match s.action {
            Action::Done(r) => r,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn v5_no_auth() -> Handshake {
        let mut h = new();
        expect_reply(&mut h, GREET_NO_AUTH, b"\x05\x00");
        h
    }

    fn v4_request(addr: Addr, port: u16, credentials: Credentials) -> Request {
        Request { version: Version::V4, command: Command::Connect, addr, port, credentials }
    }

    fn v5_request(command: Command, addr: Addr, port: u16, credentials: Credentials) -> Request {
        Request { version: Version::V5, command, addr, port, credentials }
    }

    fn user_pass(user: &[u8], pass: &[u8]) -> Credentials {
        Credentials::UserPass { user: user.to_vec(), pass: pass.to_vec() }
    }

    #[test]
    fn reply_table() {
        let all = [
            (Rep::Succeeded, 0x00),
            (Rep::GeneralFailure, 0x01),
            (Rep::NotAllowed, 0x02),
            (Rep::NetworkUnreachable, 0x03),
            (Rep::HostUnreachable, 0x04),
            (Rep::ConnectionRefused, 0x05),
            (Rep::TtlExpired, 0x06),
            (Rep::CommandNotSupported, 0x07),
            (Rep::AddrTypeNotSupported, 0x08),
        ];
        for (rep, code) in all {
            assert_eq!(reply(Version::V5, rep), [5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
            let v4 = if rep == Rep::Succeeded { V4_GRANTED } else { V4_REJECTED };
            assert_eq!(reply(Version::V4, rep), v4);
        }
    }

    #[test]
    fn reply_bytes() {
        assert_eq!(
            reply_bound(Version::V5, Rep::Succeeded, "127.0.0.1:4660".parse::<SocketAddr>().unwrap()),
            b"\x05\x00\x00\x01\x7f\x00\x00\x01\x12\x34"
        );
        let mut v6 = b"\x05\x00\x00\x04".to_vec();
        v6.extend_from_slice(&[0; 15]);
        v6.extend_from_slice(b"\x01\x00\x35");
        assert_eq!(reply_bound(Version::V5, Rep::Succeeded, "[::1]:53".parse::<SocketAddr>().unwrap()), v6);
        // RESOLVE's answer: the address, port 0 (Tor's shape; torsocks reads
        // the first 8 bytes).
        let a: SocketAddr = "10.192.0.1:0".parse().unwrap();
        assert_eq!(reply_bound(Version::V5, Rep::Succeeded, a), b"\x05\x00\x00\x01\x0a\xc0\x00\x01\x00\x00");
        assert_eq!(
            reply_bound(Version::V5, Rep::Succeeded, Bound::Ip(a)),
            reply_bound(Version::V5, Rep::Succeeded, a)
        );
        // RESOLVE_PTR's answer: the name as ATYP 3, port 0.
        assert_eq!(
            reply_bound(Version::V5, Rep::Succeeded, Bound::Domain(b"foo.i2p", 0)),
            b"\x05\x00\x00\x03\x07foo.i2p\x00\x00"
        );
        let long = [b'a'; 255];
        let r = reply_bound(Version::V5, Rep::Succeeded, Bound::Domain(&long, 0x1234));
        assert_eq!((r.len(), &r[..5], &r[260..]), (262, &b"\x05\x00\x00\x03\xff"[..], &b"\x12\x34"[..]));
        // A name the length byte cannot carry, or none, fails in one piece.
        assert_eq!(reply_bound(Version::V5, Rep::Succeeded, Bound::Domain(&[b'a'; 256], 0)), V5_GENERAL);
        assert_eq!(reply_bound(Version::V5, Rep::Succeeded, Bound::Domain(b"", 0)), V5_GENERAL);
        // SOCKS4 has no bound address.
        assert_eq!(reply_bound(Version::V4, Rep::Succeeded, Bound::Domain(b"foo.i2p", 0)), V4_GRANTED);
        assert_eq!(reply_bound(Version::V4, Rep::HostUnreachable, a), V4_REJECTED);
    }

    // ---- Tor test_socks.c: 4_unsupported_commands ----
    #[test]
    fn socks4_unsupported_commands() {
        // BIND to 2.2.2.2:4369.
        let mut h = new();
        expect_fail(&mut h, b"\x04\x02\x11\x11\x02\x02\x02\x02\x00", V4_REJECTED);
        assert_eq!(h.version(), Some(Version::V4));
        // Tor's RESOLVE extension (F0) over 4a is not ours either.
        let mut h = new();
        expect_fail(&mut h, b"\x04\xf0\x01\x01\x00\x00\x00\x02me\x00foo.i2p\x00", V4_REJECTED);
    }

    // ---- Tor test_socks.c: 4_supported_commands ----
    #[test]
    fn socks4_supported_commands() {
        // CONNECT 2.2.2.3:4370, empty USERID: returned, the server refuses IPs.
        let mut h = new();
        let r = expect_done(&mut h, b"\x04\x01\x11\x12\x02\x02\x02\x03\x00", 9);
        assert_eq!(r, v4_request(Addr::Ipv4([2, 2, 2, 3]), 4370, Credentials::None));
        assert_eq!(h.version(), Some(Version::V4));

        // With USERID "me", followed by payload that must stay unconsumed.
        let mut h = new();
        let r = expect_done(&mut h, b"\x04\x01\x11\x12\x02\x02\x02\x04me\x00GET /", 11);
        let me = Credentials::UserId(b"me".to_vec());
        assert_eq!(r, v4_request(Addr::Ipv4([2, 2, 2, 4]), 4370, me.clone()));

        // SOCKS4a CONNECT to a hostname.
        let mut h = new();
        let input = b"\x04\x01\x01\xbb\x00\x00\x00\x02me\x00torproject.i2p\x00";
        let r = expect_done(&mut h, input, input.len());
        let host = Addr::Domain(b"torproject.i2p".to_vec());
        assert_eq!(r, v4_request(host, 443, me));
    }

    // ---- Tor test_socks.c: 4_bad_arguments ----
    #[test]
    fn socks4_bad_arguments() {
        // Port 0.
        expect_fail(&mut new(), b"\x04\x01\x00\x00\x01\x02\x03\x04\x00", V4_REJECTED);
        // 0.0.0.0 is neither an address nor the 4a marker.
        expect_fail(&mut new(), b"\x04\x01\x00\x50\x00\x00\x00\x00\x00", V4_REJECTED);

        // 2000-byte USERID.
        let head = b"\x04\x01\x00\x50\x01\x02\x03\x04";
        let mut long = head.to_vec();
        long.extend(std::iter::repeat(b'x').take(2000));
        long.push(0);
        expect_fail(&mut new(), &long, V4_REJECTED);
        // It fails once 256 bytes without a NUL are in, not later.
        assert_eq!(step(&mut new(), &long[..8 + 255]).action, Action::NeedMore);
        expect_fail(&mut new(), &long[..8 + 256], V4_REJECTED);
        // 255 bytes is the most that is taken.
        let mut max = long[..8 + 255].to_vec();
        max.push(0);
        let r = expect_done(&mut new(), &max, max.len());
        assert_eq!(r.credentials, Credentials::UserId(vec![b'x'; 255]));

        // 2000-byte 4a hostname, with and without its NUL.
        let head = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00";
        let mut host = head.to_vec();
        host.extend(std::iter::repeat(b'y').take(2000));
        expect_fail(&mut new(), &host, V4_REJECTED);
        host.push(0);
        expect_fail(&mut new(), &host, V4_REJECTED);
        assert_eq!(step(&mut new(), &host[..9 + 255]).action, Action::NeedMore);
        expect_fail(&mut new(), &host[..9 + 256], V4_REJECTED);
        let mut max = host[..9 + 255].to_vec();
        max.push(0);
        let r = expect_done(&mut new(), &max, max.len());
        assert_eq!(r.addr, Addr::Domain(vec![b'y'; 255]));
        // Empty 4a hostname.
        expect_fail(&mut new(), b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", V4_REJECTED);

        // Bogus hostname: returned raw; i2p_addr refuses it, we must not panic.
        let input = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00---\xff.\x00";
        let r = expect_done(&mut new(), input, input.len());
        assert_eq!(r.addr, Addr::Domain(b"---\xff.".to_vec()));
    }

    // ---- Tor test_socks.c: 5_unsupported_commands ----
    #[test]
    fn socks5_unsupported_commands() {
        // Methods 00 and 01 (GSSAPI): 00 is taken.
        let mut h = new();
        expect_reply(&mut h, b"\x05\x02\x00\x01", b"\x05\x00");
        // BIND parses; the server answers it 07.
        let r = expect_done(&mut h, b"\x05\x02\x00\x01\x02\x02\x02\x01\x01\x01", 10);
        let ip = Addr::Ipv4([2, 2, 2, 1]);
        assert_eq!(r, v5_request(Command::Bind, ip.clone(), 0x0101, Credentials::None));

        // UDP ASSOCIATE likewise; methods 00 01 02 pick 02.
        let mut h = new();
        expect_reply(&mut h, b"\x05\x03\x00\x01\x02", b"\x05\x02");
        assert!(matches!(step(&mut h, b"\x01\x00\x00").action, Action::CheckAuth { .. }));
        assert_eq!(h.auth_verdict(true), b"\x01\x00");
        let r = expect_done(&mut h, b"\x05\x03\x00\x01\x02\x02\x02\x01\x01\x01", 10);
        assert_eq!(r, v5_request(Command::UdpAssociate, ip, 0x0101, user_pass(b"", b"")));

        // Commands nobody defined, Tor's F0 and F1 aside.
        for cmd in [0x00, 0x04, 0xef, 0xf2, 0xff] {
            let mut h = v5_no_auth();
            expect_fail(
                &mut h,
                &[5, cmd, 0, 3, 7, b'f', b'o', b'o', b'.', b'i', b'2', b'p', 1, 2],
                V5_BAD_COMMAND,
            );
            // Decided as soon as CMD is in.
            expect_fail(&mut v5_no_auth(), &[5, cmd], V5_BAD_COMMAND);
        }
    }

    // ---- Tor test_socks.c: 5_supported_commands ----
    #[test]
    fn socks5_supported_commands() {
        let mut h = v5_no_auth();
        assert_eq!(h.version(), Some(Version::V5));
        let r = expect_done(&mut h, REQ_IPV4, 10);
        let ip = Addr::Ipv4([2, 2, 2, 2]);
        assert_eq!(r, v5_request(Command::Connect, ip, 4369, Credentials::None));

        // Greeting and request in one read: one message per call.
        let mut h = new();
        let mut both = GREET_NO_AUTH.to_vec();
        both.extend_from_slice(b"\x05\x01\x00\x03\x0etorproject.i2p\x11\x11");
        let s = step(&mut h, &both);
        assert_eq!(s, Step { consumed: 3, action: Action::Reply(b"\x05\x00".to_vec()) });
        let r = expect_done(&mut h, &both[3..], both.len() - 3);
        let host = Addr::Domain(b"torproject.i2p".to_vec());
        assert_eq!(r, v5_request(Command::Connect, host, 4369, Credentials::None));

        // IPv6 is parsed (and refused later by the server).
        let mut h = v5_no_auth();
        let mut req = b"\x05\x01\x00\x04".to_vec();
        req.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        req.extend_from_slice(b"\x00\x50");
        let r = expect_done(&mut h, &req, 22);
        let v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(r.addr, Addr::Ipv6(v6));
        assert_eq!(r.port, 80);

        // A 255-byte domain is the longest.
        let mut h = v5_no_auth();
        let mut req = b"\x05\x01\x00\x03\xff".to_vec();
        req.extend(std::iter::repeat(b'a').take(255));
        req.extend_from_slice(b"\x00\x50");
        let r = expect_done(&mut h, &req, 262);
        assert_eq!(r.addr, Addr::Domain(vec![b'a'; 255]));

        // Tor's RESOLVE (F0) for a name, as torsocks sends it (port 42)...
        let r = expect_done(&mut v5_no_auth(), REQ_RESOLVE, REQ_RESOLVE.len());
        assert_eq!(r, v5_request(Command::Resolve, Addr::Domain(b"foo.i2p".to_vec()), 42, Credentials::None));
        // ...and as tor-resolve sends it (port 0, which is fine here).
        let r = expect_done(&mut v5_no_auth(), b"\x05\xf0\x00\x03\x03a.b\x00\x00", 10);
        assert_eq!(r, v5_request(Command::Resolve, Addr::Domain(b"a.b".to_vec()), 0, Credentials::None));
        // RESOLVE for an IP address parses (the server refuses it).
        let r = expect_done(&mut v5_no_auth(), b"\x05\xf0\x00\x01\x02\x02\x02\x05\x00\x00", 10);
        assert_eq!(r.addr, Addr::Ipv4([2, 2, 2, 5]));
        // RESOLVE_PTR (F1) of 10.192.0.1, torsocks' ATYP 1...
        let r = expect_done(&mut v5_no_auth(), REQ_RESOLVE_PTR, 10);
        assert_eq!(r, v5_request(Command::ResolvePtr, Addr::Ipv4([10, 192, 0, 1]), 42, Credentials::None));
        // ...a dotted quad as a name, and IPv6, port 0.
        let r = expect_done(&mut v5_no_auth(), b"\x05\xf1\x00\x03\x0a10.192.0.1\x00\x00", 17);
        assert_eq!(
            r,
            v5_request(Command::ResolvePtr, Addr::Domain(b"10.192.0.1".to_vec()), 0, Credentials::None)
        );
        let mut req = b"\x05\xf1\x00\x04".to_vec();
        req.extend_from_slice(&v6);
        req.extend_from_slice(b"\x00\x00");
        let r = expect_done(&mut v5_no_auth(), &req, 22);
        assert_eq!(r.addr, Addr::Ipv6(v6));
        // With credentials, as torsocks -u/-p sends them.
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        assert!(matches!(step(&mut h, b"\x01\x01u\x01p").action, Action::CheckAuth { .. }));
        assert_eq!(h.auth_verdict(true), b"\x01\x00");
        let r = expect_done(&mut h, REQ_RESOLVE, REQ_RESOLVE.len());
        assert_eq!(r.credentials, user_pass(b"u", b"p"));
        // An empty name is refused like CONNECT's.
        expect_fail(&mut v5_no_auth(), b"\x05\xf0\x00\x03\x00\x00\x2a", V5_NOT_ALLOWED);
    }

    // ---- Tor test_socks.c: 5_no_authenticate ----
    #[test]
    fn socks5_no_authenticate() {
        let mut h = new();
        expect_reply(&mut h, GREET_NO_AUTH, b"\x05\x00");
        // Tor accepts credentials sent anyway after 00 was chosen; we take
        // messages in RFC order only, so they are a bad request.
        expect_fail(&mut h, b"\x01\x02\x01\x01\x02\x01\x01", V5_GENERAL);
    }

    // ---- Tor test_socks.c: 5_authenticate ----
    #[test]
    fn socks5_authenticate() {
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        let s = step(&mut h, b"\x01\x02me\x08mypasswd");
        assert_eq!(s.consumed, 13);
        let check = Action::CheckAuth { user: b"me".to_vec(), pass: b"mypasswd".to_vec() };
        assert_eq!(s.action, check);
        assert!(!h.is_finished());
        assert_eq!(h.auth_verdict(true), b"\x01\x00");
        let r = expect_done(&mut h, REQ_DOMAIN, REQ_DOMAIN.len());
        let host = Addr::Domain(b"foo.i2p".to_vec());
        let creds = user_pass(b"me", b"mypasswd");
        assert_eq!(r, v5_request(Command::Connect, host, 80, creds));

        // A rejected password ends the handshake.
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        assert!(matches!(step(&mut h, b"\x01\x02me\x02no").action, Action::CheckAuth { .. }));
        assert_eq!(h.auth_verdict(false), b"\x01\x01");
        assert!(h.is_finished());
        let s = step(&mut h, REQ_DOMAIN);
        assert!(matches!(s.action, Action::Fail { ref reply, .. } if reply.is_empty()));
    }

    #[test]
    fn socks5_authenticate_empty_user_pass() {
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        let s = step(&mut h, b"\x01\x00\x00");
        assert_eq!(s.consumed, 3);
        assert_eq!(s.action, Action::CheckAuth { user: vec![], pass: vec![] });
        assert_eq!(h.auth_verdict(true), b"\x01\x00");
        let r = expect_done(&mut h, REQ_IPV4, 10);
        assert_eq!(r.credentials, user_pass(b"", b""));
    }

    #[test]
    fn socks5_authenticate_with_data() {
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        let mut buf = b"\x01\x02me\x03you".to_vec();
        buf.extend_from_slice(REQ_IPV4);
        buf.extend_from_slice(b"payload");
        let s = step(&mut h, &buf);
        assert_eq!(s.consumed, 8);
        assert_eq!(s.action, Action::CheckAuth { user: b"me".to_vec(), pass: b"you".to_vec() });
        assert_eq!(h.auth_verdict(true), b"\x01\x00");
        let r = expect_done(&mut h, &buf[8..], 10);
        assert_eq!(r.addr, Addr::Ipv4([2, 2, 2, 2]));
        assert_eq!(r.port, 4369);
        assert_eq!(r.credentials, user_pass(b"me", b"you"));
        assert_eq!(&buf[18..], b"payload");
    }

    #[test]
    fn socks5_auth_unsupported_type() {
        let mut h = new();
        expect_fail(&mut h, b"\x05\x01\xff", V5_NO_METHOD);
        assert_eq!(h.version(), Some(Version::V5));
        // GSSAPI only.
        expect_fail(&mut new(), b"\x05\x01\x01", V5_NO_METHOD);
        // NMETHODS = 0 is decided without waiting for more.
        expect_fail(&mut new(), b"\x05\x00", V5_NO_METHOD);
    }

    #[test]
    fn socks5_auth_unsupported_version() {
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        // Sub-negotiation version 2: close without a reply.
        expect_fail(&mut h, b"\x02\x02me\x02me", b"");
        // A request where credentials belong is the same mistake.
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        expect_fail(&mut h, REQ_IPV4, b"");
    }

    #[test]
    fn socks5_auth_before_negotiation() {
        let mut h = new();
        expect_fail(&mut h, b"\x01\x02me\x02me", b"");
        assert_eq!(h.version(), None);
    }

    #[test]
    fn socks5_malformed_commands() {
        // Unknown address type 0x23.
        expect_fail(&mut v5_no_auth(), b"\x05\x01\x00\x23\x02\x02\x02\x02\x11\x11", V5_BAD_ATYP);
        // Decided at ATYP.
        expect_fail(&mut v5_no_auth(), b"\x05\x01\x00\x00", V5_BAD_ATYP);
        // Quotes, NUL, spaces and non-UTF-8 in an FQDN are returned raw for
        // i2p_addr to refuse; parsing them must not panic.
        for name in [&b"\"\"\"\"\".com"[..], b"a b=c\"", b"x\x00y.i2p", b"\xff\xfe\n\r"] {
            let mut req = b"\x05\x01\x00\x03".to_vec();
            req.push(name.len() as u8);
            req.extend_from_slice(name);
            req.extend_from_slice(b"\x01\x02");
            let r = expect_done(&mut v5_no_auth(), &req, req.len());
            assert_eq!(r.addr, Addr::Domain(name.to_vec()));
            assert_eq!(r.port, 0x0102);
        }
    }

    #[test]
    fn socks5_bad_arguments() {
        // Port 0, with an IP and with a name.
        expect_fail(&mut v5_no_auth(), b"\x05\x01\x00\x01\x02\x02\x02\x02\x00\x00", V5_NOT_ALLOWED);
        expect_fail(&mut v5_no_auth(), b"\x05\x01\x00\x03\x03a.b\x00\x00", V5_NOT_ALLOWED);
        // ...but UDP ASSOCIATE from a client that does not know its own
        // address yet is all zeros (RFC 1928 §7).
        let r = expect_done(&mut v5_no_auth(), b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", 10);
        assert_eq!(r, v5_request(Command::UdpAssociate, Addr::Ipv4([0; 4]), 0, Credentials::None));
        // Empty domain name: a malformed target, like port 0.
        expect_fail(&mut v5_no_auth(), b"\x05\x01\x00\x03\x00\x00\x50", V5_NOT_ALLOWED);
        expect_fail(&mut v5_no_auth(), b"\x05\x01\x00\x03\x00", V5_NOT_ALLOWED);
        // RSV must be 0.
        expect_fail(&mut v5_no_auth(), b"\x05\x01\x01\x01\x02\x02\x02\x02\x11\x11", V5_GENERAL);
        // VER must be 5.
        expect_fail(&mut v5_no_auth(), b"\x04\x01\x00\x01\x02\x02\x02\x02\x11\x11", V5_GENERAL);
    }

    #[test]
    fn method_choice() {
        let open = Policy::default();
        let prefer = Policy { prefer_no_auth: true, ..open };
        let locked = Policy { require_auth: true, ..open };
        let locked_prefer = Policy { require_auth: true, prefer_no_auth: true };
        // (greeting, [open, prefer, locked, locked_prefer]); None = 05 FF.
        let table: [(&[u8], [Option<u8>; 4]); 7] = [
            (b"\x05\x01\x00", [Some(0), Some(0), None, None]),
            (b"\x05\x01\x02", [Some(2), Some(2), Some(2), Some(2)]),
            (b"\x05\x02\x00\x02", [Some(2), Some(0), Some(2), Some(2)]),
            (b"\x05\x02\x02\x00", [Some(2), Some(0), Some(2), Some(2)]),
            (b"\x05\x03\x80\x01\x00", [Some(0), Some(0), None, None]),
            (b"\x05\x02\x01\x03", [None, None, None, None]),
            (b"\x05\x04\x00\x00\x00\x00", [Some(0), Some(0), None, None]),
        ];
        for (greeting, expected) in table {
            for (policy, want) in [open, prefer, locked, locked_prefer].into_iter().zip(expected) {
                let mut h = Handshake::new(policy);
                match want {
                    Some(m) => expect_reply(&mut h, greeting, &[5, m]),
                    None => expect_fail(&mut h, greeting, V5_NO_METHOD),
                }
            }
        }
    }

    #[test]
    fn prefer_no_auth() {
        let policy = Policy { prefer_no_auth: true, ..Policy::default() };
        let mut h = Handshake::new(policy);
        expect_reply(&mut h, b"\x05\x02\x02\x00", b"\x05\x00");
        let r = expect_done(&mut h, REQ_DOMAIN, REQ_DOMAIN.len());
        assert_eq!(r.credentials, Credentials::None);
        // A client offering only 02 still authenticates.
        let mut h = Handshake::new(policy);
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
    }

    #[test]
    fn require_auth_refuses_socks4() {
        let policy = Policy { require_auth: true, ..Policy::default() };
        let input = b"\x04\x01\x00\x50\x00\x00\x00\x01user\x00foo.i2p\x00";
        // Not before the request is complete...
        for cut in 0..input.len() {
            let s = Handshake::new(policy).handshake(&input[..cut]);
            assert_eq!(s, Step { consumed: 0, action: Action::NeedMore });
        }
        // ...then 5B, USERID or not.
        expect_fail(&mut Handshake::new(policy), input, V4_REJECTED);
        expect_fail(&mut Handshake::new(policy), b"\x04\x01\x00\x50\x01\x02\x03\x04\x00", V4_REJECTED);
        // SOCKS5 with a password goes through.
        let mut h = Handshake::new(policy);
        expect_reply(&mut h, b"\x05\x02\x00\x02", b"\x05\x02");
        assert!(matches!(step(&mut h, b"\x01\x01u\x01p").action, Action::CheckAuth { .. }));
        assert_eq!(h.auth_verdict(true), b"\x01\x00");
        let r = expect_done(&mut h, REQ_DOMAIN, REQ_DOMAIN.len());
        assert_eq!(r.credentials, user_pass(b"u", b"p"));
    }

    #[test]
    fn truncated() {
        let auth = b"\x01\x02me\x08mypasswd";
        let mut v6 = b"\x05\x01\x00\x04".to_vec();
        v6.extend_from_slice(&[1; 16]);
        v6.extend_from_slice(b"\x00\x50");
        let mut ptr_v6 = v6.clone();
        ptr_v6[1] = 0xf1;
        // (messages before, message cut at every length).
        let cases: &[(&[&[u8]], &[u8])] = &[
            (&[], b"\x04\x01\x00\x50\x02\x02\x02\x02\x00"),
            (&[], b"\x04\x01\x00\x50\x02\x02\x02\x02me\x00"),
            (&[], b"\x04\x01\x00\x50\x00\x00\x00\x01\x00foo.i2p\x00"),
            (&[], b"\x04\x01\x00\x50\x00\x00\x00\x01me\x00foo.i2p\x00"),
            (&[], GREET_NO_AUTH),
            (&[], b"\x05\x03\x00\x01\x02"),
            (&[GREET_USER_PASS], auth),
            (&[GREET_USER_PASS], b"\x01\x00\x00"),
            (&[GREET_NO_AUTH], REQ_IPV4),
            (&[GREET_NO_AUTH], REQ_DOMAIN),
            (&[GREET_NO_AUTH], &v6),
            (&[GREET_USER_PASS, auth], REQ_DOMAIN),
            (&[GREET_NO_AUTH], REQ_RESOLVE),
            (&[GREET_NO_AUTH], REQ_RESOLVE_PTR),
            (&[GREET_NO_AUTH], b"\x05\xf1\x00\x03\x0a10.192.0.1\x00\x00"),
            (&[GREET_NO_AUTH], &ptr_v6),
            (&[GREET_USER_PASS, auth], REQ_RESOLVE),
        ];
        for (before, msg) in cases {
            for cut in 0..=msg.len() {
                let mut h = new();
                for m in before.iter() {
                    let s = step(&mut h, m);
                    assert_eq!(s.consumed, m.len());
                    if let Action::CheckAuth { .. } = s.action {
                        h.auth_verdict(true);
                    }
                }
                let s = step(&mut h, &msg[..cut]);
                if cut < msg.len() {
                    assert_eq!(s, Step { consumed: 0, action: Action::NeedMore }, "{msg:x?} cut {cut}");
                    assert!(!h.is_finished());
                } else {
                    assert_eq!(s.consumed, msg.len());
                    assert!(!matches!(s.action, Action::NeedMore | Action::Fail { .. }));
                }
            }
        }
    }

    #[test]
    fn wrong_protocol() {
        let mut h = new();
        let s = step(&mut h, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
        let Action::Fail { reply, .. } = s.action else { panic!("expected Fail") };
        let text = String::from_utf8(reply).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert_eq!(lines.next(), Some("HTTP/1.0 501 Not Implemented"));
        let headers: Vec<&str> = lines.collect();
        assert!(headers.contains(&"Content-Type: text/plain; charset=utf-8"));
        assert!(headers.contains(&"Connection: close"));
        assert!(headers.contains(&format!("Content-Length: {}", body.len()).as_str()));
        assert!(body.contains("SOCKS proxy") && body.contains("I2P"));
        assert!(body.contains("socks5h://127.0.0.1:4447"));
        assert!(text.len() < 512);
        assert_eq!(h.version(), None);
        assert!(h.is_finished());

        // Every method's first letter, from the first byte alone.
        for b in *b"GHPCODT" {
            let s = step(&mut new(), &[b]);
            assert!(matches!(s.action, Action::Fail { ref reply, .. } if reply.starts_with(b"HTTP/1.0 501")));
        }
        // Anything else (here a TLS ClientHello) is closed without a word.
        expect_fail(&mut new(), b"\x16\x03\x01\x02\x00\x01", b"");
        expect_fail(&mut new(), b"\x00", b"");
        // Nothing yet is just nothing yet.
        assert_eq!(step(&mut new(), b""), Step { consumed: 0, action: Action::NeedMore });
    }

    #[test]
    fn finished_refuses_more() {
        // After Done.
        let mut h = v5_no_auth();
        expect_done(&mut h, REQ_IPV4, 10);
        for input in [&b""[..], REQ_IPV4, b"\x04"] {
            let s = step(&mut h, input);
            assert!(matches!(s.action, Action::Fail { ref reply, .. } if reply.is_empty()));
            assert_eq!(s.consumed, 0);
        }
        // A verdict out of turn fails rather than unlocking anything.
        assert_eq!(h.auth_verdict(true), b"\x01\x01");
        let mut h = v5_no_auth();
        assert_eq!(h.auth_verdict(true), b"\x01\x01");
        assert!(h.is_finished());
        // Feeding input while a verdict is owed fails too.
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        assert!(matches!(step(&mut h, b"\x01\x01u\x01p").action, Action::CheckAuth { .. }));
        expect_fail(&mut h, REQ_IPV4, b"");
    }

    #[test]
    fn debug_hides_credentials() {
        let mut h = new();
        expect_reply(&mut h, GREET_USER_PASS, b"\x05\x02");
        step(&mut h, b"\x01\x02me\x06secret");
        h.auth_verdict(true);
        let text = format!("{h:?}");
        assert!(!text.contains("secret") && !text.contains("115"), "{text}");
    }

    /// Greeting offering 02 with 255 methods, 255-byte user and password:
    /// 257 + 513 = 770 bytes, leaving 254 for the request.
    fn biggest_auth() -> Vec<u8> {
        let mut t = vec![5, 255];
        t.extend(std::iter::repeat(2).take(255));
        t.extend_from_slice(&[1, 255]);
        t.extend(std::iter::repeat(b'u').take(255));
        t.push(255);
        t.extend(std::iter::repeat(b'p').take(255));
        t
    }

    fn domain_request(len: usize) -> Vec<u8> {
        let mut r = vec![5, 1, 0, 3, len as u8];
        r.extend(std::iter::repeat(b'd').take(len));
        r.extend_from_slice(&[0, 80]);
        r
    }

    #[test]
    fn handshake_bound() {
        let start = |h: &mut Handshake, t: &[u8]| {
            expect_reply(h, &t[..257], b"\x05\x02");
            assert_eq!(step(h, &t[257..]).consumed, 513);
            assert_eq!(h.auth_verdict(true), b"\x01\x00");
        };
        let t = biggest_auth();
        // A request ending at exactly MAX_HANDSHAKE is taken, with payload after it.
        let mut h = new();
        start(&mut h, &t);
        let mut req = domain_request(247);
        assert_eq!(770 + req.len(), MAX_HANDSHAKE);
        req.extend_from_slice(b"payload");
        let r = expect_done(&mut h, &req, req.len() - 7);
        assert_eq!(r.addr, Addr::Domain(vec![b'd'; 247]));
        // One byte more and it fails.
        let mut h = new();
        start(&mut h, &t);
        expect_fail(&mut h, &domain_request(248), V5_GENERAL);
        // An incomplete request fails as soon as it passes the bound...
        let big = domain_request(255);
        let mut h = new();
        start(&mut h, &t);
        assert_eq!(step(&mut h, &big[..254]).action, Action::NeedMore);
        expect_fail(&mut h, &big[..255], V5_GENERAL);
    }

    // ---- Chunking: the split of the bytes into reads must not matter ----

    /// Run a client byte stream, delivered in `chunks`, the way the server
    /// does. Returns what the caller saw (without NeedMore, whose count
    /// depends on the split) and the bytes left over: payload after Done,
    /// else the unconsumed rest.
    fn drive(policy: Policy, chunks: &[&[u8]]) -> (Vec<Action>, Vec<u8>) {
        let mut h = Handshake::new(policy);
        let mut pending = Vec::new();
        let mut events = Vec::new();
        let mut rest = chunks.iter();
        'reads: for chunk in rest.by_ref() {
            pending.extend_from_slice(chunk);
            loop {
                let s = h.handshake(&pending);
                assert!(s.consumed <= pending.len());
                match &s.action {
                    Action::NeedMore => {
                        assert_eq!(s.consumed, 0);
                        assert!(!h.is_finished());
                        continue 'reads;
                    }
                    Action::Fail { .. } => {
                        assert_eq!(s.consumed, 0);
                        assert!(h.is_finished());
                        events.push(s.action);
                        break 'reads;
                    }
                    _ => assert!(s.consumed > 0),
                }
                pending.drain(..s.consumed);
                match s.action {
                    Action::CheckAuth { user, pass } => {
                        // Deterministic stand-in for a password check.
                        let ok = pass != b"bad";
                        events.push(Action::CheckAuth { user, pass });
                        events.push(Action::Reply(h.auth_verdict(ok)));
                        if !ok {
                            break 'reads;
                        }
                    }
                    Action::Done(r) => {
                        assert!(h.is_finished());
                        events.push(Action::Done(r));
                        break 'reads;
                    }
                    other => events.push(other),
                }
            }
        }
        for chunk in rest {
            pending.extend_from_slice(chunk);
        }
        (events, pending)
    }

    /// Every split into two reads, every split into three (short streams),
    /// one byte per read, and all at once: the same outcome every time.
    fn same_for_every_split(policy: Policy, stream: &[u8]) -> (Vec<Action>, Vec<u8>) {
        let whole = drive(policy, &[stream]);
        for i in 0..=stream.len() {
            let (a, b) = stream.split_at(i);
            assert_eq!(drive(policy, &[a, b]), whole, "split at {i}");
            if stream.len() <= 64 {
                for j in i..=stream.len() {
                    let three = [&stream[..i], &stream[i..j], &stream[j..]];
                    assert_eq!(drive(policy, &three), whole, "split at {i}, {j}");
                }
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(drive(policy, &bytes), whole, "one byte per read");
        whole
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn chunking_transcripts() {
        let open = Policy::default();
        let payload: &[u8] = b"GET / HTTP/1.1\r\nHost: foo.i2p\r\n\r\n";
        let foo = || Addr::Domain(b"foo.i2p".to_vec());

        // SOCKS4a with USERID.
        let s = cat(&[b"\x04\x01\x00\x50\x00\x00\x00\x01me\x00foo.i2p\x00", payload]);
        let (ev, left) = same_for_every_split(open, &s);
        let me = Credentials::UserId(b"me".to_vec());
        assert_eq!(ev, [Action::Done(v4_request(foo(), 80, me))]);
        assert_eq!(left, payload);

        // SOCKS5 without auth.
        let s = cat(&[GREET_NO_AUTH, REQ_DOMAIN, payload]);
        let (ev, left) = same_for_every_split(open, &s);
        let req = v5_request(Command::Connect, foo(), 80, Credentials::None);
        assert_eq!(ev, [Action::Reply(b"\x05\x00".to_vec()), Action::Done(req)]);
        assert_eq!(left, payload);

        // SOCKS5 with user/pass.
        let s = cat(&[b"\x05\x02\x00\x02", b"\x01\x02me\x03you", REQ_DOMAIN, payload]);
        let (ev, left) = same_for_every_split(open, &s);
        let req = v5_request(Command::Connect, foo(), 80, user_pass(b"me", b"you"));
        let want = [
            Action::Reply(b"\x05\x02".to_vec()),
            Action::CheckAuth { user: b"me".to_vec(), pass: b"you".to_vec() },
            Action::Reply(b"\x01\x00".to_vec()),
            Action::Done(req),
        ];
        assert_eq!(ev, want);
        assert_eq!(left, payload);

        // torsocks: RESOLVE, then (a new connection) CONNECT to the address
        // as a dotted quad in a name, then RESOLVE_PTR; with -u/-p too.
        let torsocks_connect: &[u8] = b"\x05\x01\x00\x03\x0a10.192.0.1\x00\x50";
        let answers = [
            (REQ_RESOLVE, Command::Resolve, foo(), 42),
            (torsocks_connect, Command::Connect, Addr::Domain(b"10.192.0.1".to_vec()), 80),
            (REQ_RESOLVE_PTR, Command::ResolvePtr, Addr::Ipv4([10, 192, 0, 1]), 42),
        ];
        for (req, command, addr, port) in answers {
            let (ev, left) = same_for_every_split(open, &cat(&[GREET_NO_AUTH, req]));
            let want = v5_request(command, addr.clone(), port, Credentials::None);
            assert_eq!(ev, [Action::Reply(b"\x05\x00".to_vec()), Action::Done(want)]);
            assert!(left.is_empty());
            let (ev, _) = same_for_every_split(open, &cat(&[GREET_USER_PASS, b"\x01\x01u\x01p", req]));
            assert_eq!(
                ev.last(),
                Some(&Action::Done(v5_request(command, addr, port, user_pass(b"u", b"p"))))
            );
        }

        // Rejected password: the request is never read.
        let s = cat(&[GREET_USER_PASS, b"\x01\x02me\x03bad", REQ_DOMAIN]);
        let (ev, left) = same_for_every_split(open, &s);
        assert_eq!(ev.last(), Some(&Action::Reply(b"\x01\x01".to_vec())));
        assert_eq!(left, REQ_DOMAIN);

        // Failures: bad command, no method, HTTP, 4a host too long.
        for (stream, reply) in [
            (cat(&[GREET_NO_AUTH, b"\x05\x09\x00\x01\x01\x02\x03\x04\x00\x50", payload]), V5_BAD_COMMAND),
            (cat(&[b"\x05\x00", payload]), V5_NO_METHOD),
            (cat(&[b"\x04\x01\x00\x50\x00\x00\x00\x01\x00", &[b'h'; 300]]), V4_REJECTED),
        ] {
            let (ev, _) = same_for_every_split(open, &stream);
            assert!(matches!(ev.last(), Some(Action::Fail { reply: r, .. }) if r == reply));
        }
        let (ev, left) = same_for_every_split(open, payload);
        assert!(matches!(&ev[..], [Action::Fail { .. }]));
        assert_eq!(left, payload);

        // Past MAX_HANDSHAKE.
        let s = cat(&[&biggest_auth(), &domain_request(255), payload]);
        let (ev, _) = same_for_every_split(open, &s);
        assert_eq!(ev.len(), 4);
        assert!(matches!(ev.last(), Some(Action::Fail { reply, .. }) if reply == V5_GENERAL));
    }

    // ---- Fuzz: no panic, sane counts, split-independent, on junk ----

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Mostly bytes that mean something in SOCKS so the parsers get deep.
        fn byte(&mut self) -> u8 {
            const INTERESTING: &[u8] = &[0, 1, 2, 3, 4, 5, 0xff, b'G'];
            if self.below(2) == 0 {
                INTERESTING[self.below(INTERESTING.len())]
            } else {
                self.next() as u8
            }
        }

        fn chunks<'a>(&mut self, data: &'a [u8]) -> Vec<&'a [u8]> {
            let mut out = Vec::new();
            let mut rest = data;
            while !rest.is_empty() {
                let n = 1 + self.below(rest.len().min(16));
                let (a, b) = rest.split_at(n);
                out.push(a);
                rest = b;
            }
            out
        }
    }

    fn fuzz_one(rng: &mut XorShift, stream: &[u8]) {
        let policy = Policy { require_auth: rng.below(4) == 0, prefer_no_auth: rng.below(2) == 0 };
        let whole = drive(policy, &[stream]);
        let chunks = rng.chunks(stream);
        assert_eq!(drive(policy, &chunks), whole, "{stream:x?} {policy:?}");
    }

    #[test]
    fn fuzz_random_bytes() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.below(96);
            let mut stream: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if let Some(first) = stream.first_mut() {
                *first = [4, 5, 5, 1, b'P', *first][rng.below(6)];
            }
            fuzz_one(&mut rng, &stream);
        }
    }

    #[test]
    fn fuzz_mutated_transcripts() {
        let seeds = [
            cat(&[b"\x04\x01\x00\x50\x00\x00\x00\x01me\x00foo.i2p\x00", b"data"]),
            cat(&[b"\x05\x02\x00\x02", b"\x01\x02me\x03you", REQ_DOMAIN, b"data"]),
            cat(&[GREET_NO_AUTH, REQ_IPV4, b"data"]),
            cat(&[&biggest_auth(), &domain_request(250)]),
            cat(&[GREET_NO_AUTH, REQ_RESOLVE]),
            cat(&[b"\x05\x01\x02", b"\x01\x01u\x01p", REQ_RESOLVE_PTR]),
        ];
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..1500 {
            let mut stream = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(stream.len());
                match rng.below(3) {
                    0 => stream[at] = rng.byte(),
                    1 => stream.truncate(at),
                    _ => stream.insert(at, rng.byte()),
                }
                if stream.is_empty() {
                    break;
                }
            }
            fuzz_one(&mut rng, &stream);
        }
    }
}
