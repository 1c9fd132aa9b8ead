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
    // The key certificate's payload is sig type, crypto type, then any
    // excess key bytes; a NULL certificate has none.
    let cert_len = pub_len - i2p_addr::DEST_FIXED_LEN;
    let (sigtype, crypto) = match cert_type {
        0 if cert_len == 0 => (0u16, 0u16),
        5 if cert_len >= 4 => (word(387)?, word(389)?),
        0 | 5 => return Err("malformed certificate"),
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
    // A random name, so a leftover of an earlier crash is neither in the
    // way nor ours to delete.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", crate::rand::random_id()));
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| KeyError::Io(tmp.clone(), e))?;
    let result = f.write_all(&blob).and_then(|()| f.sync_all()).and_then(|()| {
        // A link, unlike rename, fails if the name exists: never overwrite.
        fs::hard_link(&tmp, path)
    });
    drop(f);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    /// A private-key blob shaped like the routers': 256-byte encryption
    /// public key, 128-byte signing field, key certificate (sig type 7,
    /// crypto `crypto`), then the encryption and signing private keys.
    fn blob(crypto: u16, enc_private_len: usize) -> Vec<u8> {
        let mut b: Vec<u8> = (0..384u32).map(|i| (i * 7 + 3) as u8).collect();
        b.extend_from_slice(&[0x05, 0x00, 0x04, 0x00, 0x07]);
        b.extend_from_slice(&crypto.to_be_bytes());
        b.extend((0..enc_private_len + 32).map(|i| (i * 13) as u8));
        b
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("i2psocks-keyfile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn validate_good_blobs() {
        for (crypto, enc) in [(0, 256), (4, 32), (4, 256)] {
            let b = blob(crypto, enc);
            assert_eq!(validate(&b).unwrap(), i2p_addr::b32_of_dest(&b).unwrap());
        }
        // The b32 hashes the public part only.
        let mut b = blob(0, 256);
        let before = validate(&b).unwrap();
        *b.last_mut().unwrap() ^= 0xff;
        assert_eq!(validate(&b).unwrap(), before);
        // DSA_SHA1 with a NULL certificate: 387 + 256 + 20.
        let mut dsa: Vec<u8> = vec![0x42; 384];
        dsa.extend_from_slice(&[0, 0, 0]);
        dsa.extend_from_slice(&[0x11; 276]);
        assert!(validate(&dsa).is_ok());
    }

    #[test]
    fn validate_bad_blobs() {
        let good = blob(0, 256);
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("short", good[..300].to_vec()),
            ("public part only", good[..391].to_vec()),
            ("one byte short", good[..good.len() - 1].to_vec()),
            ("one byte long", [good.clone(), vec![0]].concat()),
            ("crypto 4 with a 100-byte key", blob(4, 100)),
            ("random", (0..679u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
        ];
        let mut hidden = good.clone();
        hidden[384] = 1; // HIDDEN certificate
        cases.push(("cert type 1", hidden));
        let mut sig = good.clone();
        sig[388] = 99;
        cases.push(("sig type 99", sig));
        let mut crypto = good.clone();
        crypto[390] = 9;
        cases.push(("crypto type 9", crypto));
        let mut short_cert = good.clone();
        short_cert[386] = 2; // KEY certificate of 2 bytes
        cases.push(("key cert too short", short_cert));
        let mut null_with_payload = good.clone();
        null_with_payload[384] = 0; // NULL certificate that claims 4 bytes
        cases.push(("null cert with payload", null_with_payload));
        for (what, b) in cases {
            assert!(validate(&b).is_err(), "{what} accepted");
        }
    }

    #[test]
    fn create_then_load() {
        let d = tmpdir("create");
        let p = d.join("key.dat");
        let b = blob(0, 256);
        let b64 = i2p_addr::b64_encode(&b);
        assert!(load(&p).unwrap().is_none());
        create(&p, &b64).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&p).unwrap(), b, "the file holds the binary blob");
        assert_eq!(load(&p).unwrap().unwrap(), b64);
        // Only the key file is left: no temporary file.
        let names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.dat")]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_never_overwrites() {
        let d = tmpdir("overwrite");
        let p = d.join("key.dat");
        let first = blob(0, 256);
        create(&p, &i2p_addr::b64_encode(&first)).unwrap();
        let second = i2p_addr::b64_encode(&blob(4, 32));
        assert!(matches!(create(&p, &second), Err(KeyError::Exists(_))));
        assert_eq!(fs::read(&p).unwrap(), first);
        // Not even a file that is no key at all.
        let other = d.join("other");
        fs::write(&other, b"not a key").unwrap();
        assert!(matches!(create(&other, &second), Err(KeyError::Exists(_))));
        assert_eq!(fs::read(&other).unwrap(), b"not a key");
        // A leftover temporary file of an earlier run is not in the way.
        fs::write(d.join(".new.tmp"), b"x").unwrap();
        create(&d.join("new"), &second).unwrap();
        assert_eq!(fs::read(d.join(".new.tmp")).unwrap(), b"x");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_refuses_invalid_keys() {
        let d = tmpdir("invalid");
        let p = d.join("key.dat");
        assert!(matches!(create(&p, "not base64!"), Err(KeyError::Invalid(..))));
        assert!(matches!(create(&p, &i2p_addr::b64_encode(&[1, 2, 3])), Err(KeyError::Invalid(..))));
        assert!(!p.exists());
        assert!(matches!(
            create(&d.join("missing/key"), &i2p_addr::b64_encode(&blob(0, 256))),
            Err(KeyError::Io(..))
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn load_refusals() {
        let d = tmpdir("load");
        let p = d.join("key.dat");
        let b = blob(0, 256);
        fs::write(&p, &b).unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660, 0o602] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            let e = load(&p).unwrap_err();
            assert!(matches!(e, KeyError::Permissions(_, m) if m == mode), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod 600"));
        }
        for mode in [0o600, 0o400] {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            assert!(load(&p).unwrap().is_some(), "{mode:o}");
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        for bad in [&b[..b.len() - 10], &[][..], &b"hello"[..], &[0u8; 5000][..]] {
            fs::write(&p, bad).unwrap();
            let e = load(&p).unwrap_err();
            assert!(matches!(e, KeyError::Invalid(..)), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
        let sub = d.join("dir");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(load(&sub), Err(KeyError::Invalid(..))));
        fs::remove_dir_all(&d).unwrap();
    }
}
