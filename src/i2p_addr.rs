//! I2P target validation, I2P base64, and `.b32.i2p` addresses of destinations.
//!
//! `parse_target` decides, from the bytes a SOCKS client sent and nothing else,
//! whether a host is something we may hand to the router: a `.b32.i2p` address
//! (hash of a destination), a "b33" `.b32.i2p` address (an encrypted-LeaseSet
//! public key with a CRC), or an address-book name that follows the I2P naming
//! rules. It never resolves anything, never touches the network, and accepts
//! only bytes that cannot inject SAM syntax (no space, `=`, quotes or control
//! bytes can survive it). It does not look names up or decide whether a b33
//! needs a secret we don't have: the router does that and answers in SAM.
//!
//! Specs: geti2p.net "Naming and address book" (hostname rules), "B32 for
//! Encrypted Leasesets" (proposal 149: flags, sigtypes, CRC-32 XOR), RFC 4648
//! base32, and the I2P base64 alphabet (`-` for `+`, `~` for `/`).

use std::net::{Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};

/// Longest host we look at: a SOCKS5 domain is at most 255 bytes, and
/// SOCKS4a's is capped to the same by the codec.
pub const MAX_HOST_LEN: usize = 255;

/// Longest address-book name, `.i2p` included (naming rules).
pub const MAX_NAME_LEN: usize = 67;

/// Base32 characters of a classic b32 address: 256-bit hash -> 52 chars.
pub const B32_CHARS: usize = 52;

/// Fewest base32 characters of a b33 address: 35 bytes -> 56 chars.
pub const B33_MIN_CHARS: usize = 56;

/// Length of a destination without its certificate payload:
/// 256-byte encryption key field + 128-byte signing key field + 3-byte
/// certificate header (type, big-endian length).
pub const DEST_FIXED_LEN: usize = 387;

const I2P_SUFFIX: &str = ".i2p";
const B32_SUFFIX: &str = ".b32.i2p";

/// A validated I2P target, normalized (ASCII lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `<52 base32 chars>.b32.i2p`
    B32(String),
    /// `<56+ base32 chars>.b32.i2p` with a valid CRC (encrypted LeaseSet).
    B33(String),
    /// An address-book name ending in `.i2p`.
    Name(String),
}

impl Target {
    /// The normalized name to put in SAM's DESTINATION=.
    pub fn as_str(&self) -> &str {
        match self {
            Target::B32(s) | Target::B33(s) | Target::Name(s) => s,
        }
    }
}

/// Why a target was refused (all map to SOCKS 0x02 / 0x5B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    Empty,
    TooLong,
    BadChar,
    NotI2p,
    IpAddress,
    BadB32,
    BadB33,
    BadName,
}

