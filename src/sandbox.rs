//! The kernel keeps the proxy's promise: once start-up is done (flags
//! parsed, files read, listeners bound), the process asks for no new
//! privileges and restricts itself with a Landlock ruleset: TCP connect only
//! to the SAM bridge's port, no TCP bind, no file access but the
//! few places later work needs ([`allowed_paths`]), no exec, and (ABI 6) no
//! signals to processes outside the sandbox and no abstract Unix sockets.
//!
//! What to allow ([`plan`]) and the line that says what was applied
//! ([`summary`]) are pure and unit-tested; [`apply`] talks to the kernel
//! through the `landlock` crate (no unsafe code of ours). A ruleset applies
//! to the calling thread and the threads it starts afterwards, so [`apply`]
//! runs before the first thread is started. Not here: UDP, which Landlock
//! does not cover (the proxy sends datagrams only to the bridge's datagram
//! port and to its own clients: `proxy::associate`).
//!
//! Landlock: Documentation/userspace-api/landlock.rst in the kernel tree.

use crate::cli::{Config, Sandbox};
use crate::listen::Endpoint;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the proxy may still do beneath one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Unlink an entry: a Unix listener's socket, removed at exit.
    Remove,
    /// Create a new file, write it, link it to its final name and remove
    /// the temporary name (`keyfile::create`); list the directory to sync it.
    CreateFiles,
    /// [`Access::CreateFiles`], and read the key files already there.
    KeyDir,
}

/// One directory the sandbox leaves open, and why (shown in the info line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub dir: PathBuf,
    pub access: Access,
    pub why: &'static str,
}

/// Everything the ruleset allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The SAM bridge's port: every SAM connection, streams and control.
    /// The only TCP connect: shutdown wakes a TCP accept with an eventfd
    /// (`listen::tcp`), not a connection.
    pub sam_port: u16,
    pub paths: Vec<Allowed>,
}

/// The directories later work needs, from the configuration: the one place
/// to add a path the proxy writes after start-up. `new_keyfile` is the key
/// file still to be created from the first session's key, if any.
pub fn allowed_paths(c: &Config, new_keyfiles: &[&Path]) -> Vec<Allowed> {
    let mut out = Vec::new();
    for ep in &c.listen {
        if let Endpoint::Unix(p) = ep {
            out.push(Allowed { dir: parent(p), access: Access::Remove, why: "Unix socket" });
        }
    }
    for k in new_keyfiles {
        out.push(Allowed { dir: parent(k), access: Access::CreateFiles, why: "new key file" });
    }
    if let Some(dir) = &c.key_dir {
        // A user name's key is read again when its idle identity comes back,
        // and made there on a name's first use.
        out.push(Allowed { dir: dir.clone(), access: Access::KeyDir, why: "--key-dir" });
    }
    out
}

/// The ruleset for `c`.
pub fn plan(c: &Config, new_keyfiles: &[&Path]) -> Plan {
    Plan { sam_port: c.sam.port(), paths: allowed_paths(c, new_keyfiles) }
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Landlock ABI versions at which each part of the ruleset arrived.
const ABI_FS: u8 = 1;
const ABI_NET: u8 = 4;
const ABI_SCOPE: u8 = 6;

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// `--sandbox off`.
    Off,
    /// Built without the `landlock` cargo feature.
    NotBuilt,
    /// Landlock rules are in force, at this ABI; `skipped` lists allowed
    /// directories that could not be opened for a rule (no access there).
    Landlock { abi: u8, no_new_privs: bool, skipped: Vec<PathBuf> },
    /// No Landlock rules: why (the kernel lacks it, or refused the ruleset).
    NotApplied { why: String, no_new_privs: bool },
}

