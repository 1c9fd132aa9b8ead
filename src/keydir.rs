//! `--key-dir`: the directory that keeps the private keys of identities
//! selected by a SOCKS user name, one key file per name, so that a program
//! that sends the same user name gets the same `.b32.i2p` after a restart.
//!
//! A user name comes from the network and reaches the file system only as a
//! safe file name: a name of 1 to [`MAX_PLAIN_NAME`] bytes from
//! `[A-Za-z0-9._@+-]` that neither starts with `.` nor holds `..` is used as
//! it is (`irc` → `irc.dat`); any other name (a `/`, `..`, NUL or another
//! control byte, a space, non-ASCII, too long, empty) becomes
//! [`HASHED_PREFIX`] and the hex SHA-256 of its bytes (`~3f0a….dat`). The
//! prefix is not a plain-name character, so the two forms never meet. The
//! password never takes part.
//!
//! Here: the mapping, the directory's own checks, and reading the keys that
//! exist. The key files themselves (layout, mode, atomic creation) are
//! `keyfile`; which identity uses them is `identity`.

use crate::keyfile::{self, KeyError};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Longest user name used as a file name as it is; longer ones are hashed
/// (a file name must stay well under NAME_MAX, 255 bytes, with the suffix).
pub const MAX_PLAIN_NAME: usize = 64;
/// Every key file in the directory ends so; other files are left alone.
pub const SUFFIX: &str = ".dat";
/// Starts the file name of a user name that is not safe as one.
pub const HASHED_PREFIX: char = '~';
/// Most key files read from the directory at start: as many identities as
/// `--max-sessions` allows at most. More is a configuration to fix.
pub const MAX_KEY_FILES: usize = 1024;

/// Whether `name` may be a file name as it is.
pub fn is_plain(name: &[u8]) -> bool {
    let ok = |b: &u8| b.is_ascii_alphanumeric() || b"._@+-".contains(b);
    !name.is_empty()
        && name.len() <= MAX_PLAIN_NAME
        && name.iter().all(ok)
        && !name.starts_with(b".")
        && !name.windows(2).any(|w| w == b"..")
}

/// The file name's stem (without [`SUFFIX`]) that keeps `user`'s key.
pub fn stem(user: &[u8]) -> String {
    if is_plain(user) {
        return user.iter().map(|&b| char::from(b)).collect();
    }
    let digest = Sha256::digest(user);
    let mut s = String::with_capacity(1 + 2 * digest.len());
    s.push(HASHED_PREFIX);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Where the key of the identity with file stem `stem` lives.
pub fn path(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}{SUFFIX}"))
}

/// Why the directory cannot be used; one line each (exit 78).
#[derive(Debug)]
pub enum DirError {
    Io(PathBuf, io::Error),
    NotADirectory(PathBuf),
    /// Group or others may write: another user could plant a key (and so
    /// choose an address) or remove one.
    Writable(PathBuf, u32),
    /// A key file in it cannot be used.
    Key(KeyError),
    TooMany(PathBuf),
}

impl std::fmt::Display for DirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirError::Io(p, e) => write!(f, "--key-dir {}: {e}", p.display()),
            DirError::NotADirectory(p) => write!(f, "--key-dir {}: not a directory", p.display()),
            DirError::Writable(p, m) => write!(
                f,
                "--key-dir {} has mode {m:04o}: group or others could add or remove keys (chmod 700)",
                p.display()
            ),
            DirError::Key(e) => write!(f, "--key-dir: {e}"),
            DirError::TooMany(p) => {
                write!(f, "--key-dir {}: more than {MAX_KEY_FILES} key files", p.display())
            }
        }
    }
}

