//! SOCKS 4, 4a and 5 server handshake as a sans-IO state machine.
//! INTERFACE STUB: to be implemented (see DEV-INTERFACES in the issue notes).

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
}

/// Destination address as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Ipv4([u8; 4]),
    Ipv6([u8; 16]),
    /// SOCKS5 ATYP=3 or a SOCKS4a hostname: raw bytes, NOT validated here.
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
    /// Write `reply` (may be empty), then close gracefully.
    Fail { reply: Vec<u8>, reason: &'static str },
}

/// Result of one [`Handshake::handshake`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How many input bytes were consumed.
    pub consumed: usize,
    pub action: Action,
}

/// The server-side handshake state machine.
#[derive(Debug)]
pub struct Handshake {
    policy: Policy,
}

impl Handshake {
    pub fn new(policy: Policy) -> Self {
        Handshake { policy }
    }

    /// Feed the unconsumed input (caller keeps any bytes not consumed and
    /// presents them again with more appended).
    pub fn handshake(&mut self, input: &[u8]) -> Step {
        let _ = (input, self.policy);
        Step { consumed: 0, action: Action::NeedMore }
    }

    /// Answer a [`Action::CheckAuth`]: returns the RFC 1929 reply bytes
    /// (`01 00` or `01 01`); after `false` the handshake is failed and the
    /// caller closes.
    pub fn auth_verdict(&mut self, ok: bool) -> Vec<u8> {
        vec![1, u8::from(!ok)]
    }

    /// The SOCKS version, once known.
    pub fn version(&self) -> Option<Version> {
        None
    }
}

/// Reply bytes for a request outcome in the client's version. SOCKS5 replies
/// carry BND `ATYP=1 0.0.0.0:0`; SOCKS4 replies are `00 5A|5B 00 00 00 00 00 00`.
pub fn reply(version: Version, rep: Rep) -> Vec<u8> {
    match version {
        Version::V5 => vec![5, rep as u8, 0, 1, 0, 0, 0, 0, 0, 0],
        Version::V4 => {
            let code = if rep == Rep::Succeeded { 0x5a } else { 0x5b };
            vec![0, code, 0, 0, 0, 0, 0, 0]
        }
    }
}
