//! The documents a reader follows: README, ARCHITECTURE.md and doc/*.md.
//!
//! Every relative Markdown link resolves to a file (and to a heading, where it names one),
//! and every path of this repository the text names exists. README keeps the shape a
//! newcomer reads in five minutes: at most [`README_MAX_LINES`] lines, its sections in
//! order, the quick start's commands near the top. Each doc opens with a title and one
//! paragraph saying what it covers.
//!
//! The documents' command blocks (indented four spaces, or fenced) are run as shown where
//! no router is needed: the real binary on the fake SAM bridge (tests/common/fake_sam.rs)
//! stands in for the router, and only the binary (this test's build), the proxy's and the
//! bridge's addresses and the Unix socket's path are put in place of the documents'. Each
//! fetch must reach the fake's echo peer as the HTTP request for its URL, on the identity
//! the line promises (the default one, or one per set of credentials); doc/udp.md's Python
//! program must get its datagram echoed from a `.b32.i2p`. Every command line
//! is in [`RULES`], run here or with the reason it is not, so a new command fails the test
//! until someone decides; blocks that are not commands (program output, tables, file
//! contents, indexes) are named in [`NOT_COMMANDS`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::fake_sam::{FakeSam, Script};
use common::i2p::{make_dest, param};
use common::proxy::{run_to_exit, Proxy};
use common::setup::start_on;
use common::TempDir;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The issue's bound on README: a newcomer's five minutes.
const README_MAX_LINES: usize = 250;
/// The quick start's `make demo` must be on screen without much scrolling.
const QUICK_START_WITHIN: usize = 60;
/// README's sections, in the order a newcomer needs them.
const README_SECTIONS: [&str; 6] = [
    "Quick start",
    "With a real I2P router",
    "Everyday use",
    "Read this before using any SOCKS proxy with I2P",
    "Where to read more",
    "License",
];
/// The top-level directories whose paths the documents name and must exist.
const TREES: [&str; 10] = ["src", "tests", "doc", "man", "dist", "bench", "benches", "fuzz", "demo", ".ci"];
/// How long one command may run (coreutils timeout; curl and git fail fast on the echo
/// peer's answer, which is not HTTP).
const COMMAND_TIMEOUT: &str = "30";
/// The proxy's port in the documents' commands, replaced by the test proxy's.
const DOC_PORT: &str = "4447";
/// The address the documents' commands use for the proxy.
const DOC_PROXY: &str = "127.0.0.1:4447";
/// The second listener's address in README's two-port example.
const DOC_PROXY_2: &str = "127.0.0.1:4448";
/// The first line of doc/udp.md's Python program, which the test runs with python3.
const UDP_PROGRAM: &str = "import socks, socket";
/// The name that program sends its datagram to; the fake bridge resolves it and echoes.
const UDP_PEER: &str = "echo.example.i2p";
/// What the test adds to that program: the echo and its sender are what the comment says.
const UDP_CHECK: &str =
    "assert data == b\"hello\" and sender.endswith(b\".b32.i2p\") and len(sender) == 60, (data, sender)";
/// The Unix socket of doc/unix-sockets.md, replaced by one in a scratch directory.
const DOC_SOCKET: &str = "/run/i2psocks/socks";

/// What the test does with a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    /// `i2psocks --check` on the fake bridge; the comment says what it prints.
    Check,
    /// A client through the proxy; the URL's request must reach the bridge's peer.
    Fetch,
    /// Starts i2psocks with the line's listeners; the block's later lines use them.
    Listeners,
    /// Not run here, for the reason given.
    ByHand(&'static str),
}

