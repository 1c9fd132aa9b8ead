//! The SOCKS5 UDP request header (RFC 1928 §7), both ways, as pure
//! functions: `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA`. Every datagram a
//! client sends to a UDP ASSOCIATE relay starts with it, and every datagram
//! delivered back carries one. No sockets here; what a valid target is, is
//! `i2p_addr`'s business, and the size limit is the caller's (it comes
//! from I2P, not from SOCKS).

use crate::socks::{ATYP_DOMAIN, ATYP_IPV4, ATYP_IPV6};

/// RSV(2) FRAG(1) ATYP(1), the fixed start of the header.
const FIXED: usize = 4;
/// The longest header: a 255-byte domain.
pub const MAX_HEADER: usize = FIXED + 1 + 255 + 2;

/// DST.ADDR as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dst<'a> {
    Ipv4([u8; 4]),
    Ipv6([u8; 16]),
    /// 1..=255 raw bytes, not validated.
    Domain(&'a [u8]),
}

/// A decoded SOCKS UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub dst: Dst<'a>,
    pub port: u16,
    pub data: &'a [u8],
}

/// Why a datagram from the client was dropped before its target was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Ends inside the header.
    Truncated,
    /// RSV is not `00 00`.
    Reserved,
    /// FRAG≠0: a fragment (RFC 1928 lets us drop them).
    Fragmented(u8),
    /// ATYP other than 1, 3, 4.
    BadAtyp(u8),
    /// ATYP=3 with length 0.
    EmptyDomain,
    /// DATA longer than the caller's limit.
    TooLarge,
}

/// Decode `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA`.
/// DATA longer than `max_data` is refused.
pub fn decode(buf: &[u8], max_data: usize) -> Result<Datagram<'_>, HeaderError> {
    let (fixed, rest) = split(buf, FIXED)?;
    let &[r0, r1, frag, atyp] = fixed else {
        return Err(HeaderError::Truncated);
    };
    if r0 != 0 || r1 != 0 {
        return Err(HeaderError::Reserved);
    }
    if frag != 0 {
        return Err(HeaderError::Fragmented(frag));
    }
    let (dst, rest) = match atyp {
        ATYP_IPV4 => {
            let (a, rest) = split(rest, 4)?;
            (Dst::Ipv4(a.try_into().map_err(|_| HeaderError::Truncated)?), rest)
        }
        ATYP_IPV6 => {
            let (a, rest) = split(rest, 16)?;
            (Dst::Ipv6(a.try_into().map_err(|_| HeaderError::Truncated)?), rest)
        }
        ATYP_DOMAIN => {
            let (&len, rest) = rest.split_first().ok_or(HeaderError::Truncated)?;
            if len == 0 {
                return Err(HeaderError::EmptyDomain);
            }
            let (name, rest) = split(rest, usize::from(len))?;
            (Dst::Domain(name), rest)
        }
        other => return Err(HeaderError::BadAtyp(other)),
    };
    let (p, data) = split(rest, 2)?;
    let port = match p {
        &[hi, lo] => u16::from_be_bytes([hi, lo]),
        _ => return Err(HeaderError::Truncated),
    };
    if data.len() > max_data {
        return Err(HeaderError::TooLarge);
    }
    Ok(Datagram { dst, port, data })
}

fn split(buf: &[u8], n: usize) -> Result<(&[u8], &[u8]), HeaderError> {
    if buf.len() < n {
        return Err(HeaderError::Truncated);
    }
    Ok(buf.split_at(n))
}

