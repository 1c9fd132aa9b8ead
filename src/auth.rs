//! Access control: the `--auth-file` of SOCKS5 usernames and passwords.
//!
//! Format: one `user:password` per line; the username is everything
//! before the first `:`, the password everything after it (it may hold
//! `:`); blank lines and lines starting with `#` are ignored. Both are at
//! most 255 bytes (RFC 1929's limits). The file is refused when group or
//! others can read it. Checks compare SHA-256 digests of every entry in
//! constant time, so timing tells nothing about which part matched.
//! Passwords are never taken from the command line and never logged.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Larger files are refused.
pub const MAX_AUTH_FILE: u64 = 1024 * 1024;
/// RFC 1929: ULEN and PLEN are one byte.
pub const MAX_FIELD: usize = 255;

/// The loaded credentials, as digests only.
#[derive(Clone)]
pub struct AuthFile {
    entries: Vec<([u8; 32], [u8; 32])>,
}

impl std::fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthFile({} users)", self.entries.len())
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equality that takes the same time wherever the inputs differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthFile {
    /// Parse the file's text. Errors name the line.
    pub fn parse(text: &str) -> Result<AuthFile, String> {
        let mut entries: Vec<([u8; 32], [u8; 32])> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, pass) = line.split_once(':').ok_or(format!("line {n}: expected user:password"))?;
            if user.is_empty() {
                return Err(format!("line {n}: empty username"));
            }
            if user.len() > MAX_FIELD || pass.len() > MAX_FIELD {
                return Err(format!("line {n}: username and password are limited to {MAX_FIELD} bytes"));
            }
            let u = digest(user.as_bytes());
            if entries.iter().any(|(eu, _)| *eu == u) {
                return Err(format!("line {n}: the username appears twice"));
            }
            entries.push((u, digest(pass.as_bytes())));
        }
        if entries.is_empty() {
            return Err("no user:password lines".into());
        }
        Ok(AuthFile { entries })
    }

    /// Load and check permissions.
    pub fn load(path: &Path) -> Result<AuthFile, String> {
        let shown = path.display();
        let meta = fs::metadata(path).map_err(|e| format!("auth file {shown}: {e}"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "auth file {shown} has mode {mode:04o}: it holds passwords and must not be readable by group or others (chmod 600)"
            ));
        }
        if meta.len() > MAX_AUTH_FILE {
            return Err(format!("auth file {shown} is larger than {MAX_AUTH_FILE} bytes"));
        }
        let mut text = String::new();
        fs::File::open(path)
            .and_then(|f| f.take(MAX_AUTH_FILE).read_to_string(&mut text))
            .map_err(|e| format!("auth file {shown}: {e}"))?;
        AuthFile::parse(&text).map_err(|e| format!("auth file {shown}: {e}"))
    }

    /// True if the pair is listed. Looks at every entry whatever matches.
    pub fn check(&self, user: &[u8], pass: &[u8]) -> bool {
        let (u, p) = (digest(user), digest(pass));
        self.entries.iter().fold(false, |ok, (eu, ep)| ok | (ct_eq(eu, &u) & ct_eq(ep, &p)))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_and_check() {
        let a = AuthFile::parse("# apps\napp1:secret\n\napp2:pa:ss\r\nempty:\n").unwrap();
        assert_eq!(a.len(), 3);
        assert!(a.check(b"app1", b"secret"));
        assert!(a.check(b"app2", b"pa:ss"));
        assert!(a.check(b"empty", b""));
        assert!(!a.check(b"app1", b"secreT"));
        assert!(!a.check(b"app1", b""));
        assert!(!a.check(b"app2", b"secret"));
        assert!(!a.check(b"", b""));
        assert!(!a.check(b"nobody", b"secret"));
    }

    #[test]
    fn refusals() {
        for bad in ["", "# only a comment\n", "nocolon\n", ":pw\n", "a:1\na:2\n"] {
            assert!(AuthFile::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}:x\n", "u".repeat(256));
        assert!(AuthFile::parse(&long).is_err());
    }

    #[test]
    fn file_permissions() {
        let dir = std::env::temp_dir().join(format!("i2psocks-auth-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("auth");
        fs::write(&p, "u:p\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(AuthFile::load(&p).unwrap_err().contains("chmod 600"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(AuthFile::load(&p).unwrap().check(b"u", b"p"));
        assert!(AuthFile::load(&dir.join("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
