//! SAM v3 commands and replies as pure functions. INTERFACE STUB.

/// Longest reply line we accept (bytes, excluding the newline).
pub const MAX_LINE: usize = 16 * 1024;

/// Result codes seen in SAM replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamResult {
    Ok,
    CantReachPeer,
    ConnectionRefused,
    DuplicatedDest,
    DuplicatedId,
    I2pError,
    InvalidId,
    InvalidKey,
    KeyNotFound,
    NoVersion,
    PeerNotFound,
    Timeout,
    /// Anything else (kept for logging).
    Other(String),
}

/// A parsed reply line: `TOPIC KIND KEY=VALUE ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub topic: String,
    pub kind: String,
    pub params: Vec<(String, String)>,
}

impl Reply {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// RESULT= as an enum; a missing RESULT is `Other("")`.
    pub fn result(&self) -> SamResult {
        SamResult::Other(String::new())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    NotUtf8,
    Malformed,
}

/// Parse one line (without its `\n`; a trailing `\r` is stripped).
pub fn parse_reply(line: &[u8]) -> Result<Reply, ParseError> {
    let _ = line;
    Err(ParseError::Empty)
}

/// Errors from building a command: a value or key that would need quoting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub String);

/// True if `s` can be sent as a SAM value unquoted: `[A-Za-z0-9._~=+/,-]+`.
pub fn is_safe_value(s: &str) -> bool {
    let _ = s;
    false
}

/// True if `s` can be a SAM option key: `[A-Za-z0-9._-]+`.
pub fn is_safe_key(s: &str) -> bool {
    let _ = s;
    false
}

/// `HELLO VERSION MIN=3.1 MAX=3.3\n` (with ` USER=u PASSWORD=p` when given).
pub fn hello(auth: Option<(&str, &str)>) -> Result<Vec<u8>, BadValue> {
    let _ = auth;
    Ok(Vec::new())
}

/// Session style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Stream,
    /// Repliable datagrams forwarded to HOST:PORT over UDP.
    Datagram {
        host: std::net::Ipv4Addr,
        port: u16,
    },
}

/// `SESSION CREATE STYLE=.. ID=.. DESTINATION=.. SIGNATURE_TYPE=7 [PORT= HOST=] k=v ...\n`.
/// `destination` is `TRANSIENT` or a private key in I2P base64. `options`
/// are sent in order (tunnel lengths, quantities, i2cp.leaseSetEncType, user options).
pub fn session_create(
    style: Style,
    id: &str,
    destination: &str,
    options: &[(String, String)],
) -> Result<Vec<u8>, BadValue> {
    let _ = (style, id, destination, options);
    Ok(Vec::new())
}

/// `STREAM CONNECT ID=.. DESTINATION=.. SILENT=false [TO_PORT=n]\n`.
pub fn stream_connect(id: &str, destination: &str, to_port: Option<u16>) -> Result<Vec<u8>, BadValue> {
    let _ = (id, destination, to_port);
    Ok(Vec::new())
}

/// `NAMING LOOKUP NAME=..\n`.
pub fn naming_lookup(name: &str) -> Result<Vec<u8>, BadValue> {
    let _ = name;
    Ok(Vec::new())
}

/// `DEST GENERATE SIGNATURE_TYPE=7\n`.
pub fn dest_generate() -> Vec<u8> {
    Vec::new()
}

/// If `line` is `PING[ text]`, the `PONG[ text]\n` answer.
pub fn pong_for(line: &[u8]) -> Option<Vec<u8>> {
    let _ = line;
    None
}

/// Negotiated version `3.x` → minor number (`VERSION=3.1` → Some(1)).
pub fn version_minor(v: &str) -> Option<u32> {
    let _ = v;
    None
}

/// Accumulates bytes and hands out complete lines without losing what
/// follows them (the surplus is payload once a stream is open).
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

impl LineBuf {
    pub fn new() -> Self {
        LineBuf { buf: Vec::new() }
    }
    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    /// Take the next complete line (without `\n`/`\r\n`), or None if incomplete.
    /// Err if the pending line exceeds MAX_LINE without a newline.
    pub fn take_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        Ok(None)
    }
    /// Everything after the last taken line.
    pub fn into_surplus(self) -> Vec<u8> {
        self.buf
    }
}
