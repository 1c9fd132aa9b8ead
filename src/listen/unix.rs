//! A SOCKS listener on a Unix-domain stream socket (`-l unix:/path`): the
//! checks before it is made, binding it with its final mode already set, and
//! removing it at exit. Nothing here speaks SOCKS.
//!
//! Access control is the socket file's mode: on Linux, connecting to a
//! stream socket needs write permission on its file (unix(7)). The mode must
//! be in place before anyone can reach the path, and std binds and listens
//! in one call with no umask or fchmod of its own (and `unsafe`, hence libc,
//! is forbidden here). So the socket is bound inside a fresh directory of
//! mode 0700 next to the final path, given its mode there, and then
//! hard-linked to the final path: link(2) never replaces an existing file,
//! and the socket is reachable at the final path only with its final mode.
//! The private name and directory are removed at once. No window remains:
//! before the link only the owner (and root) can traverse the directory.
//!
//! The parent directory must not be writable by group or others unless it
//! has the sticky bit: whoever can write to it could rename our socket away
//! and put their own in its place, and clients would talk to them. Tor
//! checks only the parent directory too (`check_location_for_unix_socket`)
//! but requires it to be accessible by its user alone, because some systems
//! ignore socket permissions; Linux honours them, so reading the directory
//! is harmless and only replacing the socket must be prevented, which the
//! sticky bit does (as in /tmp). The owner of the directory is not checked:
//! a user other than root can create the socket only where they may write,
//! which the rule above covers.

use crate::rand::random_id;
use std::fs::{self, DirBuilder, Permissions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Longest socket path in bytes: `sun_path` holds 108 bytes on Linux,
/// the terminating NUL included.
pub const MAX_PATH: usize = 107;
/// The private directory's name starts with this (so that one left by a
/// crash is recognisable) ...
const BIND_DIR_PREFIX: &str = ".i2psocks-";
/// ... followed by this many random characters.
const BIND_DIR_RANDOM: usize = 8;
/// The socket's name inside the private directory.
const BIND_NAME: &str = "s";
/// What binding in the private directory adds to the length of the parent
/// directory's path: `/`, the directory's name, `/`, the socket's name.
pub const BIND_DIR_EXTRA: usize = 1 + BIND_DIR_PREFIX.len() + BIND_DIR_RANDOM + 1 + BIND_NAME.len();
/// Tries at a private directory name that is not taken yet.
const BIND_DIR_ATTEMPTS: usize = 4;
/// The default `--unix-mode`: the proxy's own user only.
pub const DEFAULT_MODE: u32 = 0o600;
/// How long a socket already at the path gets to accept our probe before
/// we take it for live (a process too busy to accept still owns it).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a Unix listener cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixError {
    /// The place is unsafe or taken (exit 78: a configuration to fix).
    Refused(String),
    /// The system said no (exit 1, as for a TCP port that cannot be bound).
    Io(String),
}

/// A usage-time check of a socket path, for `--listen`: absolute, with a
/// file name, short enough for `sun_path` also while bound in the private
/// directory.
pub fn check_path(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("unix:{shown}: the socket path must be absolute"));
    }
    let (Some(_), Some(dir)) = (path.file_name(), path.parent()) else {
        return Err(format!("unix:{shown}: the socket path needs a file name"));
    };
    let len = path.as_os_str().len();
    if len > MAX_PATH {
        return Err(format!("unix:{shown}: {len} bytes, longer than a socket path may be ({MAX_PATH})"));
    }
    let dir_len = dir.as_os_str().len();
    if dir_len + BIND_DIR_EXTRA > MAX_PATH {
        return Err(format!(
            "unix:{shown}: its directory is {dir_len} bytes long; at most {} fit (the socket is first bound in a private directory there)",
            MAX_PATH - BIND_DIR_EXTRA
        ));
    }
    Ok(())
}

/// A listening Unix socket at its path, removed when dropped (if the path
/// is still our socket).
#[derive(Debug)]
pub struct UnixSocketFile {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file's identity, to remove only our own at the end.
    dev: u64,
    ino: u64,
}

