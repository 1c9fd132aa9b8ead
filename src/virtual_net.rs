//! Virtual IPv4 addresses for I2P names: the `--virtual-net` range and the
//! bounded two-way map between names and addresses in it.
//!
//! Programs that resolve a name before they connect (torsocks hooks
//! getaddrinfo() and asks the proxy with Tor's SOCKS RESOLVE command) need an
//! IPv4 address for an `.i2p` name. The proxy answers with an address from
//! this range, at once and without asking anyone, and when the program
//! connects to that address the proxy maps it back to the name. The idea is
//! Tor's AutomapHostsOnResolve with VirtualAddrNetworkIPv4.
//!
//! Pure: no locks, no clock (callers pass `now`), no randomness (callers
//! pass the offset the first address is taken from). Addresses are handed out
//! in order from that offset, skipping those ending in .0 or .255 (some
//! programs treat them as network or broadcast addresses; Tor skips them for
//! the same reason). The map holds at most [`VirtualMap::capacity`] names and
//! forgets the least recently used one beyond that; a forgotten address is
//! held back for [`QUARANTINE`] before another name may get it. Names are
//! stored as given: the caller validates them first.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default range, as text (help, man page, doc/clients.md say the same).
pub const DEFAULT_NET: &str = "10.192.0.0/10";
/// The range Tor's manual suggests for virtual addresses that leave the
/// loopback interface: private, and too large to be guessed by scanning.
pub const DEFAULT: Cidr = Cidr { base: 0x0ac0_0000, prefix: 10 };
/// Most names mapped at once. Each `.b32.i2p` name costs about 240 bytes
/// (measured: tests/resolve.rs), so a full map takes about 15 MiB; a program
/// that resolves more names than this within its own address cache time is
/// not one we serve well anyway.
pub const MAX_NAMES: usize = 65_536;
/// Most forgotten addresses held back at once (same memory reasoning). When
/// this many are held and the map is full, a new name is refused until the
/// oldest is released: better than giving a program that still holds an
/// address somebody else's name.
pub const MAX_HELD: usize = 65_536;
/// How long an address forgotten by the map is held back before another name
/// may get it. Resolver caches in front of us are short (curl and browsers
/// keep an answer about a minute; glibc keeps none); ten times that covers a
/// program that retries an address it looked up a while ago, which then gets
/// "no mapping" instead of reaching another name's destination.
pub const QUARANTINE: Duration = Duration::from_secs(600);
/// Longest prefix taken: a /24 has 254 usable addresses, half for names and
/// half for addresses held back. Smaller ranges would hold too few names.
pub const MAX_PREFIX: u8 = 24;

/// Ranges no virtual address may come from, and why (for the usage error).
const RESERVED: [(Cidr, &str); 3] = [
    (Cidr { base: 0x0000_0000, prefix: 8 }, "0.0.0.0/8: SOCKS4 reads 0.0.0.x as a SOCKS4a request"),
    (
        Cidr { base: 0x7f00_0000, prefix: 8 },
        "127.0.0.0/8: torsocks refuses loopback addresses (or, with AllowOutboundLocalhost, connects to them directly)",
    ),
    (Cidr { base: 0xe000_0000, prefix: 3 }, "224.0.0.0/3: multicast and reserved addresses take no TCP connections"),
];

