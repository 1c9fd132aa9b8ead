//! I2P names and destinations for the tests, and SAM parameter lookup: I2P base64, the
//! public destination at the start of a key blob, `.b32.i2p` addresses, made-up but
//! structurally valid destinations and private keys, and `KEY=VALUE` words of SAM lines.
//!
//! Written here from the I2P specifications, never with the proxy's own code, so the tests
//! check the proxy against the specs. Not a parser for untrusted input: the lookups take
//! the first match and leave quoting aside (SAM values the tests read have no spaces).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use sha2::{Digest, Sha256};

/// I2P base64: the standard alphabet with `-` and `~` for `+` and `/`.
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-~";

/// Bytes of a public destination before its certificate: 256-byte encryption key,
/// 128-byte signing key field, certificate type and length.
const DEST_HEAD: usize = 387;

/// Length of the public part of [`make_key`]'s blobs (a 7-byte key certificate).
pub const PUBLIC_LEN: usize = 256 + 128 + 7;

/// I2P base64 of `data`, `=` padded.
pub fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes padded I2P base64; None if the length is not a multiple of 4, there is more
/// than two `=`, or a character is outside the alphabet.
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 != 0 {
        return None;
    }
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return None;
    }
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::with_capacity(s.len() / 4 * 3));
    for c in body.bytes() {
        bits = (bits << 6) | B64.iter().position(|&a| a == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

/// Length of the public destination at the start of a destination or key blob (387 + the
/// big-endian certificate length at offset 385), if the blob holds it all.
pub fn public_len(blob: &[u8]) -> Option<usize> {
    let cert = usize::from(u16::from_be_bytes([*blob.get(385)?, *blob.get(386)?]));
    (blob.len() >= DEST_HEAD + cert).then_some(DEST_HEAD + cert)
}

/// The public destination a key blob starts with, in I2P base64.
pub fn public_b64(key: &[u8]) -> String {
    let n = public_len(key).expect("a key with a whole public destination");
    b64_encode(&key[..n])
}

/// `<base32 lowercase, no padding, of sha256(public_dest)>.b32.i2p`.
pub fn b32_of(public_dest: &[u8]) -> String {
    let digest = Sha256::digest(public_dest);
    format!("{}.b32.i2p", base32::encode(base32::Alphabet::Rfc4648Lower { padding: false }, &digest))
}

/// The `.b32.i2p` of the destination a blob starts with (a public destination, a private
/// key as SAM returns it, an i2pd key file); None if the blob is too short.
pub fn b32_of_blob(blob: &[u8]) -> Option<String> {
    Some(b32_of(blob.get(..public_len(blob)?)?))
}

/// A b32 address for tests derived from `seed` (well-formed, not a real destination).
pub fn b32_name(seed: &str) -> String {
    b32_of(seed.as_bytes())
}

/// A public destination for tests: (I2P base64, its b32). Key number `n` of [`make_key`],
/// public part only.
pub fn make_dest(n: u64) -> (String, String) {
    let blob = public_blob(n);
    (b64_encode(&blob), b32_of(&blob))
}

/// A structurally valid private-key blob for key number `n`: 256-byte ElGamal public key,
/// 128-byte signing field (Ed25519 key in its last 32 bytes), key certificate
/// `05 00 04 00 07 00 00` (sig type 7, crypto 0), then 256 + 32 private bytes. Returns
/// (I2P base64, b32 of the public part).
pub fn make_key(n: u64) -> (String, String) {
    let mut blob = public_blob(n);
    let b32 = b32_of(&blob);
    for i in 0..(256 + 32) {
        blob.push((i as u64).wrapping_mul(7).wrapping_add(n) as u8);
    }
    (b64_encode(&blob), b32)
}

/// The public destination of key number `n` (see [`make_key`]).
fn public_blob(n: u64) -> Vec<u8> {
    let mut blob = Vec::with_capacity(PUBLIC_LEN + 256 + 32);
    let mut block = 0u64;
    while blob.len() < 256 + 128 {
        let mut h = Sha256::new();
        h.update(b"fake_sam key");
        h.update(n.to_be_bytes());
        h.update(block.to_be_bytes());
        blob.extend_from_slice(&h.finalize());
        block += 1;
    }
    blob.truncate(256 + 128);
    blob.extend_from_slice(&[0x05, 0x00, 0x04, 0x00, 0x07, 0x00, 0x00]);
    blob
}

/// The value of the first `key=` word of a SAM line (a command or a reply).
pub fn param<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ').find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Every word of a SAM line after its two command words, in order, split at its first `=`
/// (a word without one has an empty value), so a test can compare the whole set.
pub fn params(line: &str) -> Vec<(&str, &str)> {
    line.split(' ').skip(2).map(|w| w.split_once('=').unwrap_or((w, ""))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64_matches_rfc4648_with_i2p_alphabet() {
        assert_eq!(b64_encode(b""), "");
        assert_eq!(b64_encode(b"f"), "Zg==");
        assert_eq!(b64_encode(b"fo"), "Zm8=");
        assert_eq!(b64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64_encode(&[0xfb, 0xff]), "-~8=");
        for data in [&b""[..], b"f", b"fo", b"foo", b"foobar", &[0xfb, 0xff]] {
            assert_eq!(b64_decode(&b64_encode(data)).unwrap(), data);
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(b64_decode(&b64_encode(&all)).unwrap(), all);
        assert!(b64_decode("Zg=").is_none());
        assert!(b64_decode("Z+8=").is_none());
    }

    #[test]
    fn made_up_keys_are_consistent() {
        let (key, b32) = make_key(7);
        let blob = b64_decode(&key).unwrap();
        assert_eq!(public_len(&blob), Some(PUBLIC_LEN));
        assert_eq!(b32_of(&blob[..PUBLIC_LEN]), b32);
        assert_eq!(b32_of_blob(&blob), Some(b32.clone()));
        assert_eq!(make_dest(7), (b64_encode(&blob[..PUBLIC_LEN]), b32));
        assert_eq!(b32_of_blob(&blob[..PUBLIC_LEN - 1]), None);
    }

    /// A known answer: the fixture key and the address the router gave it (tests/fixtures/README).
    #[test]
    fn b32_of_fixture_key() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/site.dat");
        let key = std::fs::read(&path).unwrap();
        assert_eq!(public_len(&key), Some(391));
        assert_eq!(
            b32_of_blob(&key).as_deref(),
            Some("fg3kfzacq4hbmewlxs4iczdupwtes65cby2sqok5lz7h7i2mau4a.b32.i2p")
        );
    }

    #[test]
    fn sam_words() {
        let l = "NAMING REPLY RESULT=OK NAME=a.i2p VALUE=abc=";
        assert_eq!(param(l, "VALUE"), Some("abc="));
        assert_eq!(param(l, "NAME"), Some("a.i2p"));
        assert_eq!(param(l, "X"), None);
        assert_eq!(params(l), vec![("RESULT", "OK"), ("NAME", "a.i2p"), ("VALUE", "abc=")]);
        assert_eq!(params("STREAM CONNECT ID=x BARE"), vec![("ID", "x"), ("BARE", "")]);
    }
}