/// Validate a raw SOCKS hostname. Never resolves anything.
///
/// Order: limits, ASCII, lowercase, drop one trailing dot (an FQDN-style
/// `foo.i2p.` means the same name), IP literals, the `.i2p` suffix, the
/// character set, then the b32/b33 or naming rules.
pub fn parse_target(host: &[u8]) -> Result<Target, AddrError> {
    if host.is_empty() {
        return Err(AddrError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(AddrError::TooLong);
    }
    if !host.is_ascii() {
        return Err(AddrError::BadChar);
    }
    let lower = host.to_ascii_lowercase();
    let mut name = String::from_utf8(lower).map_err(|_| AddrError::BadChar)?;
    if name.ends_with('.') {
        name.pop();
    }
    if name.is_empty() {
        return Err(AddrError::Empty);
    }
    if is_ip_literal(&name) {
        return Err(AddrError::IpAddress);
    }
    if !name.ends_with(I2P_SUFFIX) {
        return Err(AddrError::NotI2p);
    }
    // Everything below is only ever [a-z0-9.-]: this is what keeps SAM
    // syntax (space, `=`, quotes, CR/LF, NUL) out of DESTINATION=.
    if !name.bytes().all(is_name_byte) {
        return Err(AddrError::BadChar);
    }
    if let Some(x) = name.strip_suffix(B32_SUFFIX) {
        return classify_b32(x, &name);
    }
    check_name_rules(&name)?;
    Ok(Target::Name(name))
}

fn is_ip_literal(s: &str) -> bool {
    let inner = s.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(s);
    inner.parse::<Ipv4Addr>().is_ok() || inner.parse::<Ipv6Addr>().is_ok()
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
}

/// `x` is what precedes `.b32.i2p`; the length decides the flavour
/// (proposal 149: "Distinguish old from new flavors by length").
fn classify_b32(x: &str, full: &str) -> Result<Target, AddrError> {
    let n = x.len();
    if n == B32_CHARS {
        // 52 chars carry 260 bits for a 256-bit hash: strict decoding requires
        // the 4 spare bits to be zero (real addresses end in `a` or `q`), so a
        // typo in the last character is caught instead of silently ignored.
        match b32_decode_strict(x) {
            Some(bytes) if bytes.len() == 32 => Ok(Target::B32(full.to_owned())),
            _ => Err(AddrError::BadB32),
        }
    } else if n >= B33_MIN_CHARS {
        let data = b32_decode_strict(x).ok_or(AddrError::BadB33)?;
        if b33_is_valid(&data) {
            Ok(Target::B33(full.to_owned()))
        } else {
            Err(AddrError::BadB33)
        }
    } else {
        Err(AddrError::BadB32)
    }
}

/// RFC 4648 lowercase base32 without padding, canonical only: every char in
/// `[a-z2-7]` and the unused low bits of the last char zero (checked by
/// re-encoding), as the b33 spec demands ("Any unused bits ... must be 0").
fn b32_decode_strict(x: &str) -> Option<Vec<u8>> {
    if x.is_empty() || !x.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) {
        return None;
    }
    let alphabet = base32::Alphabet::Rfc4648Lower { padding: false };
    let bytes = base32::decode(alphabet, x)?;
    if base32::encode(alphabet, &bytes) == x {
        Some(bytes)
    } else {
        None
    }
}

/// b33 flag bits (proposal 149).
const B33_FLAG_TWO_BYTE_SIGTYPES: u8 = 0x01;
const B33_FLAG_SECRET: u8 = 0x02;
const B33_FLAGS_KNOWN: u8 = 0x07;

/// Signing public key length for a (public key sigtype, blinded sigtype)
/// pair that a router can produce: EdDSA (7) and RedDSA (11) blind to
/// RedDSA in both routers; i2pd blinds ECDSA P256/P384/P521 (1/2/3) to the
/// same type. Pinning the pair, not just each type, makes a typo in the
/// header bytes far likelier to be caught.
fn blinded_pair_key_len(sigtype: u8, blinded: u8) -> Option<usize> {
    match (sigtype, blinded) {
        (7 | 11, 11) => Some(32),
        (1, 1) => Some(64),
        (2, 2) => Some(96),
        (3, 3) => Some(132),
        _ => None,
    }
}

/// Proposal 149 "Decoding and Verification": CRC-32 of data[3..] is XORed,
/// little-endian, into bytes 0..3 (flags, pubkey sigtype, blinded sigtype).
/// A typo almost surely leaves unknown flag bits or sigtypes, or a length that
/// doesn't fit the key; that is the "checksum check" the routers do too.
///
/// Strict choices: unknown flag bits refused; two-byte sigtypes refused (no
/// sigtype needs them and Java refuses them); both sigtypes must be
/// a pair a router makes (see `blinded_pair_key_len`); the data must be exactly flags+sigtypes+key, except that with
/// the "secret required" flag Java may append `len || secret`, which must
/// then fill the rest exactly.
fn b33_is_valid(data: &[u8]) -> bool {
    let Some(tail) = data.get(3..) else {
        return false;
    };
    let crc = crc32(tail).to_le_bytes();
    let (Some(&f), Some(&s1), Some(&s2)) = (data.first(), data.get(1), data.get(2)) else {
        return false;
    };
    let (flags, sig, blinded) = (f ^ crc[0], s1 ^ crc[1], s2 ^ crc[2]);
    if flags & !B33_FLAGS_KNOWN != 0 || flags & B33_FLAG_TWO_BYTE_SIGTYPES != 0 {
        return false;
    }
    let Some(key_len) = blinded_pair_key_len(sig, blinded) else {
        return false;
    };
    match tail.len().checked_sub(key_len) {
        Some(0) => true,
        Some(extra) if flags & B33_FLAG_SECRET != 0 => {
            tail.get(key_len).is_some_and(|&secret_len| extra == 1 + usize::from(secret_len))
        }
        _ => false,
    }
}