/// An IPv4 network: base address and prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// Parse `a.b.c.d/n` for `--virtual-net`: strict dotted quad, prefix
    /// 1..=[`MAX_PREFIX`], no host bits, no overlap with [`RESERVED`]. The
    /// error is one sentence for the usage message.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let form = || "expected an IPv4 network such as 10.192.0.0/10".to_string();
        let (addr, prefix) = s.split_once('/').ok_or_else(form)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| form())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(form());
        }
        let prefix: u8 = prefix.parse().map_err(|_| form())?;
        if prefix == 0 || prefix > MAX_PREFIX {
            return Err(format!(
                "the prefix must be /1 to /{MAX_PREFIX} (a /{MAX_PREFIX} holds {} names)",
                Cidr { base: 0, prefix: MAX_PREFIX }.capacity()
            ));
        }
        let net = Cidr { base: u32::from(addr), prefix };
        if net.base & !net.mask() != 0 {
            let fixed = Cidr { base: net.base & net.mask(), prefix };
            return Err(format!("host bits are set; the network is {fixed}"));
        }
        if let Some((_, why)) = RESERVED.iter().find(|(r, _)| r.overlaps(net)) {
            return Err(format!("overlaps {why}"));
        }
        Ok(net)
    }

    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    /// Number of addresses in the range.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.base
    }

    fn overlaps(self, other: Cidr) -> bool {
        let mask = self.mask() & other.mask();
        self.base & mask == other.base & mask
    }

    /// Addresses that may be handed out: all but those ending in .0 or .255
    /// (prefixes are at most /24, so every 256 addresses hold 254 of them).
    pub fn usable(self) -> u64 {
        self.size() / 256 * 254
    }

    /// How many names a map over this range holds: half the usable
    /// addresses (the other half is room for addresses held back), at most
    /// [`MAX_NAMES`].
    pub fn capacity(self) -> usize {
        usize::try_from(self.usable() / 2).unwrap_or(usize::MAX).min(MAX_NAMES)
    }

    /// How many forgotten addresses may be held back at once.
    fn held_capacity(self) -> usize {
        let rest = self.usable().saturating_sub(self.capacity() as u64);
        usize::try_from(rest).unwrap_or(usize::MAX).min(MAX_HELD)
    }

    /// The address `offset` places into the range (wrapping).
    fn at(self, offset: u64) -> u32 {
        let off = u32::try_from(offset % self.size()).unwrap_or(0);
        self.base | off
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// A strict dotted quad (`10.192.0.1`; no leading zeros, no other forms),
/// as torsocks writes a connect() address into a SOCKS5 domain field.
pub fn dotted_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// What an address is to the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Mapped to this name.
    Name(String),
    /// In the range, but no name has it (never given, or forgotten).
    Unmapped,
    /// Not in the range.
    Outside,
}

/// One mapped address.
struct Slot {
    name: Arc<str>,
    /// Its key in `VirtualMap::lru`.
    used: u64,
}

/// The bounded two-way map between names and virtual addresses.
pub struct VirtualMap {
    net: Cidr,
    capacity: usize,
    held_capacity: usize,
    by_name: HashMap<Arc<str>, u32>,
    by_addr: HashMap<u32, Slot>,
    /// Use stamp → address, oldest first.
    lru: BTreeMap<u64, u32>,
    /// Forgotten addresses and when they may be given again, in that order.
    held: VecDeque<(Instant, u32)>,
    held_set: HashSet<u32>,
    /// Offset into the range of the next address to try.
    cursor: u64,
    stamp: u64,
}

impl VirtualMap {
    /// An empty map over `net` whose first address is taken at `start`
    /// (an offset into the range, wrapping). A random start makes it
    /// unlikely that an address a program kept from an earlier run of the
    /// proxy now belongs to another name.
    pub fn new(net: Cidr, start: u64) -> VirtualMap {
        VirtualMap {
            net,
            capacity: net.capacity(),
            held_capacity: net.held_capacity(),
            by_name: HashMap::new(),
            by_addr: HashMap::new(),
            lru: BTreeMap::new(),
            held: VecDeque::new(),
            held_set: HashSet::new(),
            cursor: start % net.size(),
            stamp: 0,
        }
    }

    pub fn net(&self) -> Cidr {
        self.net
    }

