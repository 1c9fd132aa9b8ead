//! Packaging checks: `make install` / `make uninstall` into a DESTDIR, the man page against
//! `i2psocks -h` (SYNOPSIS is the usage line; every flag is documented with its default),
//! the `--check` exit codes an init script's configtest relies on (0 bridge ok, 64
//! usage, 69 bridge unavailable, 78 unusable auth or key file), and the service files:
//! the systemd unit passes `systemd-analyze verify` and its offline security rating.
//!
//! Runs the binary cargo built for the tests (`make install BIN=…`, so no release build is
//! needed) and `make`, `mandoc` and `systemd-analyze` from the system (tests/deps.sh
//! installs them). Never touches anything outside its temporary directories, and never
//! starts a service.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Script};
use common::proxy::bin;
use common::TempDir;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const MAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/i2psocks.8");
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/systemd/i2psocks.service");
const OPENRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/openrc/i2psocks");
/// Where `make install` puts the page under a manual directory (MANDIR, or PREFIX's
/// share/man), and where man(1) looks for it there: section 8.
const MAN_IN_MANDIR: &str = "man8/i2psocks.8";
/// The most `systemd-analyze security --offline=true` may rate the unit (0 = fully
/// confined, 10 = not at all). What is left open: the host's network (IP to loopback
/// only) and AF_INET/AF_INET6/AF_UNIX sockets, which a proxy needs.
const MAX_EXPOSURE: f64 = 1.0;

fn make(args: &[&str]) -> Output {
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

#[test]
fn destdir_install_and_uninstall() {
    let t = TempDir::new("install-destdir");
    let dest = format!("DESTDIR={}", t.0.display());
    let binv = format!("BIN={}", bin());
    make(&["install", &dest, "PREFIX=/usr", &binv]);
    let b = t.0.join("usr/bin/i2psocks");
    let m = t.0.join("usr/share/man").join(MAN_IN_MANDIR);
    assert_eq!(mode(&b), 0o755, "{}", b.display());
    assert_eq!(mode(&m), 0o644, "{}", m.display());
    assert_eq!(std::fs::read(&b).unwrap(), std::fs::read(bin()).unwrap());
    assert_eq!(std::fs::read(&m).unwrap(), std::fs::read(MAN).unwrap());
    let v = Command::new(&b).arg("-V").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("i2psocks {}", env!("CARGO_PKG_VERSION")));
    // The service files, pointing at the installed binary.
    let u = t.0.join("usr/lib/systemd/system/i2psocks.service");
    let r = t.0.join("etc/init.d/i2psocks");
    assert_eq!(mode(&u), 0o644, "{}", u.display());
    assert_eq!(mode(&r), 0o755, "{}", r.display());
    assert_eq!(std::fs::read_to_string(&u).unwrap(), with_bindir(UNIT, "/usr/bin"));
    assert_eq!(std::fs::read_to_string(&r).unwrap(), with_bindir(OPENRC, "/usr/bin"));
    assert!(std::fs::read_to_string(&u).unwrap().contains("\nExecStart=/usr/bin/i2psocks "));

    make(&["uninstall", &dest, "PREFIX=/usr"]);
    assert!(!b.exists() && !m.exists() && !u.exists() && !r.exists(), "uninstall left files");

    // BINDIR, MANDIR, UNITDIR and INITDIR override PREFIX's layout.
    // (variable, its directory, the file make puts there, the file's mode)
    let layout = [
        ("BINDIR", "opt/sbin", "i2psocks", 0o755),
        ("MANDIR", "opt/man", MAN_IN_MANDIR, 0o644),
        ("UNITDIR", "opt/units", "i2psocks.service", 0o644),
        ("INITDIR", "opt/init", "i2psocks", 0o755),
    ];
    let dirs: Vec<String> = layout.iter().map(|(k, v, _, _)| format!("{k}={}/{v}", t.0.display())).collect();
    let mut args: Vec<&str> = vec!["install", &binv];
    args.extend(dirs.iter().map(String::as_str));
    make(&args);
    let installed: Vec<String> = layout.iter().map(|(_, dir, file, _)| format!("{dir}/{file}")).collect();
    for (f, (_, _, _, m)) in installed.iter().zip(layout) {
        assert_eq!(mode(&t.0.join(f)), m, "{f}");
    }
    let sbin = format!("ExecStart={}/opt/sbin/i2psocks ", t.0.display());
    assert!(std::fs::read_to_string(t.0.join("opt/units/i2psocks.service")).unwrap().contains(&sbin));
    args[0] = "uninstall";
    make(&args);
    for f in installed {
        assert!(!t.0.join(&f).exists(), "{f} left");
    }
}

