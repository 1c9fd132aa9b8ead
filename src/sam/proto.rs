//! SAM v3 commands and replies as pure functions (no sockets here).
//!
//! Builders turn validated arguments into the exact bytes of one command line,
//! `\n` included, so the caller can send it in ONE write (i2pd drops bytes
//! after a command's newline). Every key and value they emit must match a
//! conservative character set (`is_safe_key` / `is_safe_value`), so neither a
//! SOCKS client nor a flag can inject SAM syntax; anything else is `BadValue`.
//! `parse_reply` splits a reply line into topic, kind and `KEY=VALUE` pairs,
//! accepting both Java's quoting (`"..."` with `\"` and `\\` escapes) and
//! i2pd's raw text in quotes; `hello_reply`, `session_status`,
//! `stream_status`, `dest_reply` and `naming_reply` decode each reply the
//! drivers wait for into a typed result, so no driver compares topic or
//! RESULT strings itself. `LineBuf` cuts reply lines out of a byte stream
//! without read-ahead loss: once `STREAM STATUS RESULT=OK` arrives, what
//! follows it is payload and comes back from `into_surplus`.
//!
//! Not here: socket I/O and timeouts (`sam::conn`), session supervision
//! (`sam::stream`, `sam::datagram`), and the SAM-result to SOCKS-reply table
//! (`error`). We never build PING, QUIT, HELP or AUTH: i2pd closes the
//! socket on them.
//!
//! Spec: geti2p.net SAM v3 (api/samv3), checked against i2pd's SAM.cpp and
//! Java I2P's SAMv3Handler.

use crate::i2p_addr;

/// Longest reply line we accept (bytes, excluding the newline).
pub const MAX_LINE: usize = 16 * 1024;

/// The SAM versions we ask for: 3.1 is what i2pd <= 2.57 answers; 3.2 adds
/// TO_PORT and PING, 3.3 is the newest either router knows.
pub const HELLO_MIN: &str = "3.1";
pub const HELLO_MAX: &str = "3.3";

/// Ed25519: both routers default to DSA_SHA1, which nobody wants.
pub const SIGNATURE_TYPE: &str = "7";

/// Keys `session_create` emits itself; an option may not repeat them (in any
/// case), or a `--sam-option` could quietly override the session style, ID,
/// key or signature type depending on which router's parser wins.
const SESSION_KEYS: [&str; 6] = ["STYLE", "ID", "DESTINATION", "SIGNATURE_TYPE", "PORT", "HOST"];

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

impl SamResult {
    /// Map a RESULT= value. Case-sensitive: both routers send upper case,
    /// and `CONNECTION_REFUSED` is how Java spells it (SAMv3Handler, on a
    /// `ConnectException`).
    pub fn from_wire(s: &str) -> SamResult {
        match s {
            "OK" => SamResult::Ok,
            "CANT_REACH_PEER" => SamResult::CantReachPeer,
            "CONNECTION_REFUSED" => SamResult::ConnectionRefused,
            // emissary 0.4 spells it DUPLICATE_DEST.
            "DUPLICATED_DEST" | "DUPLICATE_DEST" => SamResult::DuplicatedDest,
            "DUPLICATED_ID" => SamResult::DuplicatedId,
            "I2P_ERROR" => SamResult::I2pError,
            "INVALID_ID" => SamResult::InvalidId,
            "INVALID_KEY" => SamResult::InvalidKey,
            "KEY_NOT_FOUND" => SamResult::KeyNotFound,
            "NOVERSION" => SamResult::NoVersion,
            "PEER_NOT_FOUND" => SamResult::PeerNotFound,
            "TIMEOUT" => SamResult::Timeout,
            other => SamResult::Other(other.to_owned()),
        }
    }
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
        match self.get("RESULT") {
            Some(r) => SamResult::from_wire(r),
            None => SamResult::Other(String::new()),
        }
    }
    /// True if this is `topic kind` (e.g. `("STREAM", "STATUS")`).
    pub fn is(&self, topic: &str, kind: &str) -> bool {
        self.topic == topic && self.kind == kind
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but blanks.
    Empty,
    /// Reserved: `parse_reply` replaces invalid UTF-8 with U+FFFD instead,
    /// so an odd byte in a MESSAGE can never hide the RESULT before it.
    NotUtf8,
    /// Fewer than two words (no topic and kind).
    Malformed,
}