    /// Most names held at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Names mapped now.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Addresses held back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The address of `name`, given now if it has none (forgetting the least
    /// recently used name when full). None when the map is full and the most
    /// addresses are already held back: nothing may be given until one is
    /// released.
    pub fn resolve(&mut self, name: &str, now: Instant) -> Option<Ipv4Addr> {
        self.release(now);
        if let Some(&addr) = self.by_name.get(name) {
            self.touch(addr);
            return Some(Ipv4Addr::from(addr));
        }
        let full = self.by_name.len() >= self.capacity;
        if full && self.held.len() >= self.held_capacity {
            return None;
        }
        let addr = self.free_address()?;
        if full {
            self.forget_oldest(now);
        }
        let name: Arc<str> = Arc::from(name);
        self.stamp += 1;
        self.lru.insert(self.stamp, addr);
        self.by_addr.insert(addr, Slot { name: Arc::clone(&name), used: self.stamp });
        self.by_name.insert(name, addr);
        Some(Ipv4Addr::from(addr))
    }

    /// The name at `ip`, which counts as a use of it.
    pub fn lookup(&mut self, ip: Ipv4Addr, now: Instant) -> Lookup {
        self.release(now);
        let addr = u32::from(ip);
        if !self.net.contains(ip) {
            return Lookup::Outside;
        }
        match self.by_addr.get(&addr) {
            Some(slot) => {
                let name = slot.name.to_string();
                self.touch(addr);
                Lookup::Name(name)
            }
            None => Lookup::Unmapped,
        }
    }

    fn touch(&mut self, addr: u32) {
        self.stamp += 1;
        if let Some(slot) = self.by_addr.get_mut(&addr) {
            self.lru.remove(&slot.used);
            slot.used = self.stamp;
            self.lru.insert(self.stamp, addr);
        }
    }

    /// The next address from the cursor that is neither mapped, held back,
    /// nor ending in .0 or .255. With the map not over capacity and the held
    /// list not over its own, one exists (capacity + held capacity ≤ usable);
    /// the scan is bounded by the range anyway.
    fn free_address(&mut self) -> Option<u32> {
        for _ in 0..self.net.size() {
            let addr = self.net.at(self.cursor);
            self.cursor = (self.cursor + 1) % self.net.size();
            let last = addr & 0xff;
            if last == 0 || last == 0xff || self.by_addr.contains_key(&addr) || self.held_set.contains(&addr)
            {
                continue;
            }
            return Some(addr);
        }
        None
    }

    fn forget_oldest(&mut self, now: Instant) {
        let Some((_, addr)) = self.lru.pop_first() else { return };
        if let Some(slot) = self.by_addr.remove(&addr) {
            self.by_name.remove(&slot.name);
        }
        self.held.push_back((now + QUARANTINE, addr));
        self.held_set.insert(addr);
    }