/// Command lines by prefix, the first match wins.
const RULES: [(&str, How); 22] = [
    (
        "make demo",
        How::ByHand("starts a router of its own and runs until Ctrl-C: run by hand from a fresh clone"),
    ),
    ("make test", How::ByHand("the whole suite, this test included: run by hand (.ci/run runs it)")),
    ("make install", How::ByHand("tests/install.rs runs make install and uninstall into a DESTDIR")),
    ("make uninstall", How::ByHand("tests/install.rs runs make install and uninstall into a DESTDIR")),
    ("make reproducible", How::ByHand("two release builds compared (minutes): run by hand")),
    ("make && sha256sum", How::ByHand("a release build, then its sum: run by hand")),
    ("make", How::ByHand("the release build (fat LTO, minutes on a small machine): run by hand")),
    ("./target/release/i2psocks --check", How::Check),
    (
        "./target/release/i2psocks",
        How::ByHand(
            "runs until stopped against a real router's bridge: run by hand; every test runs this binary",
        ),
    ),
    (
        "i2psocks --check -q -k",
        How::ByHand(
            "makes the service's key in /var/lib through a router: tests/identity.rs covers -k with --check",
        ),
    ),
    ("curl ", How::Fetch),
    ("git -c ", How::Fetch),
    ("TORSOCKS_TOR_PORT=", How::Fetch),
    (
        "torsocks -P 4447 ssh",
        How::ByHand("needs an sshd behind I2P: tests/e2e/compat.rs runs ssh under torsocks on a real router"),
    ),
    ("torsocks -P ", How::Fetch),
    ("i2psocks -l ", How::Listeners),
    (
        "ssh -o ProxyCommand=",
        How::ByHand(
            "needs an sshd behind I2P: tests/e2e/compat.rs logs in with this ProxyCommand on a real router",
        ),
    ),
    (
        "chromium ",
        How::ByHand(
            "`...` is the rest of a browser's command line: tests/e2e/compat.rs runs Chromium with this flag",
        ),
    ),
    ("start-stop-daemon ", How::ByHand("an init script's start action: starts a daemon as another user")),
    (
        "i2pd --datadir=",
        How::ByHand("the measured router's command line: tests/common/i2pd.rs starts i2pd so"),
    ),
    ("cargo test --locked --test stream_end", How::ByHand("three i2pd releases for minutes: run by hand")),
    (
        "python3 tests/sam-churn.py",
        How::ByHand("crashes the i2pd it is pointed at, by design: run by hand on a router of your own"),
    ),
];

/// Blocks that are not commands, by their first line: program output shown as an
/// example, tables, a header layout, file contents and indexes (their paths are checked
/// as paths).
const NOT_COMMANDS: [(&str, &str); 13] = [
    ("demo: building i2psocks", "make demo's output"),
    ("man/i2psocks.8 ", "README's index of documents"),
    ("src/main.rs ", "ARCHITECTURE.md's source layout"),
    ("i2psocks: warn: ", "a log line"),
    ("i2psocks: info: status:", "the status report"),
    ("case ", "a table of measurements"),
    ("RSV (2)", "the UDP header's layout"),
    ("#!/bin/sh", "an init script's text"),
    ("log = file", "a router's configuration file"),
    ("[site]", "a router's tunnels file"),
    ("HELLO VERSION", "a SAM exchange"),
    ("Garlic: ", "a router's log lines"),
    ("SAM[", "the kernel's log lines about a crashed router"),
];

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn readme() -> String {
    read(&Path::new(ROOT).join("README"))
}

/// README, ARCHITECTURE.md and every doc/*.md.
fn documents() -> Vec<PathBuf> {
    let mut v = vec![Path::new(ROOT).join("README"), Path::new(ROOT).join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("doc"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "no doc/*.md");
    v.extend(docs);
    v
}

/// The anchor GitHub gives a Markdown heading: lower case, spaces to `-`, other
/// punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's ATX headings (`#` at the start of a line).
fn anchors(text: &str) -> HashSet<String> {
    text.lines().filter(|l| l.starts_with('#')).map(|l| slug(l.trim_start_matches('#'))).collect()
}

/// The targets of `[text](target)` links.
fn link_targets(text: &str) -> Vec<String> {
    text.match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            rest.find(')').map(|end| rest[..end].to_string())
        })
        .collect()
}

/// Words that name a path in this repository: they start with one of [`TREES`] and a
/// `/`, and are not the tail of a longer path (`/usr/src/...`).
fn repo_paths(text: &str) -> BTreeSet<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._/-".contains(c);
    let mut found = BTreeSet::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        let before = text[..start].chars().next_back();
        if is_path_char(c) && !before.is_some_and(is_path_char) {
            let word: String = text[start..].chars().take_while(|&c| is_path_char(c)).collect();
            let word = word.trim_end_matches(['.', ',']).to_string();
            if TREES.iter().any(|t| word.starts_with(&format!("{t}/"))) {
                found.insert(word.clone());
            }
            i += word.chars().count().max(1);
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn relative_links_and_named_paths_resolve() {
    let mut broken = Vec::new();
    let mut links = 0;
    for doc in documents() {
        let text = read(&doc);
        let dir = doc.parent().unwrap();
        let name = doc.strip_prefix(ROOT).unwrap().display().to_string();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            links += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() { doc.clone() } else { dir.join(path) };
            if !file.exists() {
                broken.push(format!("{name}: link {target}: no such file"));
            } else if !anchor.is_empty() && !anchors(&read(&file)).contains(anchor) {
                broken.push(format!("{name}: link {target}: no heading with that anchor"));
            }
        }
        for path in repo_paths(&text) {
            if !Path::new(ROOT).join(&path).exists() {
                broken.push(format!("{name}: names {path}, which does not exist"));
            }
        }
    }
    assert!(links > 20, "only {links} relative links found: is the parser broken?");
    assert!(broken.is_empty(), "broken references:\n{}", broken.join("\n"));
}