impl UnixSocketFile {
    /// Check the place, clear a stale socket, bind with `mode`.
    pub fn bind(path: &Path, mode: u32) -> Result<UnixSocketFile, UnixError> {
        let shown = path.display();
        let dir = path.parent().ok_or_else(|| UnixError::Refused(format!("{shown}: no directory")))?;
        check_dir(dir)?;
        clear_stale(path)?;
        let private = private_dir(dir)?;
        let bound = bind_in(&private, path, mode);
        // Whatever happened, the private name and directory go; the socket
        // (if linked) lives on under its final name.
        let _ = fs::remove_file(private.join(BIND_NAME));
        if let Err(e) = fs::remove_dir(&private) {
            log::warn!("cannot remove the private directory {}: {e}", private.display());
        }
        let listener = bound?;
        let meta = fs::symlink_metadata(path).map_err(|e| UnixError::Io(format!("{shown}: {e}")))?;
        Ok(UnixSocketFile { listener, path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() })
    }

    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        // Only our socket: a file someone put there since is not ours to delete.
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            if let Err(e) = fs::remove_file(&self.path) {
                log::warn!("cannot remove the socket {}: {e}", self.path.display());
            }
        }
    }
}

/// The directory must exist and be safe from others replacing our socket.
fn check_dir(dir: &Path) -> Result<(), UnixError> {
    let shown = dir.display();
    let meta = fs::metadata(dir).map_err(|e| UnixError::Refused(format!("directory {shown}: {e}")))?;
    if !meta.is_dir() {
        return Err(UnixError::Refused(format!("{shown} is not a directory")));
    }
    let mode = meta.mode();
    if unsafe_dir_mode(mode) {
        return Err(UnixError::Refused(format!(
            "directory {shown} (mode {:04o}) is writable by group or others without the sticky bit: \
             they could replace the socket; use a directory only its owner can write to",
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Group or others may write, and the sticky bit does not stop them from
/// renaming or removing entries they do not own.
fn unsafe_dir_mode(mode: u32) -> bool {
    mode & 0o022 != 0 && mode & 0o1000 == 0
}

/// Nothing at `path`, or a socket nobody listens on any more (removed now).
fn clear_stale(path: &Path) -> Result<(), UnixError> {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(UnixError::Refused(format!("{shown}: {e}"))),
    };
    if !meta.file_type().is_socket() {
        return Err(UnixError::Refused(format!("{shown} exists and is not a socket; leaving it alone")));
    }
    match probe(path) {
        Some(Ok(())) => Err(UnixError::Refused(format!("another process is listening on {shown}"))),
        Some(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            fs::remove_file(path)
                .map_err(|e| UnixError::Refused(format!("cannot remove the stale socket {shown}: {e}")))?;
            log::info!("removed the stale socket {shown} (nobody listened on it)");
            Ok(())
        }
        Some(Err(e)) => {
            Err(UnixError::Refused(format!("{shown}: a socket is there and cannot be probed: {e}")))
        }
        None => Err(UnixError::Refused(format!(
            "a socket at {shown} does not answer within {} s; another process may be listening on it",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// Connect to the socket at `path` within [`PROBE_TIMEOUT`] (std has no
/// connect timeout for Unix sockets, and a full backlog blocks connect):
/// None when no answer came in time.
fn probe(path: &Path) -> Option<io::Result<()>> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(p).map(drop));
        })
        .map_err(|e| Some(Err(e)));
    if let Err(e) = spawned {
        return e;
    }
    rx.recv_timeout(PROBE_TIMEOUT).ok()
}

/// A fresh directory of mode 0700 in `dir`.
fn private_dir(dir: &Path) -> Result<PathBuf, UnixError> {
    let mut last = None;
    for _ in 0..BIND_DIR_ATTEMPTS {
        let id = random_id();
        let name = format!("{BIND_DIR_PREFIX}{}", id.get(..BIND_DIR_RANDOM).unwrap_or(&id));
        let p = dir.join(name);
        match DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(UnixError::Io(format!("cannot create a directory in {}: {e}", dir.display())))
            }
        }
    }
    Err(UnixError::Io(format!(
        "cannot create a directory in {}: {}",
        dir.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Bind in `private`, set `mode`, link to `path`.
fn bind_in(private: &Path, path: &Path, mode: u32) -> Result<UnixListener, UnixError> {
    let shown = path.display();
    let tmp = private.join(BIND_NAME);
    let io = |e: io::Error| UnixError::Io(format!("cannot listen on unix:{shown}: {e}"));
    let listener = UnixListener::bind(&tmp).map_err(io)?;
    fs::set_permissions(&tmp, Permissions::from_mode(mode)).map_err(io)?;
    fs::hard_link(&tmp, path).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            UnixError::Refused(format!("{shown} appeared while binding; leaving it alone"))
        } else {
            io(e)
        }
    })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("i2psocks-unix-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        DirBuilder::new().mode(0o700).create(&d).unwrap();
        d
    }

    #[test]
    fn paths() {
        assert!(check_path(Path::new("/run/i2psocks/socks")).is_ok());
        assert!(check_path(Path::new("relative/socks")).is_err());
        assert!(check_path(Path::new("/")).is_err());
        let longest = format!("/{}", "a".repeat(MAX_PATH - 1));
        // Fits sun_path, but its directory ("/") leaves room: fine.
        assert!(check_path(Path::new(&longest)).is_ok());
        assert!(check_path(Path::new(&format!("{longest}a"))).is_err());
        let deep = format!("/{}/s", "d".repeat(MAX_PATH - BIND_DIR_EXTRA));
        assert!(check_path(Path::new(&deep)).is_err(), "the private directory would not fit");
        let ok = format!("/{}/s", "d".repeat(MAX_PATH - BIND_DIR_EXTRA - 1));
        assert!(check_path(Path::new(&ok)).is_ok());
    }

    #[test]
    fn dir_modes() {
        assert!(!unsafe_dir_mode(0o40700));
        assert!(!unsafe_dir_mode(0o40755));
        assert!(unsafe_dir_mode(0o40775));
        assert!(unsafe_dir_mode(0o40757));
        assert!(!unsafe_dir_mode(0o41777), "sticky, as /tmp");
    }

    #[test]
    fn bind_sets_mode_and_cleans_up() {
        let d = tmpdir("bind");
        let p = d.join("socks");
        let s = UnixSocketFile::bind(&p, 0o660).unwrap();
        let meta = fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o660);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1, "the private directory is gone");
        let c = UnixStream::connect(&p).unwrap();
        let (_a, _) = s.listener().accept().unwrap();
        drop(c);
        // Taken by us: a second bind is refused, the first keeps its socket.
        assert!(matches!(UnixSocketFile::bind(&p, 0o600), Err(UnixError::Refused(_))));
        assert!(p.exists());
        drop(s);
        assert!(!p.exists(), "removed on drop");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_socket_replaced_foreign_file_kept() {
        let d = tmpdir("stale");
        let p = d.join("socks");
        drop(UnixListener::bind(&p).unwrap());
        assert!(p.exists(), "a socket left behind");
        let s = UnixSocketFile::bind(&p, 0o600).unwrap();
        drop(s);
        fs::write(&p, b"data").unwrap();
        assert!(matches!(UnixSocketFile::bind(&p, 0o600), Err(UnixError::Refused(_))));
        assert_eq!(fs::read(&p).unwrap(), b"data");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn drop_leaves_a_replacement_alone() {
        let d = tmpdir("replaced");
        let p = d.join("socks");
        let s = UnixSocketFile::bind(&p, 0o600).unwrap();
        fs::remove_file(&p).unwrap();
        fs::write(&p, b"someone else's").unwrap();
        drop(s);
        assert_eq!(fs::read(&p).unwrap(), b"someone else's");
        fs::remove_dir_all(&d).unwrap();
    }
}