    /// Give back the held addresses whose time is over.
    fn release(&mut self, now: Instant) {
        while let Some(&(until, addr)) = self.held.front() {
            if until > now {
                break;
            }
            self.held.pop_front();
            self.held_set.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    fn name(i: usize) -> String {
        format!("site{i}.i2p")
    }

    #[test]
    fn parse_accepts() {
        assert_eq!(net(DEFAULT_NET), DEFAULT);
        assert_eq!(DEFAULT.to_string(), DEFAULT_NET);
        assert_eq!(DEFAULT.size(), 1 << 22);
        assert_eq!(DEFAULT.capacity(), MAX_NAMES);
        assert_eq!(DEFAULT.held_capacity(), MAX_HELD);
        let small = net("192.168.7.0/24");
        assert_eq!(
            (small.size(), small.usable(), small.capacity(), small.held_capacity()),
            (256, 254, 127, 127)
        );
        let mid = net("172.16.0.0/16");
        assert_eq!((mid.usable(), mid.capacity(), mid.held_capacity()), (65_024, 32_512, 32_512));
        assert!(net("128.0.0.0/2").contains(ip("191.255.255.255")));
        assert!(!net("128.0.0.0/2").contains(ip("192.0.0.0")));
        assert!(DEFAULT.contains(ip("10.192.0.0")) && DEFAULT.contains(ip("10.255.255.255")));
        assert!(!DEFAULT.contains(ip("10.191.255.255")) && !DEFAULT.contains(ip("11.0.0.0")));
    }

    #[test]
    fn parse_refuses() {
        for (s, why) in [
            ("", "expected"),
            ("10.192.0.0", "expected"),
            ("10.192.0.0/", "expected"),
            ("10.192.0/10", "expected"),
            ("010.192.0.0/10", "expected"),
            ("10.192.0.0/+9", "expected"),
            ("10.192.0.0/010", "expected"),
            ("10.192.0.0/10 ", "expected"),
            ("::1/64", "expected"),
            ("example.com/10", "expected"),
            ("10.192.0.0/0", "/1 to /24"),
            ("10.192.0.0/25", "/1 to /24"),
            ("10.192.0.0/32", "/1 to /24"),
            ("10.192.0.1/10", "network is 10.192.0.0/10"),
            ("10.193.0.0/10", "network is 10.192.0.0/10"),
            ("127.192.0.0/10", "127.0.0.0/8"),
            ("64.0.0.0/2", "127.0.0.0/8"),
            ("0.0.0.0/1", "0.0.0.0/8"),
            ("0.0.1.0/24", "0.0.0.0/8"),
            ("224.0.0.0/4", "224.0.0.0/3"),
            ("240.0.0.0/8", "224.0.0.0/3"),
            ("128.0.0.0/1", "224.0.0.0/3"),
        ] {
            let e = Cidr::parse(s).unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn dotted() {
        assert_eq!(dotted_ipv4(b"10.192.0.1"), Some(ip("10.192.0.1")));
        for bad in [&b"10.192.0.01"[..], b"10.192.1", b"0x0a.1.1.1", b"10.192.0.1.", b"", b"\xff", b"foo.i2p"]
        {
            assert_eq!(dotted_ipv4(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn addresses_in_order_skipping_0_and_255() {
        let t = Instant::now();
        let mut m = VirtualMap::new(net("10.0.0.0/23"), 0);
        assert_eq!(m.resolve("a.i2p", t), Some(ip("10.0.0.1")));
        assert_eq!(m.resolve("b.i2p", t), Some(ip("10.0.0.2")));
        // The same name, the same address, whatever happened in between.
        assert_eq!(m.resolve("a.i2p", t), Some(ip("10.0.0.1")));
        assert_eq!(m.len(), 2);
        // From offset 254: .254, then past .255 and .0 to 10.0.1.1.
        let mut m = VirtualMap::new(net("10.0.0.0/23"), 254);
        assert_eq!(m.resolve("a.i2p", t), Some(ip("10.0.0.254")));
        assert_eq!(m.resolve("b.i2p", t), Some(ip("10.0.1.1")));
        // A start past the end wraps; the end of the range wraps to its start.
        let mut m = VirtualMap::new(net("10.0.0.0/23"), 512 + 510);
        assert_eq!(m.resolve("a.i2p", t), Some(ip("10.0.1.254")));
        assert_eq!(m.resolve("b.i2p", t), Some(ip("10.0.0.1")));
    }

    #[test]
    fn lookup_both_ways() {
        let t = Instant::now();
        let mut m = VirtualMap::new(DEFAULT, 0);
        assert_eq!(m.resolve("x.b32.i2p", t), Some(ip("10.192.0.1")));
        assert_eq!(m.lookup(ip("10.192.0.1"), t), Lookup::Name("x.b32.i2p".into()));
        assert_eq!(m.lookup(ip("10.192.0.2"), t), Lookup::Unmapped);
        assert_eq!(m.lookup(ip("10.255.255.255"), t), Lookup::Unmapped);
        assert_eq!(m.lookup(ip("10.191.255.255"), t), Lookup::Outside);
        assert_eq!(m.lookup(ip("127.0.0.1"), t), Lookup::Outside);
    }

    #[test]
    fn least_recently_used_is_forgotten_and_held_back() {
        let t = Instant::now();
        let small = net("10.9.8.0/24");
        let mut m = VirtualMap::new(small, 0);
        for i in 1..=127 {
            assert_eq!(m.resolve(&name(i), t), Some(Ipv4Addr::from(0x0a09_0800 + i as u32)));
        }
        assert_eq!(m.len(), 127);
        // Used again (by RESOLVE or by a CONNECT to its address): no longer the oldest.
        assert_eq!(m.resolve(&name(1), t), Some(ip("10.9.8.1")));
        assert_eq!(m.lookup(ip("10.9.8.2"), t), Lookup::Name(name(2)));
        // Name 128 forgets name 3, the least recently used.
        assert_eq!(m.resolve(&name(128), t), Some(ip("10.9.8.128")));
        assert_eq!((m.len(), m.held()), (127, 1));
        assert_eq!(m.lookup(ip("10.9.8.3"), t), Lookup::Unmapped);
        assert_eq!(m.lookup(ip("10.9.8.1"), t), Lookup::Name(name(1)));
        // Name 3 comes back at a new address; name 4 goes.
        assert_eq!(m.resolve(&name(3), t), Some(ip("10.9.8.129")));
        assert_eq!(m.lookup(ip("10.9.8.4"), t), Lookup::Unmapped);
        // Fill the held list: 127 addresses held back in all.
        for i in 129..=253 {
            assert!(m.resolve(&name(i), t).is_some(), "{i}");
        }
        assert_eq!((m.len(), m.held()), (127, 127));
        // Every address is mapped or held: refused, and nothing forgotten for it.
        assert_eq!(m.resolve("new.i2p", t), None);
        assert_eq!((m.len(), m.held()), (127, 127));
        // Names already mapped still answer.
        let kept = m.resolve(&name(253), t).unwrap();
        assert_eq!(m.resolve(&name(253), t), Some(kept));
        // Once the held addresses are released the new name gets one: the
        // cursor wrapped, so the first free one from the start (.1 was still
        // name 1's, .2 was name 2's until it was forgotten). Name 1, now the
        // least recently used, makes room for it.
        let later = t + QUARANTINE;
        assert_eq!(m.resolve("new.i2p", later), Some(ip("10.9.8.2")));
        assert_eq!(m.lookup(ip("10.9.8.2"), later), Lookup::Name("new.i2p".into()));
        assert_eq!(m.lookup(ip("10.9.8.1"), later), Lookup::Unmapped);
        assert_eq!(m.held(), 1);
    }

    #[test]
    fn held_back_for_the_whole_quarantine() {
        let t = Instant::now();
        let mut m = VirtualMap::new(net("10.9.8.0/24"), 0);
        for i in 1..=128 {
            m.resolve(&name(i), t);
        }
        // 10.9.8.1 (name 1) is held; a second before its release it is not given.
        assert_eq!(m.held(), 1);
        let almost = t + QUARANTINE - Duration::from_secs(1);
        assert_eq!(m.lookup(ip("10.9.8.1"), almost), Lookup::Unmapped);
        assert_eq!(m.held(), 1);
        assert_eq!(m.lookup(ip("10.9.8.1"), t + QUARANTINE), Lookup::Unmapped);
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn full_default_range_is_bounded() {
        let t = Instant::now();
        let mut m = VirtualMap::new(DEFAULT, 12_345);
        for i in 0..MAX_NAMES + 10 {
            assert!(m.resolve(&name(i), t).is_some());
        }
        assert_eq!((m.len(), m.held()), (MAX_NAMES, 10));
        assert_eq!(m.lru.len(), MAX_NAMES);
        assert_eq!(m.by_addr.len(), MAX_NAMES);
        // Every mapped address is unique and maps back.
        for i in 10..MAX_NAMES + 10 {
            let a = m.resolve(&name(i), t).unwrap();
            assert_eq!(m.lookup(a, t), Lookup::Name(name(i)));
        }
    }
}
