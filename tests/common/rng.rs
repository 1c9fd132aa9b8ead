//! The one source of test data: a seeded xorshift64 generator, for payloads, for what the
//! test servers send ([`pattern`]) and for random chunk and read sizes.
//!
//! Deterministic, so a failure repeats; the same seed gives the same bytes in every test
//! binary and in the bench. Its period (2^64 - 1) has no short cycle, so a lost, doubled or
//! reordered piece of a stream shows, and streams with different seeds differ. Not for
//! anything secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::io;

/// Seed of [`pattern`].
const PATTERN_SEED: u64 = 0x1295_50c5;
/// Pieces [`for_each_pattern_chunk`] hands out.
const CHUNK: usize = 64 << 10;

/// A xorshift64 generator (Marsaglia 2003: shifts 13, 7, 17).
pub struct Rng(u64);

impl Rng {
    /// The generator for `seed`. The state is odd, never the all-zero one xorshift cannot
    /// leave, and different for every seed below 2^63.
    pub fn new(seed: u64) -> Rng {
        Rng(seed << 1 | 1)
    }

    fn step(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0; the slight modulo bias does not matter here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.step() % n as u64) as usize
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = (self.step() >> 24) as u8;
        }
    }

    /// The next `n` bytes of the stream.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// `n` bytes for a payload; a different `seed` gives different bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(n)
}

/// The first `n` bytes of the stream the test servers send (a fake bridge's Source peer,
/// the HTTP site's `/bytes/<n>`): one fixed stream, so a shorter one is a prefix of a
/// longer one and a cut transfer can be checked as far as it got.
pub fn pattern(n: usize) -> Vec<u8> {
    Rng::new(PATTERN_SEED).bytes(n)
}

/// [`pattern`]`(n)` handed to `f` in pieces, without holding it all (the site serves up to
/// 256 MiB).
pub fn for_each_pattern_chunk(n: usize, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut rng = Rng::new(PATTERN_SEED);
    let mut buf = vec![0u8; CHUNK.min(n)];
    let mut left = n;
    while left > 0 {
        let chunk = &mut buf[..CHUNK.min(left)];
        rng.fill(chunk);
        f(chunk)?;
        left -= chunk.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_streams_and_seeds_differ() {
        let whole = pattern(200_000);
        let mut pieces = Vec::new();
        for_each_pattern_chunk(200_000, |c| {
            pieces.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(pieces, whole);
        assert_eq!(pattern(1000), whole[..1000]);
        assert_ne!(random_bytes(1000, 2), random_bytes(1000, 3));
        let mut r = Rng::new(0);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