/// CRC-32 (IEEE 802.3 / zlib, reflected polynomial 0xEDB88320), bitwise: the
/// input is a few dozen bytes, so a table would buy nothing.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Naming rules for address-book hostnames (geti2p.net naming docs).
/// The caller has already checked the `.i2p` suffix and `[a-z0-9.-]`.
fn check_name_rules(name: &str) -> Result<(), AddrError> {
    if name.len() > MAX_NAME_LEN {
        return Err(AddrError::BadName);
    }
    // Something must precede `.i2p`: a bare `.i2p` is no name.
    if name.len() <= I2P_SUFFIX.len() {
        return Err(AddrError::BadName);
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(AddrError::BadName);
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err(AddrError::BadName);
    }
    // `--` only as the `xn--` punycode (IDN) prefix of a label.
    for label in name.split('.') {
        let mut rest = label;
        let mut at = 0;
        while let Some(pos) = rest.find("--") {
            let abs = at + pos;
            if !(abs == 2 && label.starts_with("xn--")) {
                return Err(AddrError::BadName);
            }
            at = abs + 1;
            rest = label.get(at..).unwrap_or("");
        }
    }
    Ok(())
}

/// I2P base64 value of one character.
fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'~' => Some(63),
        _ => None,
    }
}

/// I2P base64 character for a 6-bit value (higher bits ignored).
fn b64_char(v: u8) -> char {
    let v = v & 0x3f;
    let c = match v {
        0..=25 => b'A' + v,
        26..=51 => b'a' + (v - 26),
        52..=61 => b'0' + (v - 52),
        62 => b'-',
        _ => b'~',
    };
    char::from(c)
}

/// Decode I2P base64 (`-` for `+`, `~` for `/`, `=` padded).
///
/// Strict: the length must be a multiple of 4, `=` may only end the last
/// quantum (one or two of them), and the bits padding drops must be zero, so
/// each byte string has exactly one accepted encoding.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let quanta = bytes.len() / 4;
    let mut out = Vec::with_capacity(quanta * 3);
    for (i, q) in bytes.chunks_exact(4).enumerate() {
        let last = i + 1 == quanta;
        let &[c0, c1, c2, c3] = q else {
            return None;
        };
        let v0 = b64_value(c0)?;
        let v1 = b64_value(c1)?;
        match (c2, c3) {
            (b'=', b'=') if last => {
                if v1 & 0x0f != 0 {
                    return None;
                }
                out.push(v0 << 2 | v1 >> 4);
            }
            (_, b'=') if last => {
                let v2 = b64_value(c2)?;
                if v2 & 0x03 != 0 {
                    return None;
                }
                out.push(v0 << 2 | v1 >> 4);
                out.push(v1 << 4 | v2 >> 2);
            }
            _ => {
                let v2 = b64_value(c2)?;
                let v3 = b64_value(c3)?;
                out.push(v0 << 2 | v1 >> 4);
                out.push(v1 << 4 | v2 >> 2);
                out.push(v2 << 6 | v3);
            }
        }
    }
    Some(out)
}