/// The one line logged at start and repeated by the status report.
pub fn summary(plan: &Plan, applied: &Applied) -> String {
    let nnp = |on: bool| if on { "; no new privileges" } else { "" };
    match applied {
        Applied::Off => "sandbox: off (--sandbox off): no Landlock rules".into(),
        Applied::NotBuilt => "sandbox: not built in (cargo feature landlock off)".into(),
        Applied::NotApplied { why, no_new_privs } => {
            format!("sandbox: not applied: {why}{}", nnp(*no_new_privs))
        }
        Applied::Landlock { abi, no_new_privs, skipped } => {
            let mut s = format!("sandbox: Landlock ABI {abi}: ");
            let mut missing = Vec::new();
            if *abi >= ABI_NET {
                let _ = write!(s, "connect only to port {}, no TCP bind, ", plan.sam_port);
            } else {
                missing.push("TCP connect and bind (need ABI 4, Linux 6.7)");
            }
            let open: Vec<String> = plan
                .paths
                .iter()
                .filter(|a| !skipped.contains(&a.dir))
                .map(|a| {
                    let what = match a.access {
                        Access::Remove => "remove",
                        Access::CreateFiles => "create",
                        Access::KeyDir => "read and create",
                    };
                    format!("{what} in {} ({})", a.dir.display(), a.why)
                })
                .collect();
            if open.is_empty() {
                s.push_str("no file access");
            } else {
                let _ = write!(s, "file access only to {}", open.join(", "));
            }
            s.push_str(", no exec");
            if *abi >= ABI_SCOPE {
                s.push_str(", no signals to other processes, no abstract Unix sockets");
            } else {
                missing.push("signals and abstract Unix sockets (need ABI 6, Linux 6.12)");
            }
            s.push_str(nnp(*no_new_privs));
            if !missing.is_empty() {
                let _ = write!(s, "; not restricted: {}", missing.join(", "));
            }
            s
        }
    }
}

/// Restrict the calling thread (and the threads it starts later) to
/// `plan`. `Auto` applies what the kernel supports and says why where it
/// falls short; `Require` fails, with the reason, unless all of it is in
/// force. Never panics: a refusal by the kernel is an [`Applied::NotApplied`]
/// and one warning (by the caller).
pub fn apply(plan: &Plan, mode: Sandbox) -> Result<Applied, String> {
    match mode {
        Sandbox::Off => Ok(Applied::Off),
        Sandbox::Auto | Sandbox::Require => apply_landlock(plan, mode == Sandbox::Require),
    }
}

#[cfg(not(feature = "landlock"))]
fn apply_landlock(_plan: &Plan, required: bool) -> Result<Applied, String> {
    if required {
        return Err("this build has no sandbox (cargo feature landlock off)".into());
    }
    Ok(Applied::NotBuilt)
}

