//! The sandbox (src/sandbox.rs). The same plan and apply functions the proxy uses run in
//! a child process (this test binary again, for one test), which then tries what the
//! ruleset forbids, each checked to work just before: a TCP connect to a port other than
//! SAM's (EACCES, on a listener that accepted a moment earlier), a TCP bind, opening a
//! file, exec of /bin/true, a signal to another process; and what it allows: SAM's port,
//! creating the key file, removing the Unix socket. Then the real binary on the fake SAM
//! bridge: NoNewPrivs in /proc, the start-up line, `--sandbox off` and `require`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Script, WAIT};
use common::i2p::make_key;
use common::process::proc_status;
use common::proxy::{bridge_args, run_to_exit, Proxy};
use common::setup::{setup, start_on};
use common::TempDir;
use i2psocks::cli::{self, Command as Cli, Sandbox};
use i2psocks::{keyfile, sandbox};
use std::fs::{self, File};
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// Set in the child: `SAM_ADDR OTHER_ADDR DIR`.
const CHILD: &str = "I2PSOCKS_SANDBOX_CHILD";
/// This test's name, for the child's `--exact` filter.
const PROBE_TEST: &str = "forbidden_refused_allowed_work";
/// Printed by the child once every probe held.
const ALL_HELD: &str = "sandbox probes: all held";

fn denied<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) {
    match r {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => println!("{what}: refused ({e})"),
        other => panic!("{what}: expected EACCES/EPERM, got {other:?}"),
    }
}

/// Runs in the child: the proxy's plan for `-s SAM -l unix:DIR/run/socks -k DIR/keys/key`,
/// applied with `--sandbox require`, then the probes. The signal's victim outlives it: the
/// sandbox forbids ending it here, so the parent test does.
#[allow(clippy::zombie_processes)]
fn child(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    let (sam, other, dir) = (parts[0], parts[1], Path::new(parts[2]));
    let socket = dir.join("run/socks");
    let key = dir.join("keys/key");
    let outside = dir.join("outside");
    let args: Vec<String> =
        ["-s", sam, "-l", &format!("unix:{}", socket.display()), "-k", &key.display().to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let Cli::Run(config) = cli::parse(&args).unwrap() else { panic!("not a run") };

    // What will be refused works now.
    drop(TcpStream::connect(other).expect("the other listener accepts before the sandbox"));
    drop(File::open(&outside).expect("the file opens before the sandbox"));
    assert!(Command::new("/bin/true").status().unwrap().success());
    let mut victim =
        Command::new("sleep").arg("60").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let _unix = UnixListener::bind(&socket).unwrap();

    let plan = sandbox::plan(&config, &[key.as_path()]);
    let applied = sandbox::apply(&plan, Sandbox::Require).unwrap();
    println!("{}", sandbox::summary(&plan, &applied));

    denied("TCP connect to another port", TcpStream::connect(other));
    denied("TCP bind", TcpListener::bind("127.0.0.1:0"));
    denied("open a file", File::open(&outside));
    denied("create a file beside the socket", File::create(dir.join("run/new")));
    denied("read in the key directory", File::open(dir.join("keys/other")));
    denied("exec /bin/true", Command::new("/bin/true").status());
    denied("signal another process", victim.kill());
    println!("victim {}", victim.id());

    drop(TcpStream::connect(sam).expect("SAM's port is allowed"));
    keyfile::create(&key, &make_key(1).0).expect("the new key file is allowed");
    fs::remove_file(&socket).expect("removing the Unix socket is allowed");
    println!("{ALL_HELD}");
}

#[test]
fn forbidden_refused_allowed_work() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let t = TempDir::new("sandbox");
    for d in ["run", "keys"] {
        fs::create_dir(t.0.join(d)).unwrap();
    }
    fs::write(t.0.join("outside"), "not for the proxy").unwrap();
    fs::write(t.0.join("keys/other"), "not for the proxy either").unwrap();
    let sam = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = format!("{} {} {}", sam.local_addr().unwrap(), other.local_addr().unwrap(), t.0.display());
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", PROBE_TEST, "--nocapture", "--test-threads", "1"])
        .env(CHILD, spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The child could not end its victim: do it here.
    if let Some(pid) = stdout.lines().find_map(|l| l.strip_prefix("victim ")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    assert!(
        out.status.success() && stdout.contains(ALL_HELD),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sandbox: Landlock ABI "), "{stdout}");
    print!("{stdout}");
    assert!(keyfile::load(&t.0.join("keys/key")).unwrap().is_some(), "the key file was written");
    assert!(!t.0.join("run/socks").exists(), "the socket was removed");
}

/// The running proxy: no new privileges, and the start-up line says what was applied.
#[test]
fn running_proxy_has_no_new_privs() {
    let (fake, p) = setup(Script::default(), &[]);
    assert_eq!(proc_status(p.pid(), "NoNewPrivs"), Some(1));
    let line = p.wait_for_line("sandbox: ", WAIT).unwrap();
    let port = fake.addr().port();
    assert!(
        line.contains(&format!(
            "i2psocks: info: sandbox: Landlock ABI 7: connect only to port {port}, no TCP bind, "
        )),
        "{line}"
    );
    assert!(line.contains("no file access, no exec, no signals to other processes"), "{line}");
}

#[test]
fn off_switch_is_logged() {
    let fake = FakeSam::start(Script::default());
    let p = start_on(&fake, &[], &["--sandbox", "off"]);
    assert!(p.wait_for_line("i2psocks: info: sandbox: off (--sandbox off)", WAIT).is_some());
    assert_eq!(proc_status(p.pid(), "NoNewPrivs"), Some(0));
}

/// `require` fails closed, with the reason, when a place the proxy will need cannot be
/// kept open; `auto` warns and runs.
#[test]
fn require_fails_closed() {
    let key = "/nonexistent-i2psocks-dir/key";
    let fake_sam = "127.0.0.1:9";
    let f =
        run_to_exit(&bridge_args(fake_sam, &["-l", "127.0.0.1:0", "-k", key, "--sandbox", "require"]), WAIT);
    assert_eq!(f.status.code(), Some(78), "{}", f.stderr);
    let last = f.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("i2psocks: --sandbox require: cannot open /nonexistent-i2psocks-dir (new key file)"),
        "{}",
        f.stderr
    );
    let p = Proxy::start(&bridge_args(fake_sam, &["-k", key]));
    assert!(p
        .wait_for_line("i2psocks: warn: sandbox: no access kept to /nonexistent-i2psocks-dir", WAIT)
        .is_some());
    assert!(p.wait_for_line("i2psocks: info: sandbox: Landlock ABI", WAIT).is_some());
}