#[test]
fn the_parsers_find_what_they_should() {
    let text = "see [a](doc/a.md#x-y) and [b](https://e.org/) in src/relay.rs, not /usr/src/x; tests/.";
    assert_eq!(link_targets(text), ["doc/a.md#x-y", "https://e.org/"]);
    assert_eq!(repo_paths(text).into_iter().collect::<Vec<_>>(), ["doc/a.md", "src/relay.rs", "tests/"]);
    assert_eq!(slug("What the client sees"), "what-the-client-sees");
    assert_eq!(
        slug("Half-close: why i2psocks holds a client's FIN"),
        "half-close-why-i2psocks-holds-a-clients-fin"
    );
}

#[test]
fn readme_is_the_short_overview() {
    let text = readme();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() <= README_MAX_LINES,
        "README has {} lines, more than {README_MAX_LINES}",
        lines.len()
    );
    let demo =
        lines.iter().position(|l| l.trim_start().starts_with("make demo")).expect("`make demo` in README");
    assert!(demo < QUICK_START_WITHIN, "`make demo` on line {}, not within {QUICK_START_WITHIN}", demo + 1);
    // A section title is underlined with dashes (README stays plain text).
    let titles: Vec<&str> = lines
        .windows(2)
        .filter(|w| !w[1].is_empty() && w[1].chars().all(|c| c == '-') && w[1].len() == w[0].len())
        .map(|w| w[0])
        .collect();
    assert_eq!(titles, README_SECTIONS, "README's sections and their order");
    assert!(text.contains("I2P only by construction"), "the I2P-only promise");
}

#[test]
fn every_doc_opens_with_a_title_and_what_it_covers() {
    for doc in documents().into_iter().skip(1) {
        let text = read(&doc);
        let mut lines = text.lines();
        let title = lines.next().unwrap_or_default();
        assert!(title.starts_with("# "), "{}: first line is not a title: {title:?}", doc.display());
        assert_eq!(lines.next(), Some(""), "{}: a blank line after the title", doc.display());
        let first = lines.next().unwrap_or_default();
        assert!(
            !first.is_empty() && !first.starts_with(['#', ' ', '|', '-']),
            "{}: no opening paragraph: {first:?}",
            doc.display()
        );
    }
}

/// A document's code blocks (indented four spaces, or fenced with three backticks), each
/// as its lines without the indent, a line ending in `\` joined with the next (one shell
/// command).
fn blocks(text: &str) -> Vec<Vec<String>> {
    fn end(out: &mut Vec<Vec<String>>, cur: &mut Vec<String>) {
        while cur.last().is_some_and(String::is_empty) {
            cur.pop();
        }
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    }
    fn push(cur: &mut Vec<String>, body: &str, continued: &mut bool) {
        match cur.last_mut() {
            Some(last) if *continued => {
                last.push(' ');
                last.push_str(body.trim());
            }
            _ => cur.push(body.to_string()),
        }
        *continued = body.ends_with('\\');
        if *continued {
            let last = cur.last_mut().unwrap();
            last.pop();
            *last = last.trim_end().to_string();
        }
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let (mut fenced, mut continued) = (false, false);
    // An indented line opens a block only after a blank line: within a paragraph or
    // a list item it is a continuation line (Markdown's rule).
    let mut after_blank = true;
    for line in text.lines() {
        let opens = after_blank || !cur.is_empty();
        after_blank = line.trim().is_empty();
        if line.starts_with("```") {
            end(&mut out, &mut cur);
            fenced = !fenced;
            continued = false;
        } else if fenced {
            push(&mut cur, line, &mut continued);
        } else if let Some(body) = line.strip_prefix("    ").filter(|_| opens) {
            push(&mut cur, body, &mut continued);
        } else if line.is_empty() && !cur.is_empty() {
            cur.push(String::new());
        } else {
            end(&mut out, &mut cur);
        }
    }
    end(&mut out, &mut cur);
    out
}

fn rule(line: &str) -> Option<(usize, How)> {
    RULES.iter().enumerate().find(|(_, (p, _))| line.starts_with(p)).map(|(i, (_, h))| (i, *h))
}

/// `timeout -k 5 COMMAND_TIMEOUT sh -c LINE` in `dir`, no prompts, stdin closed.
fn shell(line: &str, dir: &Path) -> Output {
    timed(&["sh", "-c", line], dir)
}

/// `timeout -k 5 COMMAND_TIMEOUT ARGV...` in `dir`, no prompts, stdin closed.
fn timed(argv: &[&str], dir: &Path) -> Output {
    Command::new("timeout")
        .args(["-k", "5", COMMAND_TIMEOUT])
        .args(argv)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("run {argv:?}: {e} (tests/deps.sh installs the programs the documents show)")
        })
}

