//! Fuzz target: what comes back from a SAM bridge (`sam::proto`): reply
//! lines cut from a byte stream by `LineBuf`, then parsed by `parse_reply`,
//! plus the PING answer and the log redactor that see the same lines.
//!
//! The first byte picks a mode (its value mod 3):
//! 0. `parse_reply`, the typed reply decoders, `pong_for`, `redact_line`
//!    and `version_minor` on the rest: no panic; topic and kind are single
//!    non-empty words; keys hold no blank or `=`; a decoded success has the
//!    right topic, kind and RESULT; a PONG is one line; no secret value
//!    survives redaction.
//! 1. `LineBuf`: a repeat byte (the body is repeated 1..=16 times, or with
//!    0xff until the stream passes `MAX_LINE`), a read-size header, then the
//!    body. Lines never
//!    hold `\n` and never pass `MAX_LINE`; lines, their line ends and the
//!    surplus add up to the input exactly; an over-long line is an error at
//!    the right point and stays one; the split of the reads changes nothing.
//! 2. Round trip: the rest, cut at NUL bytes, is turned into a topic, a kind
//!    and `KEY=VALUE` pairs (safe unquoted values, or any text quoted with
//!    Java's escapes) and formatted as a line; `parse_reply` must give back
//!    exactly those fields.

#![no_main]

use i2psocks::i2p_addr::b32_of_b64;
use i2psocks::sam::proto::{
    dest_reply, hello_reply, is_safe_key, is_safe_value, naming_reply, parse_reply, pong_for, redact_line,
    session_status, stream_status, version_minor, LineBuf, LineTooLong, Reply, SamResult, MAX_LINE,
};
use i2psocks_fuzz::{reads, split_reads};
use libfuzzer_sys::fuzz_target;

/// How far past `MAX_LINE` a stream of repeat byte 0xff goes. Long streams
/// are opt-in: a 16 KiB stream costs as much as a few hundred short ones.
const PAST_MAX_LINE: usize = 64;

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn parse_mode(line: &[u8]) {
    if let Ok(r) = parse_reply(line) {
        for word in [&r.topic, &r.kind] {
            assert!(!word.is_empty() && !word.contains(is_blank), "word {word:?}");
        }
        for (k, _) in &r.params {
            assert!(!k.contains(is_blank) && !k.contains('='), "key {k:?}");
        }
    }
    if let Some(pong) = pong_for(line) {
        assert!(pong.starts_with(b"PONG") && pong.ends_with(b"\n"));
        assert_eq!(pong.iter().filter(|&&b| b == b'\n').count(), 1, "PONG {pong:x?}");
        assert!(line.starts_with(b"PING"));
    }
    check_redaction(line);
    check_typed(line);
    if let Ok(s) = std::str::from_utf8(line) {
        if let Some(minor) = version_minor(s) {
            assert!(minor <= 999);
        }
    }
}

/// The typed decoders agree with `parse_reply`: a success is the right
/// topic and kind with RESULT=OK and a usable field; a refusal carries the
/// line's RESULT.
fn check_typed(line: &[u8]) {
    let parsed = parse_reply(line).ok();
    let shape = |topic: &str, kind: &str| parsed.as_ref().is_some_and(|r| r.is(topic, kind));
    let ok = parsed.as_ref().is_some_and(|r| r.result() == SamResult::Ok);
    if let Ok(minor) = hello_reply(line) {
        assert!(shape("HELLO", "REPLY") && ok);
        let v = parsed.as_ref().and_then(|r| r.get("VERSION")).and_then(version_minor);
        assert_eq!(v, Some(minor));
    }
    if let Ok((key, b32)) = session_status(line) {
        assert!(shape("SESSION", "STATUS") && ok);
        assert_eq!(b32_of_b64(&key).as_deref(), Some(b32.as_str()));
    }
    if stream_status(line).is_ok() {
        assert!(shape("STREAM", "STATUS") && ok);
    }
    if dest_reply(line).is_ok() {
        assert!(shape("DEST", "REPLY"));
    }
    if let Some(r) = parsed.as_ref() {
        let name = r.get("NAME").unwrap_or("x.i2p");
        if let Some(Ok(res)) = naming_reply(line, name) {
            assert!(shape("NAMING", "REPLY") && ok);
            assert_eq!(b32_of_b64(&res.dest).as_deref(), Some(res.b32.as_str()));
        }
    }
}

/// A value that a secret key carries in the line must not reach the log
/// text: wherever the redacted text still has `KEY=value` for a secret key,
/// under either way of splitting words (the redactor's and the parser's),
/// the value must be the placeholder.
fn check_redaction(line: &[u8]) {
    let out = redact_line(line);
    let session = parse_reply(line).is_ok_and(|r| r.topic == "SESSION");
    for word in out.split(is_blank) {
        let Some((k, v)) = word.split_once('=') else { continue };
        let secret = match k {
            "PRIV" | "PASSWORD" => true,
            "DESTINATION" => session && v != "TRANSIENT",
            _ => false,
        };
        if secret {
            assert_eq!(v, "[redacted]", "{k} leaks in {out:?}");
        }
    }
}