/// A service file as `make install` writes it for `bindir`.
fn with_bindir(path: &str, bindir: &str) -> String {
    std::fs::read_to_string(path).unwrap().replace("@BINDIR@", bindir)
}

/// `systemd-analyze`, or None (with the reason on stderr) where it is not installed.
fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: systemd-analyze is not installed (tests/deps.sh installs the systemd package)");
    }
    found.then_some("systemd-analyze")
}

/// The unit, pointing at the test binary, passes `systemd-analyze verify` (its man: link
/// resolved against our man page) and is rated at most [`MAX_EXPOSURE`] offline.
#[test]
fn systemd_unit_verifies_and_is_confined() {
    let Some(analyze) = systemd_analyze() else { return };
    let t = TempDir::new("install-unit");
    let bindir = Path::new(bin()).parent().unwrap().display().to_string();
    let unit = t.0.join("i2psocks.service");
    std::fs::write(&unit, with_bindir(UNIT, &bindir)).unwrap();
    let page = t.0.join("man").join(MAN_IN_MANDIR);
    std::fs::create_dir_all(page.parent().unwrap()).unwrap();
    std::fs::copy(MAN, &page).unwrap();
    let v = Command::new(analyze).arg("verify").arg(&unit).env("MANPATH", t.0.join("man")).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    assert!(v.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");

    let s = Command::new(analyze).args(["security", "--offline=true"]).arg(&unit).output().unwrap();
    let out = String::from_utf8_lossy(&s.stdout);
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for i2psocks.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}{}", String::from_utf8_lossy(&s.stderr)));
    eprintln!("systemd-analyze security --offline=true: {score}");
    assert!(score <= MAX_EXPOSURE, "exposure {score} > {MAX_EXPOSURE}:\n{out}");
}