/// Encode I2P base64 with padding.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied();
        let b2 = chunk.get(2).copied();
        let n1 = b1.unwrap_or(0);
        let n2 = b2.unwrap_or(0);
        out.push(b64_char(b0 >> 2));
        out.push(b64_char(b0 << 4 | n1 >> 4));
        out.push(match b1 {
            Some(_) => b64_char(n1 << 2 | n2 >> 6),
            None => '=',
        });
        out.push(match b2 {
            Some(_) => b64_char(n2),
            None => '=',
        });
    }
    out
}

/// Length of the public destination at the start of `blob` (387 + certlen),
/// if the blob is long enough.
pub fn public_dest_len(blob: &[u8]) -> Option<usize> {
    let cert_len = match blob.get(DEST_FIXED_LEN - 2..DEST_FIXED_LEN)? {
        &[hi, lo] => usize::from(u16::from_be_bytes([hi, lo])),
        _ => return None,
    };
    let total = DEST_FIXED_LEN + cert_len;
    (blob.len() >= total).then_some(total)
}

/// `<base32(sha256(public dest))>.b32.i2p` for a binary destination or a
/// private-key blob (only its public part is hashed).
pub fn b32_of_dest(blob: &[u8]) -> Option<String> {
    let public = blob.get(..public_dest_len(blob)?)?;
    let hash = Sha256::digest(public);
    let mut s = base32::encode(base32::Alphabet::Rfc4648Lower { padding: false }, &hash);
    s.push_str(B32_SUFFIX);
    Some(s)
}

/// [`b32_of_dest`] of a destination or private key given in I2P base64, as
/// SAM sends them.
pub fn b32_of_b64(s: &str) -> Option<String> {
    b32_of_dest(&b64_decode(s)?)
}