#[cfg(feature = "landlock")]
fn apply_landlock(plan: &Plan, required: bool) -> Result<Applied, String> {
    use landlock::{
        Access as _, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, NetPort, PathBeneath,
        PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };
    // The newest ABI whose rules we use: 6 adds the scopes; 7 only logging.
    const TARGET: ABI = ABI::V6;
    let level = if required { CompatLevel::HardRequirement } else { CompatLevel::BestEffort };
    let fail =
        |e: String| if required { Err(e) } else { Ok(Applied::NotApplied { why: e, no_new_privs: false }) };
    let created = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(TARGET))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create());
    let mut ruleset = match created {
        Ok(r) => r,
        Err(e) => return fail(format!("the kernel refused the Landlock ruleset: {e}")),
    };
    let port = plan.sam_port;
    ruleset = match ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp)) {
        Ok(r) => r,
        Err(e) => return fail(format!("the kernel refused a rule for TCP port {port}: {e}")),
    };
    let mut skipped = Vec::new();
    for a in &plan.paths {
        let access = match a.access {
            Access::Remove => AccessFs::RemoveFile.into(),
            Access::CreateFiles => {
                AccessFs::MakeReg | AccessFs::WriteFile | AccessFs::RemoveFile | AccessFs::ReadDir
            }
            Access::KeyDir => {
                AccessFs::MakeReg
                    | AccessFs::WriteFile
                    | AccessFs::RemoveFile
                    | AccessFs::ReadDir
                    | AccessFs::ReadFile
            }
        };
        let fd = match PathFd::new(&a.dir) {
            Ok(fd) => fd,
            Err(e) if !required => {
                // Without a rule the directory stays closed: what needs it
                // fails later with its own error, as it would without the dir.
                log::warn!("sandbox: no access kept to {} ({}): {e}", a.dir.display(), a.why);
                skipped.push(a.dir.clone());
                continue;
            }
            Err(e) => return Err(format!("cannot open {} ({}): {e}", a.dir.display(), a.why)),
        };
        ruleset = match ruleset.add_rule(PathBeneath::new(fd, access)) {
            Ok(r) => r,
            Err(e) => return fail(format!("the kernel refused a rule for {}: {e}", a.dir.display())),
        };
    }
    let status = match ruleset.restrict_self() {
        Ok(s) => s,
        Err(e) => return fail(format!("the kernel refused to apply the Landlock ruleset: {e}")),
    };
    let nnp = status.no_new_privs;
    match (status.landlock, status.ruleset) {
        (_, RulesetStatus::NotEnforced)
        | (LandlockStatus::NotEnabled | LandlockStatus::NotImplemented, _) => {
            let why = match status.landlock {
                LandlockStatus::NotEnabled => {
                    "Landlock is built into this kernel but not enabled (lsm= boot parameter)"
                }
                LandlockStatus::NotImplemented => {
                    "this kernel has no Landlock (Linux 5.13 and later, CONFIG_SECURITY_LANDLOCK)"
                }
                LandlockStatus::Available { .. } => "the kernel enforces none of the ruleset",
            };
            if required {
                return Err(why.into());
            }
            Ok(Applied::NotApplied { why: why.into(), no_new_privs: nnp })
        }
        (LandlockStatus::Available { effective_abi, .. }, _) => {
            let abi = u8::try_from(effective_abi as i32).unwrap_or(0).max(ABI_FS);
            if required && (abi < ABI_SCOPE || !nnp) {
                // HardRequirement refuses earlier; this is the belt to its braces.
                return Err(format!(
                    "Landlock ABI {abi} cannot apply the whole ruleset (needs ABI {ABI_SCOPE})"
                ));
            }
            Ok(Applied::Landlock { abi, no_new_privs: nnp, skipped })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use crate::cli::{self, Command};

    fn config(args: &[&str]) -> Config {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match cli::parse(&args).unwrap() {
            Command::Run(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_from_config() {
        let c = config(&["-s", "127.0.0.1:7656", "-l", "unix:/run/i2psocks/socks", "-l", "127.0.0.1:0"]);
        let p = plan(&c, &[Path::new("/var/lib/i2psocks/key")]);
        assert_eq!(p.sam_port, 7656);
        assert_eq!(
            p.paths,
            [
                Allowed { dir: "/run/i2psocks".into(), access: Access::Remove, why: "Unix socket" },
                Allowed { dir: "/var/lib/i2psocks".into(), access: Access::CreateFiles, why: "new key file" },
            ]
        );
        // A key file that exists is only read, at start: nothing to allow.
        let c = config(&["-k", "key"]);
        assert_eq!(plan(&c, &[]).paths, []);
        assert_eq!(allowed_paths(&c, &[Path::new("key")])[0].dir, Path::new("."));
    }

    #[test]
    fn summary_lines() {
        let bare = Plan { sam_port: 7656, paths: vec![] };
        let full = Applied::Landlock { abi: 7, no_new_privs: true, skipped: vec![] };
        assert_eq!(
            summary(&bare, &full),
            "sandbox: Landlock ABI 7: connect only to port 7656, no TCP bind, no file access, no exec, \
             no signals to other processes, no abstract Unix sockets; no new privileges"
        );
        let c = config(&["-s", "127.0.0.1:7656", "-l", "unix:/run/i2psocks/socks", "-l", "127.0.0.1:0"]);
        let p = plan(&c, &[Path::new("/var/lib/i2psocks/key")]);
        assert_eq!(
            summary(&p, &full),
            "sandbox: Landlock ABI 7: connect only to port 7656, no TCP bind, file access only to remove \
             in /run/i2psocks (Unix socket), create in /var/lib/i2psocks (new key file), no exec, no signals \
             to other processes, no abstract Unix sockets; no new privileges"
        );
        let skipped = Applied::Landlock { abi: 6, no_new_privs: true, skipped: vec!["/run/i2psocks".into()] };
        assert!(summary(&p, &skipped)
            .contains("file access only to create in /var/lib/i2psocks (new key file), no exec"));
        let old = Applied::Landlock { abi: 3, no_new_privs: true, skipped: vec![] };
        assert_eq!(
            summary(&bare, &old),
            "sandbox: Landlock ABI 3: no file access, no exec; no new privileges; not restricted: \
             TCP connect and bind (need ABI 4, Linux 6.7), signals and abstract Unix sockets \
             (need ABI 6, Linux 6.12)"
        );
        let v5 = Applied::Landlock { abi: 5, no_new_privs: false, skipped: vec![] };
        assert!(summary(&bare, &v5).ends_with(
            "no TCP bind, no file access, no exec; not restricted: signals and abstract Unix sockets (need ABI 6, Linux 6.12)"
        ));
        assert_eq!(summary(&bare, &Applied::Off), "sandbox: off (--sandbox off): no Landlock rules");
        assert_eq!(
            summary(&bare, &Applied::NotApplied { why: "no Landlock".into(), no_new_privs: true }),
            "sandbox: not applied: no Landlock; no new privileges"
        );
        assert_eq!(summary(&bare, &Applied::NotBuilt), "sandbox: not built in (cargo feature landlock off)");
    }
}