/// `00 00 00 03 LEN host PORT data`; None if `host` is empty or over 255
/// bytes, or `data` longer than `max_data`.
pub fn encode_domain(host: &[u8], port: u16, data: &[u8], max_data: usize) -> Option<Vec<u8>> {
    let len = u8::try_from(host.len()).ok().filter(|&l| l > 0)?;
    if data.len() > max_data {
        return None;
    }
    let mut out = Vec::with_capacity(FIXED + 1 + host.len() + 2 + data.len());
    out.extend_from_slice(&[0, 0, 0, ATYP_DOMAIN, len]);
    out.extend_from_slice(host);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(data);
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    /// The limit the proxy uses (I2P's datagram size); any will do here.
    const MAX_PAYLOAD: usize = 31 * 1024;

    #[test]
    fn decode_domain_and_ips() {
        let d = decode(b"\x00\x00\x00\x03\x07foo.i2p\x00\x35hello", MAX_PAYLOAD).unwrap();
        assert_eq!(d, Datagram { dst: Dst::Domain(b"foo.i2p"), port: 53, data: b"hello" });
        let d = decode(b"\x00\x00\x00\x01\x0a\x00\x00\x01\x01\xbb", MAX_PAYLOAD).unwrap();
        assert_eq!(d, Datagram { dst: Dst::Ipv4([10, 0, 0, 1]), port: 443, data: b"" });
        let mut v6 = b"\x00\x00\x00\x04".to_vec();
        v6.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(b"\xff\xff\x00\n");
        let d = decode(&v6, MAX_PAYLOAD).unwrap();
        assert_eq!(d.port, 65535);
        assert_eq!(d.data, b"\x00\n");
        assert!(matches!(d.dst, Dst::Ipv6(a) if a[0] == 0x20 && a[15] == 1));
        // A 255-byte name, and a payload of exactly MAX_PAYLOAD.
        let mut long = vec![0, 0, 0, 3, 255];
        long.extend_from_slice(&[b'a'; 255]);
        long.extend_from_slice(&[0, 1]);
        long.extend_from_slice(&vec![7u8; MAX_PAYLOAD]);
        let d = decode(&long, MAX_PAYLOAD).unwrap();
        assert_eq!((d.port, d.data.len()), (1, MAX_PAYLOAD));
    }

    #[test]
    fn decode_every_malformed_form() {
        use HeaderError::*;
        let cases: &[(&[u8], HeaderError)] = &[
            (b"", Truncated),
            (b"\x00", Truncated),
            (b"\x00\x00", Truncated),
            (b"\x00\x00\x00", Truncated),
            (b"\x00\x00\x00\x01", Truncated),
            (b"\x00\x00\x00\x01\x7f\x00\x00", Truncated),
            (b"\x00\x00\x00\x01\x7f\x00\x00\x01", Truncated),
            (b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00", Truncated),
            (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", Truncated),
            (b"\x00\x00\x00\x03", Truncated),
            (b"\x00\x00\x00\x03\x07foo.i2", Truncated),
            (b"\x00\x00\x00\x03\x07foo.i2p", Truncated),
            (b"\x00\x00\x00\x03\x07foo.i2p\x00", Truncated),
            (b"\x00\x00\x00\x03\x00\x00\x35", EmptyDomain),
            (b"\x01\x00\x00\x03\x07foo.i2p\x00\x35", Reserved),
            (b"\x00\x01\x00\x03\x07foo.i2p\x00\x35", Reserved),
            (b"\x00\x00\x01\x03\x07foo.i2p\x00\x35", Fragmented(1)),
            (b"\x00\x00\x80\x03\x07foo.i2p\x00\x35", Fragmented(0x80)),
            (b"\x00\x00\xff", Truncated),
            (b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", BadAtyp(0)),
            (b"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00", BadAtyp(2)),
            (b"\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00", BadAtyp(5)),
            (b"\x00\x00\x00\xff\x00\x00\x00\x00\x00\x00", BadAtyp(0xff)),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input, MAX_PAYLOAD), Err(*want), "{input:02x?}");
        }
        let mut big = b"\x00\x00\x00\x03\x07foo.i2p\x00\x35".to_vec();
        big.extend_from_slice(&vec![0u8; MAX_PAYLOAD + 1]);
        assert_eq!(decode(&big, MAX_PAYLOAD), Err(TooLarge));
        // Every prefix of a valid datagram's header is Truncated.
        let full = b"\x00\x00\x00\x03\x07foo.i2p\x00\x35";
        for n in 0..full.len() {
            assert_eq!(decode(&full[..n], MAX_PAYLOAD), Err(Truncated), "prefix {n}");
        }
    }

    #[test]
    fn decode_never_panics() {
        let alphabet = [0u8, 1, 3, 4, 7, 0xff];
        let mut buf = Vec::new();
        for n in 0..=7u32 {
            for mut code in 0..alphabet.len().pow(n) {
                buf.clear();
                for _ in 0..n {
                    buf.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                let _ = decode(&buf, MAX_PAYLOAD);
            }
        }
    }

    #[test]
    fn encode_bytes() {
        assert_eq!(
            encode_domain(b"a.b32.i2p", 0, b"x\x00", MAX_PAYLOAD).unwrap(),
            b"\x00\x00\x00\x03\x09a.b32.i2p\x00\x00x\x00"
        );
        assert_eq!(encode_domain(b"h", 0x1234, b"", MAX_PAYLOAD).unwrap(), b"\x00\x00\x00\x03\x01h\x12\x34");
        assert_eq!(encode_domain(b"", 1, b"x", MAX_PAYLOAD), None);
        assert_eq!(encode_domain(&[b'a'; 256], 1, b"x", MAX_PAYLOAD), None);
        assert!(encode_domain(&[b'a'; 255], 1, b"x", MAX_PAYLOAD).is_some());
        assert_eq!(encode_domain(b"h", 1, &vec![0; MAX_PAYLOAD + 1], MAX_PAYLOAD), None);
        // Round trip.
        let e = encode_domain(b"peer.i2p", 7, b"data", MAX_PAYLOAD).unwrap();
        assert_eq!(
            decode(&e, MAX_PAYLOAD).unwrap(),
            Datagram { dst: Dst::Domain(b"peer.i2p"), port: 7, data: b"data" }
        );
    }
}
