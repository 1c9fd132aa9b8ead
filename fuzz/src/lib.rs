//! Helpers shared by the fuzz targets: how the first bytes of an input pick
//! the sizes of the reads the rest of it arrives in.
//!
//! The codecs promise that the split of a byte stream into reads never
//! changes the outcome; the targets check that by driving the codec once
//! with the whole stream and once with reads sized by the input itself, so
//! libFuzzer can steer the split as well as the bytes. Nothing here checks
//! anything; the targets do.

/// Splits `data` into (read sizes, stream). The header is one byte whose low
/// three bits plus one say how many size bytes follow; each size byte is a
/// read of 1..=256 bytes. Too short for its header: `None`.
pub fn split_reads(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n & 7) + 1;
    if rest.len() < n {
        return None;
    }
    Some(rest.split_at(n))
}

/// Cuts `stream` into reads whose sizes come from `sizes` in turn (a size
/// byte `b` is a read of `b + 1` bytes; the last read may be shorter).
/// Every read is non-empty, as from a socket that is not at EOF.
pub fn reads<'a>(sizes: &[u8], stream: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i % sizes.len().max(1)).map_or(rest.len(), |&b| usize::from(b) + 1);
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
        i += 1;
    }
    out
}