/// Parse one line (without its `\n`; a trailing `\r` is stripped).
///
/// Words are separated by runs of spaces or tabs. After the topic and kind,
/// each word is `KEY=VALUE` (split at the first `=`, so base64 padding stays
/// in the value) or a bare `KEY`, kept with an empty value. A value starting
/// with `"` runs to the next unescaped `"`: `\"` and `\\` are Java's escapes;
/// any other backslash is kept, since i2pd puts raw text in quotes. A missing
/// closing quote takes the rest of the line. Never panics, on any bytes.
pub fn parse_reply(line: &[u8]) -> Result<Reply, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut p = Cursor { rest: line };
    let topic = p.word().ok_or(ParseError::Empty)?;
    let kind = p.word().ok_or(ParseError::Malformed)?;
    let mut params = Vec::new();
    while let Some(param) = p.param() {
        params.push(param);
    }
    Ok(Reply { topic: text(topic), kind: text(kind), params })
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What is left of a reply line to parse.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn skip_blanks(&mut self) {
        let n = self.rest.iter().take_while(|&&b| is_blank(b)).count();
        self.rest = self.rest.get(n..).unwrap_or(&[]);
    }

    /// Take bytes up to (not including) the first one matching `stop`.
    fn take_until(&mut self, stop: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self.rest.iter().position(|&b| stop(b)).unwrap_or(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    fn word(&mut self) -> Option<&'a [u8]> {
        self.skip_blanks();
        let w = self.take_until(is_blank);
        (!w.is_empty()).then_some(w)
    }

    fn param(&mut self) -> Option<(String, String)> {
        self.skip_blanks();
        if self.rest.is_empty() {
            return None;
        }
        let key = self.take_until(|b| b == b'=' || is_blank(b));
        let mut value = Vec::new();
        if let Some((b'=', after)) = self.rest.split_first() {
            self.rest = after;
            if let Some((b'"', after)) = self.rest.split_first() {
                self.rest = after;
                self.quoted(&mut value);
            }
            // Unquoted value, or junk glued to a closing quote: up to a blank.
            value.extend_from_slice(self.take_until(is_blank));
        }
        Some((text(key), String::from_utf8_lossy(&value).into_owned()))
    }

    /// Body of a quoted value, after the opening quote; consumes the closing
    /// quote if there is one.
    fn quoted(&mut self, value: &mut Vec<u8>) {
        while let Some((&b, after)) = self.rest.split_first() {
            self.rest = after;
            match b {
                b'"' => return,
                b'\\' => match self.rest.split_first() {
                    Some((&e @ (b'"' | b'\\'), after)) => {
                        value.push(e);
                        self.rest = after;
                    }
                    _ => value.push(b'\\'),
                },
                _ => value.push(b),
            }
        }
    }
}

/// Errors from building a command: a value or key that would need quoting.
/// It holds the NAME of the offending field (e.g. `PASSWORD`,
/// `DESTINATION`, `option key`), never its value, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub String);

impl std::fmt::Display for BadValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SAM field {} has characters that can't be sent unquoted", self.0)
    }
}

impl std::error::Error for BadValue {}

/// True if `s` can be sent as a SAM value unquoted: `[A-Za-z0-9._~=+/,-]+`.
/// (`~=-` cover I2P base64, `,` covers `i2cp.leaseSetEncType=4,0`.)
pub fn is_safe_value(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'=' | b'+' | b'/' | b',' | b'-')
        })
}

/// True if `s` can be a SAM option key: `[A-Za-z0-9._-]+`.
pub fn is_safe_key(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Appends ` KEY=value` after checking the value.
struct Line(String);

impl Line {
    fn new(words: &str) -> Line {
        Line(words.to_owned())
    }
    fn kv(mut self, key: &str, value: &str) -> Result<Line, BadValue> {
        if !is_safe_value(value) {
            return Err(BadValue(key.to_owned()));
        }
        self.0.push(' ');
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(value);
        Ok(self)
    }
    fn end(mut self) -> Vec<u8> {
        self.0.push('\n');
        self.0.into_bytes()
    }
}

/// Session IDs go into every STREAM line and are unique on the bridge; we
/// hold them to the key charset (i2pd forbids `<>"'/` in them).
fn check_id(id: &str) -> Result<(), BadValue> {
    if is_safe_key(id) {
        Ok(())
    } else {
        Err(BadValue("ID".to_owned()))
    }
}

/// `HELLO VERSION MIN=3.1 MAX=3.3\n` (with ` USER=u PASSWORD=p` when given).
pub fn hello(auth: Option<(&str, &str)>) -> Result<Vec<u8>, BadValue> {
    let mut line = Line::new("HELLO VERSION").kv("MIN", HELLO_MIN)?.kv("MAX", HELLO_MAX)?;
    if let Some((user, password)) = auth {
        line = line.kv("USER", user)?.kv("PASSWORD", password)?;
    }
    Ok(line.end())
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
/// An option key that repeats one of the command's own keys is `BadValue`.
pub fn session_create(
    style: Style,
    id: &str,
    destination: &str,
    options: &[(String, String)],
) -> Result<Vec<u8>, BadValue> {
    check_id(id)?;
    let style_name = match style {
        Style::Stream => "STREAM",
        Style::Datagram { .. } => "DATAGRAM",
    };
    let mut line = Line::new("SESSION CREATE")
        .kv("STYLE", style_name)?
        .kv("ID", id)?
        .kv("DESTINATION", destination)?
        .kv("SIGNATURE_TYPE", SIGNATURE_TYPE)?;
    if let Style::Datagram { host, port } = style {
        line = line.kv("PORT", &port.to_string())?.kv("HOST", &host.to_string())?;
    }
    for (key, value) in options {
        if !is_safe_key(key) || SESSION_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(BadValue("option key".to_owned()));
        }
        line = line.kv(key, value)?;
    }
    Ok(line.end())
}

/// `STREAM CONNECT ID=.. DESTINATION=.. SILENT=false [TO_PORT=n]\n`.
/// SILENT=false: we need the STREAM STATUS reply to answer the SOCKS client.
pub fn stream_connect(id: &str, destination: &str, to_port: Option<u16>) -> Result<Vec<u8>, BadValue> {
    check_id(id)?;
    let mut line =
        Line::new("STREAM CONNECT").kv("ID", id)?.kv("DESTINATION", destination)?.kv("SILENT", "false")?;
    if let Some(port) = to_port {
        line = line.kv("TO_PORT", &port.to_string())?;
    }
    Ok(line.end())
}

/// `NAMING LOOKUP NAME=..\n`.
pub fn naming_lookup(name: &str) -> Result<Vec<u8>, BadValue> {
    Ok(Line::new("NAMING LOOKUP").kv("NAME", name)?.end())
}

/// `DEST GENERATE SIGNATURE_TYPE=7\n`.
pub fn dest_generate() -> Vec<u8> {
    b"DEST GENERATE SIGNATURE_TYPE=7\n".to_vec()
}

/// If `line` is `PING[ text]`, the `PONG[ text]\n` answer.
/// Java kills a >= 3.2 session whose control socket leaves a PING unanswered;
/// the text is echoed as sent. A line holding a `\n` is never answered (it
/// can't come from `LineBuf`, and echoing it would inject a command).
pub fn pong_for(line: &[u8]) -> Option<Vec<u8>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"PING")?;
    if !(rest.is_empty() || rest.first() == Some(&b' ')) || rest.contains(&b'\n') {
        return None;
    }
    let mut out = Vec::with_capacity(rest.len() + 5);
    out.extend_from_slice(b"PONG");
    out.extend_from_slice(rest);
    out.push(b'\n');
    Some(out)
}

