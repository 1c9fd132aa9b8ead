//! Fuzz target: what the router forwards to a datagram session's UDP port
//! (`sam::datagram::parse_forwarded`): `<sender base64>[ FROM_PORT=n
//! TO_PORT=n]\n` then the payload, from i2pd's bare form to SAM 3.2's.
//!
//! Checked: no panic; an accepted datagram's sender is a base64
//! destination whose `.b32.i2p` is the one reported (and a valid b32
//! target), the header ends at the first `\n`, which comes within
//! `MAX_FORWARD_HEADER` bytes, and the payload is everything after it; a
//! refusal says why truthfully (no `\n` at all, or none in time).

#![no_main]

use i2psocks::i2p_addr::{b32_of_b64, parse_target, Target};
use i2psocks::sam::datagram::{parse_forwarded, ForwardError, MAX_FORWARD_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|buf: &[u8]| {
    let nl = buf.iter().position(|&b| b == b'\n');
    match parse_forwarded(buf) {
        Ok(f) => {
            let nl = nl.expect("accepted without a header line");
            assert!(nl <= MAX_FORWARD_HEADER);
            assert_eq!(f.payload, &buf[nl + 1..]);
            assert_eq!(b32_of_b64(f.dest).as_deref(), Some(f.b32.as_str()));
            assert!(matches!(parse_target(f.b32.as_bytes()), Ok(Target::B32(_))), "{}", f.b32);
            let header = &buf[..nl];
            assert!(header.windows(f.dest.len()).any(|w| w == f.dest.as_bytes()));
        }
        Err(ForwardError::NoHeader) => assert!(nl.is_none() && buf.len() <= MAX_FORWARD_HEADER),
        Err(ForwardError::HeaderTooLong) => {
            assert!(nl.map_or(true, |n| n > MAX_FORWARD_HEADER) && buf.len() > MAX_FORWARD_HEADER)
        }
        Err(ForwardError::BadHeader | ForwardError::BadDestination) => {
            assert!(nl.is_some_and(|n| n <= MAX_FORWARD_HEADER))
        }
    }
});