/// A well-formed public destination for unit tests elsewhere: 384 key
/// bytes made from `seed`, then a key certificate (sig type 7, crypto 0).
/// Returns (I2P base64, `.b32.i2p`).
#[cfg(test)]
pub fn test_dest(seed: u8) -> (String, String) {
    let mut blob: Vec<u8> = (0..384u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
    blob.extend_from_slice(&[5, 0, 4, 0, 7, 0, 0]);
    let b32 = b32_of_dest(&blob).unwrap_or_default();
    (b64_encode(&blob), b32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    // A real-shaped b32 (52 chars, ends in `a`: spare bits zero).
    const GOOD_B32: &str = "ukeu3k5oycgaauneqgtnvselmt4yemvoilkln7jpvamvfx7dnkdq.b32.i2p";

    fn b32_of(bytes: &[u8]) -> String {
        base32::encode(base32::Alphabet::Rfc4648Lower { padding: false }, bytes)
    }

    /// Build a b33 the way proposal 149 says: flags, sigtypes, key, then XOR
    /// the little-endian CRC-32 of data[3..] into bytes 0..3.
    fn make_b33(flags: u8, sig: u8, blinded: u8, key: &[u8]) -> Vec<u8> {
        let mut data = vec![flags, sig, blinded];
        data.extend_from_slice(key);
        let crc = crc32(&data[3..]).to_le_bytes();
        data[0] ^= crc[0];
        data[1] ^= crc[1];
        data[2] ^= crc[2];
        data
    }

    fn b33_host(data: &[u8]) -> String {
        format!("{}.b32.i2p", b32_of(data))
    }

    fn fake_key(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(37).wrapping_add(11)).collect()
    }

    #[test]
    fn crc32_known_answer() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
    }

    #[test]
    fn limits_first() {
        assert_eq!(parse_target(b""), Err(AddrError::Empty));
        assert_eq!(parse_target(b"."), Err(AddrError::Empty));
        let long = [b'a'; 256];
        assert_eq!(parse_target(&long), Err(AddrError::TooLong));
        // 255 bytes is within the limit but breaks the naming rules.
        let mut max = vec![b'a'; 251];
        max.extend_from_slice(b".i2p");
        assert_eq!(parse_target(&max), Err(AddrError::BadName));
    }

    #[test]
    fn good_b32_and_normalization() {
        let t = parse_target(GOOD_B32.as_bytes()).unwrap();
        assert_eq!(t, Target::B32(GOOD_B32.to_owned()));
        assert_eq!(t.as_str(), GOOD_B32);
        let upper = GOOD_B32.to_ascii_uppercase();
        assert_eq!(parse_target(upper.as_bytes()), Ok(Target::B32(GOOD_B32.into())));
        let dotted = format!("{GOOD_B32}.");
        assert_eq!(parse_target(dotted.as_bytes()), Ok(Target::B32(GOOD_B32.into())));
        // Only one trailing dot is dropped.
        let two = format!("{GOOD_B32}..");
        assert_eq!(parse_target(two.as_bytes()), Err(AddrError::NotI2p));
    }

    #[test]
    fn bad_b32() {
        let x = &GOOD_B32[..52];
        for bad in [
            format!("{}.b32.i2p", &x[..51]),
            format!("{x}a.b32.i2p"),
            format!("{}0.b32.i2p", &x[..51]),
            format!("{}1.b32.i2p", &x[..51]),
            format!("8{}.b32.i2p", &x[1..]),
            format!("9{}.b32.i2p", &x[1..]),
            // Last char with non-zero spare bits (`b` = 00001).
            format!("{}b.b32.i2p", &x[..51]),
            // 54 and 55 chars: neither flavour.
            format!("{x}aa.b32.i2p"),
            format!("{x}aaa.b32.i2p"),
            ".b32.i2p".to_owned(),
        ] {
            assert_eq!(parse_target(bad.as_bytes()), Err(AddrError::BadB32), "{bad}");
        }
    }

    #[test]
    fn b33_valid_and_flipped() {
        let data = make_b33(0, 7, 11, &fake_key(32));
        assert_eq!(data.len(), 35);
        let host = b33_host(&data);
        assert_eq!(host.len(), 56 + 8);
        assert_eq!(parse_target(host.as_bytes()), Ok(Target::B33(host.clone())));
        let upper = host.to_ascii_uppercase();
        assert_eq!(parse_target(upper.as_bytes()), Ok(Target::B33(host.clone())));

        // Any single flipped bit in the key changes the CRC and so scrambles
        // the header: refused. In the header, only the two flag bits that
        // carry meaning (secret, per-client auth) leave a valid address; the
        // spec gives them no extra protection.
        for byte in 0..data.len() {
            for bit in 0..8 {
                let mut d = data.clone();
                d[byte] ^= 1 << bit;
                let h = b33_host(&d);
                let want = if byte == 0 && (bit == 1 || bit == 2) {
                    Ok(Target::B33(h.clone()))
                } else {
                    Err(AddrError::BadB33)
                };
                assert_eq!(parse_target(h.as_bytes()), want, "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn b33_flags_sigtypes_lengths() {
        let k = fake_key(32);
        // Secret-required and per-client-auth flags are allowed: the router
        // decides what it can do with them.
        for flags in [0x02, 0x04, 0x06] {
            let h = b33_host(&make_b33(flags, 11, 11, &k));
            assert!(matches!(parse_target(h.as_bytes()), Ok(Target::B33(_))));
        }
        // Two-byte sigtypes, unknown flag bits, unknown sigtypes: refused.
        for (flags, s1, s2) in [(0x01, 7, 11), (0x08, 7, 11), (0x80, 7, 11), (0, 0, 11), (0, 7, 200)] {
            let h = b33_host(&make_b33(flags, s1, s2, &k));
            assert_eq!(parse_target(h.as_bytes()), Err(AddrError::BadB33));
        }
        // ECDSA P256 key (64 bytes) is a valid b33 too.
        let h = b33_host(&make_b33(0, 1, 1, &fake_key(64)));
        assert!(matches!(parse_target(h.as_bytes()), Ok(Target::B33(_))));
        // Key too short or too long for the sigtype.
        for n in [33, 40, 64] {
            let h = b33_host(&make_b33(0, 7, 11, &fake_key(n)));
            assert_eq!(parse_target(h.as_bytes()), Err(AddrError::BadB33), "{n}");
        }
        // Java's "secret included" form: flag 0x02, then len || secret.
        let mut with_secret = k.clone();
        with_secret.push(3);
        with_secret.extend_from_slice(b"abc");
        let h = b33_host(&make_b33(0x02, 7, 11, &with_secret));
        assert!(matches!(parse_target(h.as_bytes()), Ok(Target::B33(_))));
        // Same bytes without the flag, or with a wrong length byte: refused.
        let h = b33_host(&make_b33(0, 7, 11, &with_secret));
        assert_eq!(parse_target(h.as_bytes()), Err(AddrError::BadB33));
        with_secret[32] = 4;
        let h = b33_host(&make_b33(0x02, 7, 11, &with_secret));
        assert_eq!(parse_target(h.as_bytes()), Err(AddrError::BadB33));
        // 56+ chars that aren't base32 at all.
        let h = format!("{}.b32.i2p", "0".repeat(56));
        assert_eq!(parse_target(h.as_bytes()), Err(AddrError::BadB33));
    }

    #[test]
    fn names_per_rule() {
        for good in [
            "i2p-projekt.i2p",
            "stats.i2p",
            "a.i2p",
            "sub.domain.i2p",
            "0.i2p",
            "xn--bcher-kva.i2p",
            "www.xn--bcher-kva.i2p",
            "b32.i2p",
            "Zzz.I2P",
            "1.2.3.4.i2p",
        ] {
            let t = parse_target(good.as_bytes()).unwrap();
            assert_eq!(t, Target::Name(good.to_ascii_lowercase()), "{good}");
        }
        // Exactly 67 characters is fine, 68 is not.
        let name67 = format!("{}.i2p", "a".repeat(63));
        assert!(parse_target(name67.as_bytes()).is_ok());
        let name68 = format!("{}.i2p", "a".repeat(64));
        assert_eq!(parse_target(name68.as_bytes()), Err(AddrError::BadName));
        for bad in [
            ".i2p",
            ".foo.i2p",
            "-foo.i2p",
            "foo..bar.i2p",
            "foo.-bar.i2p",
            "foo-.bar.i2p",
            "foo-.i2p",
            "a--b.i2p",
            "axn--b.i2p",
            "xn---b.i2p",
            "foo.xn--a--b.i2p",
        ] {
            assert_eq!(parse_target(bad.as_bytes()), Err(AddrError::BadName), "{bad}");
        }
        assert_eq!(parse_target(b"i2p"), Err(AddrError::NotI2p));
        assert_eq!(parse_target(b"foo_bar.i2p"), Err(AddrError::BadChar));
    }

    #[test]
    fn clearnet_and_ips() {
        for clear in ["example.com", "example.com.", "localhost", "foo.i2p.com", "i2p.onion"] {
            assert_eq!(parse_target(clear.as_bytes()), Err(AddrError::NotI2p), "{clear}");
        }
        for ip in ["127.0.0.1", "10.1.2.3.", "::1", "[::1]", "[2001:db8::1]", "2001:DB8::1"] {
            assert_eq!(parse_target(ip.as_bytes()), Err(AddrError::IpAddress), "{ip}");
        }
    }

    #[test]
    fn injection_characters_never_pass() {
        for bad in [
            &b"a b.i2p"[..],
            b"a=b.i2p",
            b"a\"b.i2p",
            b"a'b.i2p",
            b"a\r\n.i2p",
            b"a\nSTREAM CONNECT.i2p",
            b"a\0.i2p",
            b"a\t.i2p",
            b"a\x7f.i2p",
        ] {
            assert_eq!(parse_target(bad), Err(AddrError::BadChar), "{bad:?}");
        }
        assert_eq!(parse_target("caf\u{e9}.i2p".as_bytes()), Err(AddrError::BadChar));
        assert_eq!(parse_target(b"\xff\xfe.i2p"), Err(AddrError::BadChar));
        // Injection in front of a b32 suffix is caught the same way.
        let sneaky = format!("a b{}", &GOOD_B32[3..]);
        assert_eq!(parse_target(sneaky.as_bytes()), Err(AddrError::BadChar));
    }

    #[test]
    fn base64_known_vectors() {
        // RFC 4648 section 10 vectors (no `+`/`/` in them).
        let vectors: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, enc) in vectors {
            assert_eq!(b64_encode(raw), enc);
            assert_eq!(b64_decode(enc).unwrap(), raw);
        }
        // Where standard base64 says `+/` (0xfb 0xff -> "+/8="), I2P says `-~`.
        assert_eq!(b64_encode(&[0xfb, 0xff]), "-~8=");
        assert_eq!(b64_decode("-~8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64_encode(&[0xff, 0xff, 0xff]), "~~~~");
        assert_eq!(b64_encode(&[0xf8]), "-A==");
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..300usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let enc = b64_encode(&data);
            assert_eq!(enc.len(), n.div_ceil(3) * 4);
            assert_eq!(b64_decode(&enc).unwrap(), data);
        }
    }

    #[test]
    fn base64_strict_rejects() {
        for bad in [
            "Zg",
            "Zg=",
            "Zm9",
            "Z===",
            "====",
            "Zg==Zg==",
            "Zm=v",
            "Zm9+",
            "Zm9/",
            "Zm 9v",
            "Zm9v\n",
            "Zh==",
            "Zm9=",
            "Zm9v=",
            "\u{e9}AAA",
        ] {
            assert_eq!(b64_decode(bad), None, "{bad}");
        }
    }

    /// A destination with a key certificate: 256 + 128 bytes of keys, then
    /// `05 00 04 00 07 00 00` (KEY cert, length 4, sigtype 7, crypto 0).
    fn test_dest() -> Vec<u8> {
        let mut d: Vec<u8> = (0..384u32).map(|i| (i % 251) as u8).collect();
        d.extend_from_slice(&[0x05, 0x00, 0x04, 0x00, 0x07, 0x00, 0x00]);
        d
    }

    #[test]
    fn public_dest_len_cases() {
        let d = test_dest();
        assert_eq!(d.len(), 391);
        assert_eq!(public_dest_len(&d), Some(391));
        assert_eq!(public_dest_len(&d[..390]), None);
        assert_eq!(public_dest_len(&d[..386]), None);
        assert_eq!(public_dest_len(&[]), None);
        let mut null_cert = d[..384].to_vec();
        null_cert.extend_from_slice(&[0, 0, 0]);
        assert_eq!(public_dest_len(&null_cert), Some(387));
        let mut priv_blob = d.clone();
        priv_blob.extend_from_slice(&[0xaa; 288]);
        assert_eq!(public_dest_len(&priv_blob), Some(391));
    }

    #[test]
    fn b32_of_known_destination() {
        let d = test_dest();
        // Computed once, independently, with:
        // python3 -c 'import hashlib,base64; d=bytes(i%251 for i in range(384))+bytes.fromhex("05000400070000");
        //   print(base64.b32encode(hashlib.sha256(d).digest()).decode().lower().rstrip("=")+".b32.i2p")'
        let expected = "3e3txktgokf6epuw6dqbnkur6piyuei7f4ul6fudn6sbfx7bgcoa.b32.i2p";
        let got = b32_of_dest(&d).unwrap();
        assert_eq!(got, expected);
        // A private-key blob hashes only its public part.
        let mut priv_blob = d.clone();
        priv_blob.extend_from_slice(&[0x55; 288]);
        assert_eq!(b32_of_dest(&priv_blob).unwrap(), expected);
        assert_eq!(b32_of_b64(&b64_encode(&priv_blob)).unwrap(), expected);
        assert_eq!(b32_of_b64("not base64!"), None);
        // And our own parser accepts what we produce.
        assert_eq!(parse_target(got.as_bytes()), Ok(Target::B32(got.clone())));
        assert_eq!(b32_of_dest(&d[..390]), None);
    }
}
