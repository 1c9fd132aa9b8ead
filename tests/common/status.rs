//! Reading the proxy's status report (SIGUSR1): ask for one and hand back its lines, and
//! pick numbers out of them, so tests assert counts exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::proxy::Proxy;
use std::time::Duration;

/// The report's first and last lines, as i2psocks writes them.
pub const FIRST: &str = "status: up ";
pub const LAST: &str = "status: sandbox: ";
/// Its number of lines.
pub const LINES: usize = 8;

/// One report: its lines without the log prefix, each starting `status: `.
#[derive(Debug, Clone)]
pub struct Report(pub Vec<String>);

impl Report {
    /// The line that starts `status: <topic>` (`up`, `clients`, `refused`, ...).
    pub fn line(&self, topic: &str) -> &str {
        let head = format!("status: {topic}");
        self.0.iter().find(|l| l.starts_with(&head)).unwrap_or_else(|| panic!("no {head} in {:?}", self.0))
    }

    /// The number just before `label` in the `topic` line (`"3 not I2P"` → 3).
    pub fn count(&self, topic: &str, label: &str) -> u64 {
        let line = self.line(topic);
        self.find_count(topic, label).unwrap_or_else(|| panic!("no number before {label:?} in {line:?}"))
    }

    /// Like [`Report::count`], but `None` when the line has no `label`: for a figure that
    /// not every version of the report shows.
    pub fn find_count(&self, topic: &str, label: &str) -> Option<u64> {
        let line = self.line(topic);
        let before = line[..line.find(label)?].trim_end();
        let digits = &before[before.rfind(|c: char| !c.is_ascii_digit()).map_or(0, |i| i + 1)..];
        digits.parse().ok()
    }
}

/// Send SIGUSR1 and return the report it writes.
pub fn ask(p: &Proxy, timeout: Duration) -> Report {
    let before = p.count_lines(LAST);
    p.signal("USR1");
    p.wait_for_nth_line(LAST, before + 1, timeout).expect("no status report after SIGUSR1");
    last(p)
}

/// The last complete report in the proxy's log.
pub fn last(p: &Proxy) -> Report {
    let lines = p.lines();
    let end = lines.iter().rposition(|l| l.contains(LAST)).expect("no status report in the log");
    let block: Vec<String> =
        lines[..=end].iter().filter_map(|l| l.find("status: ").map(|i| l[i..].to_string())).collect();
    let block = block[block.len() - LINES..].to_vec();
    assert!(block[0].starts_with(FIRST), "a report starts with its uptime line: {block:?}");
    Report(block)
}
