//! I2P target validation, I2P base64, and b32 addresses of destinations.
//! INTERFACE STUB.

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
pub fn parse_target(host: &[u8]) -> Result<Target, AddrError> {
    let _ = host;
    Err(AddrError::NotI2p)
}

/// Decode I2P base64 (`-` for `+`, `~` for `/`, `=` padded).
pub fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let _ = s;
    None
}

/// Encode I2P base64 with padding.
pub fn b64_encode(data: &[u8]) -> String {
    let _ = data;
    String::new()
}

/// Length of the public destination at the start of `blob` (387 + certlen),
/// if the blob is long enough.
pub fn public_dest_len(blob: &[u8]) -> Option<usize> {
    let _ = blob;
    None
}

/// `<base32(sha256(public dest))>.b32.i2p` for a binary destination or a
/// private-key blob (only its public part is hashed).
pub fn b32_of_dest(blob: &[u8]) -> Option<String> {
    let _ = blob;
    None
}