/// Negotiated version `3.x` → minor number (`VERSION=3.1` → Some(1)).
/// Anything but `3.` followed by 1 to 3 digits is None.
pub fn version_minor(v: &str) -> Option<u32> {
    let minor = v.strip_prefix("3.")?;
    if minor.is_empty() || minor.len() > 3 || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    minor.parse().ok()
}

/// Why a reply line is not the success its command asked for. The string
/// names the command, for the log line; no variant holds a value from the
/// line (it may be a private key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Not a SAM line at all.
    Unreadable(&'static str),
    /// A SAM line, but not this command's reply.
    Unexpected(&'static str),
    /// This command's reply, with a RESULT other than OK.
    Refused(SamResult),
    /// RESULT=OK without a field the caller needs, or with an unusable one.
    Missing(&'static str, &'static str),
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::Unreadable(cmd) => write!(f, "unreadable reply to {cmd}"),
            ReplyError::Unexpected(cmd) => write!(f, "unexpected reply to {cmd}"),
            ReplyError::Refused(r) => write!(f, "the bridge answered {r:?}"),
            ReplyError::Missing(cmd, field) => write!(f, "reply to {cmd} without a usable {field}"),
        }
    }
}

/// `line` as the reply `topic kind` to `cmd`, with RESULT=OK.
fn expect_ok(line: &[u8], cmd: &'static str, topic: &str, kind: &str) -> Result<Reply, ReplyError> {
    let r = parse_reply(line).map_err(|_| ReplyError::Unreadable(cmd))?;
    if !r.is(topic, kind) {
        return Err(ReplyError::Unexpected(cmd));
    }
    match r.result() {
        SamResult::Ok => Ok(r),
        other => Err(ReplyError::Refused(other)),
    }
}

/// `HELLO REPLY RESULT=OK VERSION=3.x` → the negotiated minor version.
pub fn hello_reply(line: &[u8]) -> Result<u32, ReplyError> {
    let r = expect_ok(line, "HELLO", "HELLO", "REPLY")?;
    r.get("VERSION").and_then(version_minor).ok_or(ReplyError::Missing("HELLO", "VERSION"))
}

/// `SESSION STATUS RESULT=OK DESTINATION=<private key>` → that private key
/// (I2P base64; never to be logged) and its public `.b32.i2p` address.
pub fn session_status(line: &[u8]) -> Result<(String, String), ReplyError> {
    const CMD: &str = "SESSION CREATE";
    let r = expect_ok(line, CMD, "SESSION", "STATUS")?;
    let key = r.get("DESTINATION").ok_or(ReplyError::Missing(CMD, "DESTINATION"))?;
    let b32 = i2p_addr::b32_of_b64(key).ok_or(ReplyError::Missing(CMD, "DESTINATION"))?;
    Ok((key.to_string(), b32))
}

/// `STREAM STATUS RESULT=OK`: the stream is open.
pub fn stream_status(line: &[u8]) -> Result<(), ReplyError> {
    expect_ok(line, "STREAM CONNECT", "STREAM", "STATUS").map(drop)
}

/// `DEST REPLY PUB=.. PRIV=..` → the private key (I2P base64).
pub fn dest_reply(line: &[u8]) -> Result<String, ReplyError> {
    // DEST REPLY carries no RESULT on either router: only its shape counts.
    const CMD: &str = "DEST GENERATE";
    let r = parse_reply(line).map_err(|_| ReplyError::Unreadable(CMD))?;
    if !r.is("DEST", "REPLY") {
        return Err(ReplyError::Unexpected(CMD));
    }
    r.get("PRIV").map(str::to_string).ok_or(ReplyError::Missing(CMD, "PRIV"))
}

/// A name resolved by NAMING LOOKUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Base64 public destination.
    pub dest: String,
    /// Its `.b32.i2p`.
    pub b32: String,
}

/// If `line` is the NAMING REPLY for `name`: the destination, or the
/// RESULT that refused it (a VALUE that is no destination counts as
/// `Other`). None for any other line (a late reply to an earlier lookup).
pub fn naming_reply(line: &[u8], name: &str) -> Option<Result<Resolved, SamResult>> {
    let r = parse_reply(line).ok()?;
    if !r.is("NAMING", "REPLY") || r.get("NAME").is_some_and(|n| n != name) {
        return None;
    }
    Some(match r.result() {
        SamResult::Ok => {
            let dest = r.get("VALUE").unwrap_or_default();
            match i2p_addr::b32_of_b64(dest) {
                Some(b32) => Ok(Resolved { dest: dest.to_string(), b32 }),
                None => Err(SamResult::Other("unreadable VALUE".into())),
            }
        }
        other => Err(other),
    })
}

