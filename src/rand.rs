//! Random bytes and random names, for SAM session nicknames and temporary
//! file names: things that must be unique, not secret. Keys are made by the
//! router, never here.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// Length of [`random_id`]'s names.
pub const ID_LEN: usize = 16;

/// [`ID_LEN`] random `[A-Za-z0-9]`: a SAM session nickname (unique on the
/// bridge; i2pd forbids `<>"'/` in it) or a temporary file name.
pub fn random_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = random_bytes::<ID_LEN>();
    bytes
        .iter()
        .map(|b| char::from(ALPHABET.get(usize::from(*b) % ALPHABET.len()).copied().unwrap_or(b'x')))
        .collect()
}

/// Random bytes from the kernel; if that fails, a hash of time, pid and a
/// counter (the names made from them must be unique, not secret).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; N];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut out)).is_ok() {
        return out;
    }
    use sha2::{Digest, Sha256};
    let mut seed = Vec::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    seed.extend_from_slice(&now.as_nanos().to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut block = Sha256::digest(&seed);
    for (i, b) in out.iter_mut().enumerate() {
        if i > 0 && i % 32 == 0 {
            block = Sha256::digest(block);
        }
        *b = block.get(i % 32).copied().unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_alnum_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), ID_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