/// Feeds `reads` to a `LineBuf` the way `sam::conn` does (take lines after
/// every read). Returns the lines, whether it failed, and the surplus.
fn drive_linebuf(stream: &[u8], input: &[&[u8]]) -> (Vec<Vec<u8>>, bool, Vec<u8>) {
    let mut lb = LineBuf::new();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut failed = false;
    let mut fed = 0usize;
    // Start of the first byte not yet returned in a line.
    let mut pos = 0usize;
    // Where the newlines are, so finding the next one costs O(1), not O(n):
    // with one-byte reads of a 16 KiB line the harness would be quadratic.
    let newlines: Vec<usize> =
        stream.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i).collect();
    let mut next_nl = 0usize;
    for read in input {
        lb.push(read);
        fed += read.len();
        if failed {
            assert_eq!(lb.take_line(), Err(LineTooLong), "error did not stick");
            continue;
        }
        loop {
            assert_eq!(lb.pending(), fed - pos);
            let open = &stream[pos..fed];
            while newlines.get(next_nl).is_some_and(|&i| i < pos) {
                next_nl += 1;
            }
            let newline = newlines.get(next_nl).filter(|&&i| i < fed).map(|&i| i - pos);
            match lb.take_line() {
                Ok(Some(line)) => {
                    let nl = newline.expect("line without a newline");
                    assert!(nl <= MAX_LINE, "line of {nl} bytes taken");
                    let raw = &open[..nl];
                    assert_eq!(line, raw.strip_suffix(b"\r").unwrap_or(raw));
                    assert!(!line.contains(&b'\n'));
                    let _ = parse_reply(&line);
                    pos += nl + 1;
                    lines.push(line);
                }
                Ok(None) => {
                    assert_eq!(newline, None, "complete line not returned");
                    assert!(open.len() <= MAX_LINE, "{} bytes pending without error", open.len());
                    break;
                }
                Err(LineTooLong) => {
                    let len = newline.unwrap_or(open.len());
                    assert!(len > MAX_LINE, "line of {len} bytes refused");
                    failed = true;
                    assert_eq!(lb.take_line(), Err(LineTooLong), "error did not stick");
                    break;
                }
            }
        }
    }
    assert_eq!(fed, stream.len());
    let surplus = lb.into_surplus();
    assert_eq!(surplus, &stream[pos..], "surplus is not what follows the last line");
    (lines, failed, surplus)
}

fn linebuf_mode(data: &[u8]) {
    let Some((&repeat, rest)) = data.split_first() else { return };
    let Some((sizes, body)) = split_reads(rest) else { return };
    if body.is_empty() {
        return;
    }
    let times = match repeat {
        0xff => (MAX_LINE + PAST_MAX_LINE) / body.len() + 1,
        r => usize::from(r & 0x0f) + 1,
    };
    let stream = body.repeat(times);
    let whole = drive_linebuf(&stream, &[&stream]);
    let split = drive_linebuf(&stream, &reads(sizes, &stream));
    assert_eq!(split, whole, "outcome depends on the split");
}

/// Keeps only the bytes of `raw` in the safe key set; never empty.
fn safe_key(raw: &[u8]) -> String {
    let s: String =
        raw.iter().map(|&b| char::from(b)).filter(|&c| is_safe_key(c.encode_utf8(&mut [0; 4]))).collect();
    if s.is_empty() {
        "K".to_owned()
    } else {
        s
    }
}

fn round_trip_mode(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut fields = rest.split(|&b| b == 0);
    let topic = safe_key(fields.next().unwrap_or_default());
    let kind = safe_key(fields.next().unwrap_or_default());
    let mut line = format!("{topic} {kind}");
    let mut params = Vec::new();
    while let Some(key) = fields.next() {
        let Some(value) = fields.next() else { break };
        let key = safe_key(key);
        let (style, value) = value.split_first().unwrap_or((&0, &[]));
        line.push_str(match style % 3 {
            0 => " ",
            1 => "\t",
            _ => " \t  ",
        });
        let value = if style & 4 == 0 {
            // Unquoted, as both routers send a plain value.
            let v: String = value
                .iter()
                .map(|&b| char::from(b))
                .filter(|&c| is_safe_value(c.encode_utf8(&mut [0; 4])))
                .collect();
            line.push_str(&format!("{key}={v}"));
            v
        } else {
            // Quoted with Java's escapes: any text, blanks and CR/LF included.
            let v = String::from_utf8_lossy(value).into_owned();
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            line.push_str(&format!("{key}=\"{escaped}\""));
            v
        };
        params.push((key, value));
    }
    if flags & 1 != 0 {
        line.push('\r');
    }
    let want = Reply { topic, kind, params };
    assert_eq!(parse_reply(line.as_bytes()), Ok(want), "line {line:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => parse_mode(rest),
        1 => linebuf_mode(rest),
        _ => round_trip_mode(rest),
    }
});