/// Keys whose values are secrets in some line we send or receive: the private
/// key in SESSION CREATE / SESSION STATUS, PRIV in DEST REPLY, the HELLO
/// password.
const SECRET_KEYS: [&str; 3] = ["PRIV", "PASSWORD", "DESTINATION"];

/// A protocol line (command or reply) for trace logs, with secrets replaced
/// by `[redacted]`. DESTINATION is redacted only on SESSION lines (there it
/// is a private key unless TRANSIENT); on STREAM/NAMING lines it is the
/// target name, which trace level may show. Lossy on non-UTF-8.
pub fn redact_line(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let s = String::from_utf8_lossy(line);
    // Words are cut where `parse_reply` cuts them (spaces and tabs), or a
    // secret after a tab, or a SESSION line with a leading blank, would be
    // logged as is (found by fuzzing). The blanks themselves are kept.
    let session = s.split(BLANKS).find(|w| !w.is_empty()) == Some("SESSION");
    let mut out = String::with_capacity(s.len().min(256));
    for piece in s.split_inclusive(BLANKS) {
        let word = piece.strip_suffix(BLANKS).unwrap_or(piece);
        match word.split_once('=') {
            Some((k, v))
                if SECRET_KEYS.contains(&k) && (k != "DESTINATION" || (session && v != "TRANSIENT")) =>
            {
                out.push_str(k);
                out.push_str("=[redacted]");
            }
            _ => out.push_str(word),
        }
        out.push_str(piece.get(word.len()..).unwrap_or_default());
    }
    out
}

/// What separates words in a SAM line (see `parse_reply`).
const BLANKS: [char; 2] = [' ', '\t'];