/// The directory exists, is ours alone to write, and we can write in it
/// (checked by creating and removing a file of ours, since permissions
/// alone do not say it: root ignores them, a read-only mount does not).
pub fn check(dir: &Path) -> Result<(), DirError> {
    let meta = fs::metadata(dir).map_err(|e| DirError::Io(dir.to_path_buf(), e))?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory(dir.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DirError::Writable(dir.to_path_buf(), mode));
    }
    let probe = dir.join(format!(".i2psocks-probe.{}.tmp", crate::rand::random_id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| DirError::Io(dir.to_path_buf(), e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Every key in the directory, as (stem, private key in I2P base64), sorted
/// by stem. Dot files (temporary files of [`keyfile::create`]) and names
/// without [`SUFFIX`] are not ours and are skipped; a key file that is
/// readable by others or holds no key refuses the whole directory.
pub fn existing(dir: &Path) -> Result<Vec<(String, String)>, DirError> {
    let entries = fs::read_dir(dir).map_err(|e| DirError::Io(dir.to_path_buf(), e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DirError::Io(dir.to_path_buf(), e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if stem.is_empty() || stem.starts_with('.') {
            continue;
        }
        if out.len() == MAX_KEY_FILES {
            return Err(DirError::TooMany(dir.to_path_buf()));
        }
        let p = entry.path();
        // None: removed since the listing, nothing to build.
        if let Some(key) = keyfile::load(&p).map_err(DirError::Key)? {
            out.push((stem.to_string(), key));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("i2psocks-keydir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    /// A key blob as the routers make them (see src/keyfile.rs).
    fn key_blob() -> Vec<u8> {
        let mut b: Vec<u8> = (0..384u32).map(|i| (i * 5) as u8).collect();
        b.extend_from_slice(&[0x05, 0x00, 0x04, 0x00, 0x07, 0x00, 0x04]);
        b.extend([7u8; 64]);
        b
    }

    #[test]
    fn directory_checks() {
        let d = tmpdir("check");
        check(&d).unwrap();
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0, "the probe is removed");
        for mode in [0o770, 0o707, 0o777, 0o1777] {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
            let e = check(&d).unwrap_err();
            assert!(matches!(e, DirError::Writable(_, m) if m == mode), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod 700"));
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
        check(&d).unwrap();
        assert!(matches!(check(&d.join("missing")), Err(DirError::Io(..))));
        fs::write(d.join("f"), b"x").unwrap();
        assert!(matches!(check(&d.join("f")), Err(DirError::NotADirectory(_))));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn existing_keys() {
        let d = tmpdir("existing");
        assert!(existing(&d).unwrap().is_empty());
        let put = |name: &str, data: &[u8], mode: u32| {
            fs::write(d.join(name), data).unwrap();
            fs::set_permissions(d.join(name), fs::Permissions::from_mode(mode)).unwrap();
        };
        put("irc.dat", &key_blob(), 0o600);
        put(&format!("{}.dat", stem(b"a/b")), &key_blob(), 0o400);
        // Not ours: a temporary file, other names, a bare suffix.
        put(".irc.dat.123.tmp", b"partial", 0o600);
        put(".x.dat", b"hidden", 0o644);
        put("notes.txt", b"hello", 0o644);
        put(".dat", b"", 0o644);
        let found = existing(&d).unwrap();
        let stems: Vec<&str> = found.iter().map(|(s, _)| s.as_str()).collect();
        // Sorted by byte: plain names before hashed ones (`~` is 0x7e).
        assert_eq!(stems, ["irc", stem(b"a/b").as_str()]);
        assert_eq!(found[0].1, crate::i2p_addr::b64_encode(&key_blob()));
        put("loose.dat", &key_blob(), 0o640);
        assert!(matches!(existing(&d), Err(DirError::Key(KeyError::Permissions(..)))));
        put("loose.dat", b"not a key", 0o600);
        let e = existing(&d).unwrap_err();
        assert!(matches!(e, DirError::Key(KeyError::Invalid(..))), "{e}");
        assert!(e.to_string().contains("loose.dat"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn plain_names_stay() {
        for n in ["irc", "git-remote", "a", "user@host", "x.y", "A_b+c-9", &"a".repeat(64)] {
            assert_eq!(stem(n.as_bytes()), n, "{n}");
        }
    }

    #[test]
    fn unsafe_names_are_hashed() {
        let long = "a".repeat(65);
        for n in [
            &b""[..],
            b"/etc/passwd",
            b"a/b",
            b"..",
            b"a..b",
            b".hidden",
            b"nul\0byte",
            b"tab\t",
            b"new\nline",
            b"\x7f",
            b"sp ace",
            b"~tilde",
            "caf\u{e9}".as_bytes(),
            long.as_bytes(),
        ] {
            let s = stem(n);
            assert_eq!(s.len(), 65, "{n:?}");
            assert!(s.starts_with(HASHED_PREFIX));
            assert!(s[1..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(!is_plain(n));
        }
        // SHA-256("") is the well-known e3b0c442…
        assert_eq!(
            stem(b""),
            format!("~{}", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_ne!(stem(b"a/b"), stem(b"a/c"));
        assert_eq!(path(Path::new("/k"), &stem(b"irc")), PathBuf::from("/k/irc.dat"));
    }
}
