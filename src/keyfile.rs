//! The persistent identity: a private-key file created once and reused,
//! so the proxy's `.b32.i2p` address survives restarts.
//!
//! The file holds the binary private-key blob exactly as SAM returns it
//! (I2P base64-decoded), which is also the layout of i2pd's `*.dat` key
//! files: public destination, encryption private key, signing private key.
//! It is written once, atomically (a temporary file in the same directory,
//! fsync, then a hard link that fails rather than overwrite anything), with
//! mode 0600, and refused at load when group or others can read it. Its
//! contents are never logged.

use crate::i2p_addr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Larger files are refused unread (a destination with its keys is < 1 KiB).
pub const MAX_KEYFILE: u64 = 4096;

/// Why a key file cannot be used; every variant is a one-line message.
#[derive(Debug)]
pub enum KeyError {
    Io(PathBuf, io::Error),
    Permissions(PathBuf, u32),
    Invalid(PathBuf, &'static str),
    Exists(PathBuf),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Io(p, e) => write!(f, "key file {}: {e}", p.display()),
            KeyError::Permissions(p, m) => write!(
                f,
                "key file {} has mode {m:04o}: it holds a private key and must not be readable by group or others (chmod 600)",
                p.display()
            ),
            KeyError::Invalid(p, why) => write!(f, "key file {} is not an I2P private key: {why}", p.display()),
            KeyError::Exists(p) => write!(f, "key file {} appeared while creating it; not overwritten", p.display()),
        }
    }
}

/// Length of a signing private key by signature type, for the types
/// routers generate.
fn signing_private_len(sigtype: u16) -> Option<usize> {
    match sigtype {
        0 => Some(20),          // DSA_SHA1
        1 => Some(32),          // ECDSA_SHA256_P256
        2 => Some(48),          // ECDSA_SHA384_P384
        3 => Some(66),          // ECDSA_SHA512_P521
        7 | 8 | 11 => Some(32), // EdDSA_SHA512_Ed25519, Ed25519ph, RedDSA
        _ => None,
    }
}

/// Check that `blob` is a whole private-key blob; returns its `.b32.i2p`.
pub fn validate(blob: &[u8]) -> Result<String, &'static str> {
    let pub_len = i2p_addr::public_dest_len(blob).ok_or("too short for a destination")?;
    // Certificate at 384: type, length, then (key certificate) sig type and crypto type.
    let cert_type = *blob.get(384).ok_or("too short")?;
    let word = |at: usize| {
        blob.get(at..at + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)
            .ok_or("truncated key certificate")
    };
    let (sigtype, crypto) = match cert_type {
        0 => (0u16, 0u16),
        5 => (word(387)?, word(389)?),
        _ => return Err("unsupported certificate type"),
    };
    let sig_len = signing_private_len(sigtype).ok_or("unsupported signature type")?;
    // i2pd always stores a 256-byte encryption key field; Java stores the
    // crypto type's own length (32 for X25519).
    let enc_lens: &[usize] = match crypto {
        0 => &[256],
        4 => &[32, 256],
        _ => return Err("unsupported encryption type"),
    };
    if !enc_lens.iter().any(|e| blob.len() == pub_len + e + sig_len) {
        return Err("wrong length for its key types");
    }
    i2p_addr::b32_of_dest(blob).ok_or("unreadable destination")
}

/// Load the key as I2P base64, or `None` when the file does not exist.
pub fn load(path: &Path) -> Result<Option<String>, KeyError> {
    let err = |e| KeyError::Io(path.to_path_buf(), e);
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions(path.to_path_buf(), mode));
    }
    if !meta.is_file() {
        return Err(KeyError::Invalid(path.to_path_buf(), "not a regular file"));
    }
    if meta.len() > MAX_KEYFILE {
        return Err(KeyError::Invalid(path.to_path_buf(), "too large"));
    }
    let mut blob = Vec::new();
    File::open(path).and_then(|f| f.take(MAX_KEYFILE).read_to_end(&mut blob)).map_err(err)?;
    validate(&blob).map_err(|why| KeyError::Invalid(path.to_path_buf(), why))?;
    Ok(Some(i2p_addr::b64_encode(&blob)))
}

/// Write a new key file from the private key in I2P base64. Never
/// replaces an existing file.
pub fn create(path: &Path, private_b64: &str) -> Result<(), KeyError> {
    let p = || path.to_path_buf();
    let blob = i2p_addr::b64_decode(private_b64).ok_or(KeyError::Invalid(p(), "not base64"))?;
    validate(&blob).map_err(|why| KeyError::Invalid(p(), why))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or(KeyError::Invalid(p(), "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&blob)?;
        f.sync_all()?;
        // A link, unlike rename, fails if the name exists: never overwrite.
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyError::Exists(p())),
        Err(e) => Err(KeyError::Io(p(), e)),
    }
}
