//! Fuzz target: the SOCKS5 UDP request header (`socks::udp`), which every
//! datagram a client sends to a UDP ASSOCIATE relay starts with.
//!
//! The first two bytes are the payload limit (big endian); the rest is one
//! datagram. Checked: `decode` never panics; what it accepts has RSV and
//! FRAG zero, a known ATYP, a non-empty name, and DATA within the limit,
//! and header plus DATA are the whole input; a domain datagram encodes back
//! to exactly the input; every prefix shorter than the header is
//! `Truncated`, and a longer prefix decodes to the same header with less
//! DATA.

#![no_main]

use i2psocks::socks::udp::{decode, encode_domain, Dst, HeaderError, MAX_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((limit, buf)) = data.split_first_chunk::<2>() else { return };
    let limit = usize::from(u16::from_be_bytes(*limit));
    let Ok(d) = decode(buf, limit) else {
        if let Err(HeaderError::Reserved) = decode(buf, limit) {
            assert!(buf.len() >= 4 && (buf[0] != 0 || buf[1] != 0));
        }
        return;
    };
    assert!(buf.len() >= 4 && buf[..3] == [0, 0, 0]);
    assert!(d.data.len() <= limit);
    let addr_len = match d.dst {
        Dst::Ipv4(_) => 4,
        Dst::Ipv6(_) => 16,
        Dst::Domain(name) => {
            assert!(!name.is_empty() && name.len() <= 255);
            1 + name.len()
        }
    };
    let header = 4 + addr_len + 2;
    assert!(header <= MAX_HEADER);
    assert_eq!(header + d.data.len(), buf.len(), "header and DATA are the whole datagram");
    assert_eq!(u16::from_be_bytes([buf[header - 2], buf[header - 1]]), d.port);
    if let Dst::Domain(name) = d.dst {
        assert_eq!(encode_domain(name, d.port, d.data, limit).as_deref(), Some(buf), "round trip");
    }
    for n in 0..buf.len() {
        match decode(&buf[..n], limit) {
            Ok(p) => {
                assert!(n >= header);
                assert_eq!((&p.dst, p.port), (&d.dst, d.port));
                assert_eq!(p.data, &d.data[..n - header]);
            }
            Err(e) => {
                assert!(n < header, "prefix {n} of an accepted datagram refused: {e:?}");
                assert_eq!(e, HeaderError::Truncated);
            }
        }
    }
});