/// The URL a client line fetches: host and path.
fn url_of(line: &str) -> (String, String) {
    let url = line.split_whitespace().find_map(|w| w.strip_prefix("http://")).expect("an http:// URL");
    let (host, path) = url.split_once('/').unwrap_or((url, ""));
    (host.to_string(), format!("/{path}"))
}

/// The SOCKS credentials a client line sends, if any: `--proxy-user U:P`, torsocks'
/// `-u U -p P`, or `scheme://U:P@` in a proxy URL.
fn credentials(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1));
    if let Some(up) = after("--proxy-user") {
        return Some(up.to_string());
    }
    if let (Some(u), Some(p)) = (after("-u"), after("-p")) {
        return Some(format!("{u}:{p}"));
    }
    let at = line.find('@')?;
    let start = line[..at].rfind("//")? + 2;
    Some(line[start..at].to_string())
}

/// Apply `(from, to)` replacements to a command line.
fn substitute(line: &str, subs: &[(String, String)]) -> String {
    subs.iter().fold(line.to_string(), |l, (from, to)| l.replace(from.as_str(), to))
}

/// Run one client line (already substituted) and return the SAM session its stream was
/// opened on, once the request for its URL reached the bridge's echo peer.
fn fetch(fake: &FakeSam, run: &str, dir: &Path) -> String {
    let before = fake.streams().len();
    let out = shell(run, dir);
    let (host, path) = url_of(run);
    let streams = fake.streams();
    let stream = streams[before..]
        .iter()
        .find(|s| param(&s.line, "DESTINATION") == Some(host.as_str()))
        .unwrap_or_else(|| {
            panic!(
                "{run}: no STREAM CONNECT to {host} (exit {:?}):\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let got = String::from_utf8_lossy(&fake.received(stream.conn)).into_owned();
    assert!(got.contains(&format!("GET {path}")), "{run}: the peer got no GET {path}:\n{got}");
    assert!(got.contains(&format!("Host: {host}")), "{run}: the peer got no Host: {host}:\n{got}");
    // 97: the proxy handshake failed; 7: no connection to the proxy; 124: timed out.
    assert!(!matches!(out.status.code(), Some(7 | 97 | 124)), "{run}: exit {:?}", out.status.code());
    param(&stream.line, "ID").unwrap().to_string()
}

/// The replacements that point a document's commands at the test proxy at `addr`.
fn main_subs(addr: &str) -> Vec<(String, String)> {
    let port = addr.rsplit(':').next().unwrap();
    vec![
        (format!("TORSOCKS_TOR_PORT={DOC_PORT}"), format!("TORSOCKS_TOR_PORT={port}")),
        (format!("torsocks -P {DOC_PORT} "), format!("torsocks -P {port} ")),
        (DOC_PROXY.to_string(), addr.to_string()),
    ]
}

/// Start the proxy a `i2psocks -l ...` line describes, on `fake`, with its addresses in
/// place of the documents' ones; returns it and the replacements for the block's later
/// lines.
fn start_listeners(fake: &FakeSam, line: &str, dir: &Path) -> (Proxy, Vec<(String, String)>) {
    let socket = dir.join("socks").display().to_string();
    let unix = format!("unix:{DOC_SOCKET}");
    let args: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(|w| match w {
            w if w == DOC_PROXY || w == DOC_PROXY_2 => "127.0.0.1:0".to_string(),
            w if w == unix => format!("unix:{socket}"),
            w => w.to_string(),
        })
        .collect();
    let n = args.iter().filter(|w| *w == "-l").count();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = start_on(fake, &[], &args);
    let addrs = p.listening(n);
    let mut subs = Vec::new();
    for (doc, got) in
        [DOC_PROXY_2, DOC_PROXY].iter().zip(addrs.iter().filter(|a| !a.starts_with("unix:")).rev())
    {
        subs.push((doc.to_string(), got.clone()));
    }
    if addrs.iter().any(|a| a.starts_with("unix:")) {
        subs.push((DOC_SOCKET.to_string(), socket));
    }
    assert_eq!(addrs.len(), n, "{line}: {n} listeners");
    (p, subs)
}

/// doc/udp.md's Python program, pointed at `proxy`, with [`UDP_CHECK`] after it: its
/// datagram must come back from the peer's `.b32.i2p`. Debian's interpreter, where
/// python3-socks (PySocks) lives, as in tests/e2e/compat.rs.
fn run_udp_program(block: &[String], proxy: &Proxy, dir: &Path) {
    let port = proxy.addr().port().to_string();
    let program = format!("{}\n{UDP_CHECK}\n", block.join("\n"))
        .replace(&format!(", {DOC_PORT})"), &format!(", {port})"));
    assert!(program.contains(&format!("({UDP_PEER:?}, ")), "the program sends to {UDP_PEER}");
    let out = timed(&["/usr/bin/python3", "-c", &program], dir);
    assert!(
        out.status.success(),
        "doc/udp.md's program failed ({:?}):\n{program}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn commands_run_as_shown() {
    let fake = FakeSam::start(Script::default().datagram_echo(true).name(UDP_PEER, &make_dest(1).0));
    let udp = fake.udp_arg();
    let proxy = start_on(&fake, &[], &["--sam-udp", &udp]);
    let main = main_subs(&proxy.addr().to_string());
    let mut used = BTreeSet::new();
    let mut plain_session: Option<String> = None;
    let mut by_credentials: Vec<(String, String)> = Vec::new();
    let mut ran = 0;
    for doc in documents() {
        let name = doc.strip_prefix(ROOT).unwrap().display().to_string();
        for block in blocks(&read(&doc)) {
            let first = block.first().cloned().unwrap_or_default();
            if NOT_COMMANDS.iter().any(|(p, _)| first.starts_with(p)) {
                continue;
            }
            let dir = TempDir::new("docs");
            if first == UDP_PROGRAM {
                run_udp_program(&block, &proxy, &dir.0);
                ran += 1;
                continue;
            }
            // A block that starts its own proxy: its later lines use its listeners.
            let mut own: Option<(Proxy, Vec<(String, String)>)> = None;
            // A line that is only a comment belongs to the command above it.
            for line in block.iter().filter(|l| !l.is_empty() && !l.trim_start().starts_with('#')) {
                let (i, how) = rule(line).unwrap_or_else(|| panic!("{name}: command not in RULES: {line:?}"));
                used.insert(i);
                match how {
                    How::ByHand(why) => eprintln!("not run here ({name}): {line}\n  ({why})"),
                    How::Check => {
                        let (cmd, comment) = line.split_once('#').unwrap();
                        let mut args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
                        let sam = fake.addr_arg();
                        args.extend(["-s", &sam]);
                        let done = run_to_exit(&args, Duration::from_secs(10));
                        let said = comment.split('"').nth(1).unwrap().replace("127.0.0.1:7656", &sam);
                        let said = said.trim_end_matches('x');
                        assert!(
                            done.stdout.contains(said),
                            "{line}: stdout {:?} lacks {said:?}",
                            done.stdout
                        );
                        assert!(
                            comment.contains("exit 0") && done.status.success(),
                            "{line}: {:?}",
                            done.status
                        );
                        ran += 1;
                    }
                    How::Listeners => {
                        own = Some(start_listeners(&fake, line, &dir.0));
                        ran += 1;
                    }
                    How::Fetch => {
                        let subs = own.as_ref().map_or(&main, |(_, s)| s);
                        let session = fetch(&fake, &substitute(line, subs), &dir.0);
                        match (credentials(line), own.is_some()) {
                            (Some(c), _) => by_credentials.push((c, session)),
                            (None, false) => assert_eq!(
                                plain_session.get_or_insert_with(|| session.clone()),
                                &session,
                                "{line}: clients without credentials share the default identity"
                            ),
                            (None, true) => {}
                        }
                        ran += 1;
                    }
                }
            }
        }
    }
    let unused: Vec<&str> =
        RULES.iter().enumerate().filter(|(i, _)| !used.contains(i)).map(|(_, r)| r.0).collect();
    assert!(unused.is_empty(), "RULES no document's line uses any more: {unused:?}");
    // Each set of credentials is an identity of its own, not the default one.
    assert!(by_credentials.len() >= 2, "the documents show credentials: {by_credentials:?}");
    let plain = plain_session.expect("a fetch without credentials");
    let sessions: HashSet<&String> = by_credentials.iter().map(|(_, s)| s).collect();
    assert_eq!(
        sessions.len(),
        by_credentials.len(),
        "one identity per set of credentials: {by_credentials:?}"
    );
    assert!(!sessions.contains(&plain), "credentials got the default identity: {by_credentials:?}");
    eprintln!("{ran} command lines run");
}
