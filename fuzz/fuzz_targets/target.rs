//! Fuzz target: the SOCKS target validator (`i2p_addr::parse_target`) on
//! arbitrary host bytes, plus the I2P base64 and b32-of-destination helpers
//! that sit beside it.
//!
//! Checked: an accepted target is `[a-z0-9.-]+`, ends in `.i2p`, is at most
//! 255 bytes, holds none of space, `=`, `"`, CR, LF or NUL, passes
//! `is_safe_value`, and so goes into `STREAM CONNECT` as exactly one line
//! that parses back to the same DESTINATION (no SAM syntax can ride along);
//! it is the input lowercased minus one trailing dot, and validating it again
//! gives itself; each kind has its shape (b32: 52 chars, b33: 56 or more,
//! names: at most 67 bytes and never `.b32.i2p`); case and one trailing dot
//! do not change the verdict. I2P base64 decodes only canonical text and
//! round-trips; a destination's b32 address is a valid b32 target.

#![no_main]

use i2psocks::i2p_addr::{
    b32_of_dest, b64_decode, b64_encode, parse_target, Target, B32_CHARS, B33_MIN_CHARS, MAX_HOST_LEN,
    MAX_NAME_LEN,
};
use i2psocks::sam::proto::{is_safe_value, naming_lookup, parse_reply, stream_connect};
use libfuzzer_sys::fuzz_target;

fn check_target(host: &[u8], t: &Target) {
    let s = t.as_str();
    assert!(!s.is_empty() && s.len() <= MAX_HOST_LEN, "{s:?}");
    assert!(
        s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'),
        "{s:?}"
    );
    assert!(s.ends_with(".i2p"), "{s:?}");
    assert!(!s.bytes().any(|b| matches!(b, b' ' | b'=' | b'"' | b'\r' | b'\n' | 0)), "{s:?}");
    assert!(is_safe_value(s), "{s:?}");

    // Normalization only lowercases and drops one trailing dot.
    let lower = host.to_ascii_lowercase();
    let expect = lower.strip_suffix(b".").unwrap_or(&lower);
    assert_eq!(s.as_bytes(), expect);
    assert_eq!(parse_target(s.as_bytes()).as_ref(), Ok(t), "not a fixed point");

    let prefix_len = s.len() - ".b32.i2p".len().min(s.len());
    match t {
        Target::B32(_) => assert!(s.ends_with(".b32.i2p") && prefix_len == B32_CHARS, "{s:?}"),
        Target::B33(_) => assert!(s.ends_with(".b32.i2p") && prefix_len >= B33_MIN_CHARS, "{s:?}"),
        Target::Name(_) => assert!(!s.ends_with(".b32.i2p") && s.len() <= MAX_NAME_LEN, "{s:?}"),
    }

    // What the SAM client sends: one line whose DESTINATION is the target.
    for (line, key) in [
        (stream_connect("fuzz", s, Some(80)).expect("safe target refused"), "DESTINATION"),
        (naming_lookup(s).expect("safe target refused"), "NAME"),
    ] {
        let (body, end) = line.split_at(line.len() - 1);
        assert_eq!(end, b"\n");
        assert!(!body.contains(&b'\n') && !body.contains(&b'\r'));
        let reply = parse_reply(body).expect("command line does not parse");
        assert_eq!(reply.get(key), Some(s));
    }
}

fn check_base64(data: &[u8]) {
    let encoded = b64_encode(data);
    assert_eq!(b64_decode(&encoded).as_deref(), Some(data));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(bytes) = b64_decode(text) {
            assert_eq!(b64_encode(&bytes), text, "non-canonical base64 accepted");
        }
    }
    if let Some(b32) = b32_of_dest(data) {
        assert!(matches!(parse_target(b32.as_bytes()), Ok(Target::B32(_))), "{b32}");
    }
}

fuzz_target!(|data: &[u8]| {
    let verdict = parse_target(data);
    if let Ok(t) = &verdict {
        check_target(data, t);
    }
    // Case and one trailing dot never change the verdict.
    assert_eq!(parse_target(&data.to_ascii_uppercase()), verdict);
    if !data.ends_with(b".") && data.len() < MAX_HOST_LEN {
        let mut dotted = data.to_vec();
        dotted.push(b'.');
        assert_eq!(parse_target(&dotted), verdict);
    }
    check_base64(data);
});