fn help() -> String {
    let out = Command::new(bin()).arg("-h").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The man page as mandoc renders it, overstrike (bold, underline) removed.
fn rendered(width: usize) -> String {
    let out = Command::new("mandoc")
        .args(["-T", "ascii", "-O", &format!("width={width}"), MAN])
        .output()
        .expect("run mandoc (tests/deps.sh installs it)");
    assert!(out.status.success(), "mandoc: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next(); // "x\bx" bold, "_\bx" underline: keep only the last character
            continue;
        }
        plain.push(c);
    }
    plain
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text of one section of the rendered page (between its heading and the next one).
fn section(page: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in page.lines() {
        let heading = !line.is_empty() && !line.starts_with(' ');
        if heading {
            inside = line.trim() == name;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn synopsis_is_the_usage_line() {
    let h = help();
    let usage = h.lines().next().unwrap();
    let usage = usage.strip_prefix("usage: ").expect("usage line");
    let synopsis = words(&section(&rendered(1000), "SYNOPSIS"));
    assert_eq!(synopsis, words(usage), "man SYNOPSIS vs -h usage line");
}

/// (short, long, default) of every flag `-h` lists.
fn help_flags() -> Vec<(Option<String>, String, Option<String>)> {
    let h = help();
    let mut flags = Vec::new();
    let mut lines = h.lines().skip_while(|l| !l.starts_with("Options:")).skip(1).peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        // getopts puts the description on the same line or on the indented lines after.
        let mut text = line.to_string();
        while let Some(next) = lines.peek() {
            if next.trim_start().starts_with('-') {
                break;
            }
            text.push(' ');
            text.push_str(next.trim());
            lines.next();
        }
        let mut short = None;
        let mut long = None;
        for w in t.split_whitespace() {
            let w = w.trim_end_matches(',');
            if let Some(l) = w.strip_prefix("--") {
                long = Some(l.to_string());
                break;
            } else if let Some(s) = w.strip_prefix('-') {
                short = Some(s.to_string());
            }
        }
        let default = text
            .split("(default ")
            .nth(1)
            .and_then(|r| r.split([')', ';']).next())
            .map(|d| d.trim().to_string());
        flags.push((short, long.expect("every flag has a long name"), default));
    }
    assert!(flags.len() >= 20, "parsed too few flags from -h: {flags:?}");
    flags
}

/// The `.It` entries of the mdoc OPTIONS list: (head line, body text).
fn man_option_entries() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(MAN).unwrap();
    let opts = src.split(".Sh OPTIONS").nth(1).unwrap().split("\n.Sh ").next().unwrap();
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut depth = 0;
    for line in opts.lines() {
        if line.starts_with(".Bl") {
            depth += 1;
        } else if line.starts_with(".El") {
            depth -= 1;
        } else if depth == 1 && line.starts_with(".It ") {
            entries.push((line.to_string(), String::new()));
            continue;
        }
        if let Some(e) = entries.last_mut() {
            e.1.push_str(line);
            e.1.push('\n');
        }
    }
    entries
}

#[test]
fn every_flag_is_in_the_man_page_with_its_default() {
    let entries = man_option_entries();
    let options_text = words(&section(&rendered(80), "OPTIONS"));
    for (short, long, default) in help_flags() {
        let long_mdoc = format!("Fl -{long}");
        let entry = entries.iter().find(|(head, _)| {
            head.split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w.join(" ") == long_mdoc)
        });
        let Some((head, body)) = entry else {
            panic!("--{long} has no entry in OPTIONS of man/i2psocks.8");
        };
        assert!(options_text.contains(&format!("--{long}")), "--{long} not rendered in OPTIONS");
        if let Some(s) = &short {
            assert!(head.contains(&format!("Fl {s}")), "-{s} (--{long}) not in its entry head {head:?}");
        }
        if let Some(d) = default {
            let body = words(&body.replace("\\&", ""));
            assert!(body.contains(&d), "--{long}: default {d} not stated in its man entry:\n{body}");
        }
    }
}

#[test]
fn man_page_lints_clean() {
    let out = Command::new("mandoc").args(["-T", "lint", "-W", "warning", MAN]).output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "mandoc -Tlint -W warning:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--check")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not signalled")
}

#[test]
fn check_exit_codes() {
    let sam = FakeSam::start(Script::default());
    let ok = check(&["-s", &sam.addr_arg()]);
    assert_eq!(code(&ok), 0, "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("SAM"), "says what it checked");

    // Nothing listens on a port we just released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = check(&["-s", &free.to_string()]);
    assert_eq!(code(&down), 69, "{}", String::from_utf8_lossy(&down.stderr));
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("i2psocks: "));

    let bad = check(&["--no-such-flag"]);
    assert_eq!(code(&bad), 64);
    let bad = check(&["--hops", "9", "-s", &sam.addr_arg()]);
    assert_eq!(code(&bad), 64);

    let t = TempDir::new("install-check");
    let missing = t.0.join("no-such-auth-file");
    let cfg = check(&["-s", &sam.addr_arg(), "--auth-file", missing.to_str().unwrap()]);
    assert_eq!(code(&cfg), 78, "{}", String::from_utf8_lossy(&cfg.stderr));
    let key = t.0.join("key");
    std::fs::write(&key, b"not a key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = check(&["-s", &sam.addr_arg(), "-k", key.to_str().unwrap()]);
    assert_eq!(code(&cfg), 78, "{}", String::from_utf8_lossy(&cfg.stderr));
}