/// Accumulates bytes and hands out complete lines without losing what
/// follows them (the surplus is payload once a stream is open).
///
/// Taken lines are skipped by an offset, and the search for `\n` resumes
/// where the last one stopped, so a long line arriving in small pieces costs
/// O(n), not O(n²). Consumed bytes are dropped on the next `push`.
/// `push` itself has no cap: the caller reads bounded chunks and calls
/// `take_line` after each, which fails once a line exceeds `MAX_LINE`.
#[derive(Debug, Default)]
pub struct LineBuf {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes.
    start: usize,
    /// `buf[start..scanned]` is known to hold no `\n`.
    scanned: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

impl LineBuf {
    pub fn new() -> Self {
        LineBuf::default()
    }
    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }
    /// Take the next complete line (without `\n`/`\r\n`), or None if incomplete.
    /// Err if the pending line exceeds MAX_LINE without a newline (or is
    /// longer than MAX_LINE when its newline comes); it stays an error.
    pub fn take_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        let unscanned = self.buf.get(self.scanned..).unwrap_or(&[]);
        let Some(rel) = unscanned.iter().position(|&b| b == b'\n') else {
            self.scanned = self.buf.len();
            return if self.pending() > MAX_LINE { Err(LineTooLong) } else { Ok(None) };
        };
        let nl = self.scanned + rel;
        if nl - self.start > MAX_LINE {
            self.scanned = nl;
            return Err(LineTooLong);
        }
        let line = self.buf.get(self.start..nl).unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
        self.start = nl + 1;
        self.scanned = self.start;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
        }
        Ok(Some(line))
    }
    /// At EOF: the bytes after the last line, taken as one final line (a
    /// trailing `\r` stripped), if there are any. emissary 0.4 ends
    /// `STREAM STATUS RESULT=CANT_REACH_PEER` with the close, no newline;
    /// the reply is still its reply. None if nothing is pending, or if what
    /// is pending is longer than [`MAX_LINE`] (`take_line` refuses it too).
    pub fn take_tail(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.get(self.start..).unwrap_or(&[]);
        if rest.is_empty() || rest.len() > MAX_LINE {
            return None;
        }
        let line = rest.strip_suffix(b"\r").unwrap_or(rest).to_vec();
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        Some(line)
    }
    /// Bytes received and not yet taken as a line.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
    /// Everything after the last taken line.
    pub fn into_surplus(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn bad(field: &str) -> BadValue {
        BadValue(field.to_owned())
    }

    #[test]
    fn hello_bytes() {
        assert_eq!(hello(None).unwrap(), b"HELLO VERSION MIN=3.1 MAX=3.3\n");
        assert_eq!(
            hello(Some(("alice", "s3cr~t/+="))).unwrap(),
            b"HELLO VERSION MIN=3.1 MAX=3.3 USER=alice PASSWORD=s3cr~t/+=\n"
        );
        assert_eq!(hello(Some(("a b", "p"))), Err(bad("USER")));
        assert_eq!(hello(Some(("a", "p w"))), Err(bad("PASSWORD")));
        assert_eq!(hello(Some(("a", ""))), Err(bad("PASSWORD")));
    }

    #[test]
    fn session_create_stream_bytes() {
        let o = opts(&[
            ("inbound.length", "3"),
            ("outbound.length", "3"),
            ("inbound.quantity", "2"),
            ("outbound.quantity", "2"),
            ("i2cp.leaseSetEncType", "4,0"),
        ]);
        assert_eq!(
            session_create(Style::Stream, "AbCdEf0123456789", "TRANSIENT", &o).unwrap(),
            &b"SESSION CREATE STYLE=STREAM ID=AbCdEf0123456789 DESTINATION=TRANSIENT \
               SIGNATURE_TYPE=7 inbound.length=3 outbound.length=3 inbound.quantity=2 \
               outbound.quantity=2 i2cp.leaseSetEncType=4,0\n"[..]
        );
        assert_eq!(
            session_create(Style::Stream, "id", "AAAA-~==", &[]).unwrap(),
            b"SESSION CREATE STYLE=STREAM ID=id DESTINATION=AAAA-~== SIGNATURE_TYPE=7\n"
        );
    }

    #[test]
    fn session_create_datagram_bytes() {
        let style = Style::Datagram { host: std::net::Ipv4Addr::LOCALHOST, port: 40001 };
        assert_eq!(
            session_create(style, "dg1", "TRANSIENT", &opts(&[("inbound.length", "0")])).unwrap(),
            &b"SESSION CREATE STYLE=DATAGRAM ID=dg1 DESTINATION=TRANSIENT SIGNATURE_TYPE=7 \
               PORT=40001 HOST=127.0.0.1 inbound.length=0\n"[..]
        );
    }

    #[test]
    fn session_create_refuses_unsafe() {
        let s = Style::Stream;
        for id in ["", "a b", "a=b", "a\"b", "a/b", "a\r", "a\n", "a\0"] {
            assert_eq!(session_create(s, id, "TRANSIENT", &[]), Err(bad("ID")), "{id:?}");
        }
        for d in ["", "TRANS IENT", "a\"b", "a'b", "a\rb", "a\nb", "a\0b", "é"] {
            assert_eq!(session_create(s, "id", d, &[]), Err(bad("DESTINATION")), "{d:?}");
        }
        for k in [
            "",
            "a b",
            "a=b",
            "a\"b",
            "a\n",
            "a\0",
            "a,b",
            "a/b",
            "ID",
            "style",
            "Destination",
            "SIGNATURE_TYPE",
            "PORT",
            "host",
        ] {
            assert_eq!(
                session_create(s, "id", "TRANSIENT", &opts(&[(k, "1")])),
                Err(bad("option key")),
                "{k:?}"
            );
        }
        for v in ["", "1 2", "1\"", "1\r", "1\n", "1\0", "'1'", "1\t"] {
            assert_eq!(
                session_create(s, "id", "TRANSIENT", &opts(&[("inbound.length", v)])),
                Err(bad("inbound.length")),
                "{v:?}"
            );
        }
    }

    #[test]
    fn stream_connect_bytes() {
        assert_eq!(
            stream_connect("sess1", "stats.i2p", None).unwrap(),
            b"STREAM CONNECT ID=sess1 DESTINATION=stats.i2p SILENT=false\n"
        );
        assert_eq!(
            stream_connect("sess1", "abc.b32.i2p", Some(8080)).unwrap(),
            b"STREAM CONNECT ID=sess1 DESTINATION=abc.b32.i2p SILENT=false TO_PORT=8080\n"
        );
        assert_eq!(stream_connect("s", "a b.i2p", None), Err(bad("DESTINATION")));
        assert_eq!(stream_connect("s", "a.i2p\nQUIT", None), Err(bad("DESTINATION")));
        assert_eq!(stream_connect("s s", "a.i2p", None), Err(bad("ID")));
    }

    #[test]
    fn other_command_bytes() {
        assert_eq!(naming_lookup("ME").unwrap(), b"NAMING LOOKUP NAME=ME\n");
        assert_eq!(naming_lookup("zzz.i2p").unwrap(), b"NAMING LOOKUP NAME=zzz.i2p\n");
        assert_eq!(naming_lookup("a\"b"), Err(bad("NAME")));
        assert_eq!(naming_lookup(""), Err(bad("NAME")));
        assert_eq!(dest_generate(), b"DEST GENERATE SIGNATURE_TYPE=7\n");
    }

    #[test]
    fn safe_sets() {
        assert!(is_safe_value("AZaz09._~=+/,-"));
        assert!(is_safe_key("AZaz09._-"));
        for v in ["", " ", "a b", "\"", "'", "\r", "\n", "\0", "\t", "é", "a;b", "a\\b"] {
            assert!(!is_safe_value(v), "{v:?}");
            assert!(!is_safe_key(v), "{v:?}");
        }
        for k in ["a=b", "a~", "a+", "a/", "a,b"] {
            assert!(!is_safe_key(k), "{k:?}");
            assert!(is_safe_value(k), "{k:?}");
        }
    }

    #[test]
    fn pong() {
        assert_eq!(pong_for(b"PING").unwrap(), b"PONG\n");
        assert_eq!(pong_for(b"PING abc").unwrap(), b"PONG abc\n");
        assert_eq!(pong_for(b"PING 1234 x\r").unwrap(), b"PONG 1234 x\n");
        assert_eq!(pong_for(b"PINGX"), None);
        assert_eq!(pong_for(b"PONG abc"), None);
        assert_eq!(pong_for(b" PING"), None);
        assert_eq!(pong_for(b"ping"), None);
        assert_eq!(pong_for(b"PING a\nQUIT"), None);
        assert_eq!(pong_for(b""), None);
    }

    #[test]
    fn versions() {
        assert_eq!(version_minor("3.1"), Some(1));
        assert_eq!(version_minor("3.3"), Some(3));
        assert_eq!(version_minor("3.0"), Some(0));
        assert_eq!(version_minor("3.10"), Some(10));
        for v in ["", "3", "3.", "2.1", "3.1.1", "3.x", "3.+1", "3.-1", "3.1234", " 3.1", "4.0"] {
            assert_eq!(version_minor(v), None, "{v:?}");
        }
    }

    fn reply(line: &[u8]) -> Reply {
        parse_reply(line).unwrap()
    }

    #[test]
    fn replies_hello_and_session() {
        let r = reply(b"HELLO REPLY RESULT=OK VERSION=3.1");
        assert!(r.is("HELLO", "REPLY"));
        assert_eq!(r.result(), SamResult::Ok);
        assert_eq!(r.get("VERSION"), Some("3.1"));
        assert_eq!(reply(b"HELLO REPLY RESULT=NOVERSION\r").result(), SamResult::NoVersion);

        let r = reply(b"SESSION STATUS RESULT=OK DESTINATION=AAAA~-==");
        assert!(r.is("SESSION", "STATUS"));
        assert_eq!(r.get("DESTINATION"), Some("AAAA~-=="));
        assert_eq!(reply(b"SESSION STATUS RESULT=DUPLICATED_ID").result(), SamResult::DuplicatedId);
        assert_eq!(reply(b"SESSION STATUS").result(), SamResult::Other(String::new()));
    }

    #[test]
    fn replies_stream_both_routers() {
        // i2pd: raw text in quotes (here through LineBuf, with a CRLF end).
        let mut lb = LineBuf::new();
        lb.push(b"STREAM STATUS RESULT=CANT_REACH_PEER MESSAGE=\"Can't find LeaseSet\"\r\n");
        let r = reply(&lb.take_line().unwrap().unwrap());
        assert_eq!(r.result(), SamResult::CantReachPeer);
        assert_eq!(r.get("MESSAGE"), Some("Can't find LeaseSet"));
        // Java: unquoted when there is no space.
        let r = reply(b"STREAM STATUS RESULT=I2P_ERROR MESSAGE=Timeout");
        assert_eq!(r.result(), SamResult::I2pError);
        assert_eq!(r.get("MESSAGE"), Some("Timeout"));
        // Java escapes.
        let r = reply(br#"STREAM STATUS RESULT=INVALID_KEY MESSAGE="a \"quoted\" word" X=1"#);
        assert_eq!(r.result(), SamResult::InvalidKey);
        assert_eq!(r.get("MESSAGE"), Some("a \"quoted\" word"));
        assert_eq!(r.get("X"), Some("1"));
        let r = reply(br#"STREAM STATUS RESULT=OK MESSAGE="back\\slash C:\dir""#);
        assert_eq!(r.get("MESSAGE"), Some("back\\slash C:\\dir"));
        // Java's ConnectException spelling, TIMEOUT, and unknown codes.
        let cases: [(&[u8], SamResult); 9] = [
            (b"STREAM STATUS RESULT=CONNECTION_REFUSED ID=x", SamResult::ConnectionRefused),
            (b"STREAM STATUS RESULT=TIMEOUT", SamResult::Timeout),
            (b"STREAM STATUS RESULT=INVALID_ID", SamResult::InvalidId),
            (b"STREAM STATUS RESULT=PEER_NOT_FOUND", SamResult::PeerNotFound),
            (b"SESSION STATUS RESULT=DUPLICATED_DEST", SamResult::DuplicatedDest),
            (b"SESSION STATUS RESULT=DUPLICATE_DEST", SamResult::DuplicatedDest),
            (b"NAMING REPLY RESULT=KEY_NOT_FOUND NAME=x.i2p", SamResult::KeyNotFound),
            (b"STREAM STATUS RESULT=ok", SamResult::Other("ok".into())),
            (b"STREAM STATUS RESULT=", SamResult::Other(String::new())),
        ];
        for (line, want) in cases {
            assert_eq!(reply(line).result(), want, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn naming_replies() {
        let (d, b32) = crate::i2p_addr::test_dest(9);
        let ok = format!("NAMING REPLY RESULT=OK NAME=echo.i2p VALUE={d}");
        assert_eq!(
            naming_reply(ok.as_bytes(), "echo.i2p"),
            Some(Ok(Resolved { dest: d.clone(), b32: b32.clone() }))
        );
        // Another name's (late) reply, or another kind of line: not ours.
        assert_eq!(naming_reply(ok.as_bytes(), "other.i2p"), None);
        assert_eq!(naming_reply(b"PING 123", "echo.i2p"), None);
        assert_eq!(naming_reply(b"SESSION STATUS RESULT=OK", "echo.i2p"), None);
        assert_eq!(naming_reply(b"", "echo.i2p"), None);
        // Both routers' "not found".
        assert_eq!(
            naming_reply(b"NAMING REPLY RESULT=INVALID_KEY NAME=x.i2p", "x.i2p"),
            Some(Err(SamResult::InvalidKey))
        );
        assert_eq!(
            naming_reply(b"NAMING REPLY RESULT=KEY_NOT_FOUND NAME=x.i2p MESSAGE=\"no\"", "x.i2p"),
            Some(Err(SamResult::KeyNotFound))
        );
        // OK without a usable VALUE.
        for line in ["NAMING REPLY RESULT=OK NAME=x.i2p", "NAMING REPLY RESULT=OK NAME=x.i2p VALUE=AAAA"] {
            assert_eq!(
                naming_reply(line.as_bytes(), "x.i2p"),
                Some(Err(SamResult::Other("unreadable VALUE".into())))
            );
        }
    }

    #[test]
    fn replies_odd_shapes() {
        assert_eq!(parse_reply(b""), Err(ParseError::Empty));
        assert_eq!(parse_reply(b"\r"), Err(ParseError::Empty));
        assert_eq!(parse_reply(b"   \t "), Err(ParseError::Empty));
        assert_eq!(parse_reply(b"HELLO"), Err(ParseError::Malformed));
        assert_eq!(parse_reply(b"HELLO  \r"), Err(ParseError::Malformed));

        let r = reply(b"  NAMING   REPLY  RESULT=OK\tNAME=a.i2p   VALUE=AA==  ");
        assert_eq!(
            r,
            Reply {
                topic: "NAMING".into(),
                kind: "REPLY".into(),
                params: vec![
                    ("RESULT".into(), "OK".into()),
                    ("NAME".into(), "a.i2p".into()),
                    ("VALUE".into(), "AA==".into()),
                ],
            }
        );
        // Bare key, empty value, unterminated quote, junk after a quote.
        let r = reply(b"X Y FLAG K= Q=\"a\"b M=\"never closed = x");
        assert_eq!(
            r.params,
            vec![
                ("FLAG".into(), String::new()),
                ("K".into(), String::new()),
                ("Q".into(), "ab".into()),
                ("M".into(), "never closed = x".into()),
            ]
        );
        // Only one \r is stripped; invalid UTF-8 becomes U+FFFD, RESULT survives.
        let r = reply(b"A B RESULT=OK M=\xff\xfe\r\r");
        assert_eq!(r.result(), SamResult::Ok);
        assert_eq!(r.get("M"), Some("\u{fffd}\u{fffd}\r"));
        let r = reply(b"A B \"=\"\\");
        assert_eq!(r.params, vec![("\"".into(), "\\".into())]);
    }

    #[test]
    fn parse_never_panics() {
        // Every short byte string over a small alphabet of tricky bytes.
        let alphabet = [b' ', b'=', b'"', b'\\', b'\r', b'A', 0xff, b'\t'];
        let mut buf = Vec::new();
        for n in 0..=6u32 {
            for mut code in 0..alphabet.len().pow(n) {
                buf.clear();
                for _ in 0..n {
                    buf.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                let _ = parse_reply(&buf);
                let _ = pong_for(&buf);
                let _ = redact_line(&buf);
            }
        }
    }

    #[test]
    fn redaction() {
        let priv_key = "Zm9v".repeat(300);
        let create = session_create(Style::Stream, "id", &priv_key, &[]).unwrap();
        assert_eq!(
            redact_line(&create),
            "SESSION CREATE STYLE=STREAM ID=id DESTINATION=[redacted] SIGNATURE_TYPE=7"
        );
        let transient = session_create(Style::Stream, "id", "TRANSIENT", &[]).unwrap();
        assert_eq!(
            redact_line(&transient),
            "SESSION CREATE STYLE=STREAM ID=id DESTINATION=TRANSIENT SIGNATURE_TYPE=7"
        );
        assert_eq!(
            redact_line(b"SESSION STATUS RESULT=OK DESTINATION=AAAA\r\n"),
            "SESSION STATUS RESULT=OK DESTINATION=[redacted]"
        );
        assert_eq!(redact_line(b"DEST REPLY PUB=AAAA PRIV=BBBB"), "DEST REPLY PUB=AAAA PRIV=[redacted]");
        assert_eq!(
            redact_line(&hello(Some(("u", "pw"))).unwrap()),
            "HELLO VERSION MIN=3.1 MAX=3.3 USER=u PASSWORD=[redacted]"
        );
        assert_eq!(
            redact_line(b"STREAM CONNECT ID=x DESTINATION=a.i2p SILENT=false\n"),
            "STREAM CONNECT ID=x DESTINATION=a.i2p SILENT=false"
        );
    }

    /// Found by `fuzz/sam_reply`: the redactor split words at spaces only,
    /// while `parse_reply` also splits at tabs, so a key after a tab (or a
    /// SESSION line with a tab or a leading blank) kept its secret value.
    #[test]
    fn redaction_splits_like_the_parser() {
        // The fuzzer's input (after its mode byte) and its minimized form.
        assert_eq!(
            redact_line(b"SESSION\t\t\t\t\t\t\t\t\t\t\t\t\t\t SK DESTINATION=bAAAAA-=="),
            "SESSION\t\t\t\t\t\t\t\t\t\t\t\t\t\t SK DESTINATION=[redacted]"
        );
        assert_eq!(redact_line(b"SESSION\tDESTINATION="), "SESSION\tDESTINATION=[redacted]");
        assert_eq!(
            redact_line(b"DEST REPLY PUB=AAAA\tPRIV=BBBB\t"),
            "DEST REPLY PUB=AAAA\tPRIV=[redacted]\t"
        );
        assert_eq!(
            redact_line(b" \tSESSION STATUS RESULT=OK DESTINATION=AAAA"),
            " \tSESSION STATUS RESULT=OK DESTINATION=[redacted]"
        );
        assert_eq!(
            redact_line(b"HELLO VERSION  USER=u\t\tPASSWORD=pw"),
            "HELLO VERSION  USER=u\t\tPASSWORD=[redacted]"
        );
        // Not a session line: a target name stays visible at trace level.
        assert_eq!(redact_line(b"STREAM\tSESSION DESTINATION=a.i2p"), "STREAM\tSESSION DESTINATION=a.i2p");
    }

    #[test]
    fn linebuf_split_at_every_byte() {
        let stream: &[u8] =
            b"HELLO REPLY RESULT=OK VERSION=3.1\r\n\nSTREAM STATUS RESULT=OK\nPAYLOAD\x00\xff\n";
        for cut in 0..=stream.len() {
            let mut lb = LineBuf::new();
            let mut lines = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                lb.push(part);
                while lines.len() < 3 {
                    match lb.take_line().unwrap() {
                        Some(l) => lines.push(l),
                        None => break,
                    }
                }
            }
            assert_eq!(
                lines,
                vec![
                    b"HELLO REPLY RESULT=OK VERSION=3.1".to_vec(),
                    Vec::new(),
                    b"STREAM STATUS RESULT=OK".to_vec(),
                ],
                "cut {cut}"
            );
            assert_eq!(lb.into_surplus(), b"PAYLOAD\x00\xff\n", "cut {cut}");
        }
        // Byte at a time.
        let mut lb = LineBuf::new();
        let mut lines = Vec::new();
        for &b in stream {
            lb.push(&[b]);
            if lines.len() < 3 {
                if let Some(l) = lb.take_line().unwrap() {
                    lines.push(l);
                }
            }
        }
        assert_eq!(lines.len(), 3);
        assert_eq!(lb.pending(), 10);
        assert_eq!(lb.into_surplus(), b"PAYLOAD\x00\xff\n");
    }

    #[test]
    fn linebuf_surplus_and_empty() {
        let mut lb = LineBuf::new();
        assert_eq!(lb.take_line(), Ok(None));
        lb.push(b"A B\nrest");
        assert_eq!(lb.take_line(), Ok(Some(b"A B".to_vec())));
        assert_eq!(lb.take_line(), Ok(None));
        lb.push(b" more");
        assert_eq!(lb.pending(), 9);
        assert_eq!(lb.into_surplus(), b"rest more");
        let mut lb = LineBuf::new();
        lb.push(b"only\n");
        assert_eq!(lb.take_line(), Ok(Some(b"only".to_vec())));
        assert_eq!(lb.into_surplus(), b"");
        // A lone \r in the middle stays; only the one before \n goes.
        let mut lb = LineBuf::new();
        lb.push(b"a\rb\r\r\n");
        assert_eq!(lb.take_line(), Ok(Some(b"a\rb\r".to_vec())));
    }

    #[test]
    fn linebuf_tail_at_eof() {
        // emissary's reply to a STREAM CONNECT for an unknown b32, then EOF.
        let mut lb = LineBuf::new();
        lb.push(b"STREAM STATUS RESULT=CANT_REACH_PEER");
        assert_eq!(lb.take_line(), Ok(None));
        assert_eq!(lb.take_tail(), Some(b"STREAM STATUS RESULT=CANT_REACH_PEER".to_vec()));
        assert_eq!(lb.take_tail(), None, "taken once");
        assert_eq!(lb.pending(), 0);
        // After complete lines only the unterminated rest is the tail; \r goes.
        let mut lb = LineBuf::new();
        lb.push(b"HELLO REPLY RESULT=OK VERSION=3.2\nSTREAM STATUS RESULT=I2P_ERROR\r");
        assert_eq!(lb.take_line(), Ok(Some(b"HELLO REPLY RESULT=OK VERSION=3.2".to_vec())));
        assert_eq!(lb.take_line(), Ok(None));
        assert_eq!(lb.take_tail(), Some(b"STREAM STATUS RESULT=I2P_ERROR".to_vec()));
        // Nothing pending: no tail (a close with 0 bytes is no reply).
        let mut lb = LineBuf::new();
        assert_eq!(lb.take_tail(), None);
        lb.push(b"A B\n");
        assert_eq!(lb.take_line(), Ok(Some(b"A B".to_vec())));
        assert_eq!(lb.take_tail(), None);
        // A lone \r is an empty line, as `take_line` would give for "\r\n".
        let mut lb = LineBuf::new();
        lb.push(b"\r");
        assert_eq!(lb.take_tail(), Some(Vec::new()));
        // The tail is bounded like a line: MAX_LINE bytes pass, one more does not.
        let mut lb = LineBuf::new();
        lb.push(&vec![b't'; MAX_LINE]);
        assert_eq!(lb.take_tail().map(|l| l.len()), Some(MAX_LINE));
        let mut lb = LineBuf::new();
        lb.push(&vec![b't'; MAX_LINE + 1]);
        assert_eq!(lb.take_line(), Err(LineTooLong));
        assert_eq!(lb.take_tail(), None);
    }

    #[test]
    fn linebuf_too_long() {
        // Exactly MAX_LINE without newline: still waiting; one more: error.
        let mut lb = LineBuf::new();
        lb.push(&vec![b'x'; MAX_LINE]);
        assert_eq!(lb.take_line(), Ok(None));
        lb.push(b"x");
        assert_eq!(lb.take_line(), Err(LineTooLong));
        assert_eq!(lb.take_line(), Err(LineTooLong));
        // MAX_LINE bytes then newline is fine; MAX_LINE + 1 then newline isn't.
        let mut lb = LineBuf::new();
        let mut data = vec![b'y'; MAX_LINE];
        data.push(b'\n');
        lb.push(&data);
        assert_eq!(lb.take_line().unwrap().unwrap().len(), MAX_LINE);
        let mut lb = LineBuf::new();
        let mut data = vec![b'y'; MAX_LINE + 1];
        data.extend_from_slice(b"\nnext\n");
        lb.push(&data);
        assert_eq!(lb.take_line(), Err(LineTooLong));
        // A long line arriving in small pieces after a short one.
        let mut lb = LineBuf::new();
        lb.push(b"ok\n");
        assert_eq!(lb.take_line(), Ok(Some(b"ok".to_vec())));
        let mut err = false;
        for _ in 0..(MAX_LINE / 7 + 2) {
            lb.push(b"1234567");
            if lb.take_line() == Err(LineTooLong) {
                err = true;
                break;
            }
        }
        assert!(err);
    }
}
