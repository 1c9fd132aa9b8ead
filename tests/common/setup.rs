//! A proxy on a fake bridge, as the fake-bridge tests start one: the real binary with
//! `--hops 0 --tunnels 1` on a [`FakeSam`], handed back once its default session is up
//! on both sides (the proxy logged it, the fake holds its control socket). Unless `args`
//! say otherwise it builds no spare sessions, so that the fake's sessions are the default
//! identity's and those made on demand, which the tests count (tests/spares.rs starts
//! its own proxies).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::fake_sam::{FakeSam, Script, WAIT};
use super::proxy::{bridge_args, Proxy, NO_SPARES, READY};

/// A fake with `script` and a proxy on it (`args` added), once the session is up.
pub fn setup(script: Script, args: &[&str]) -> (FakeSam, Proxy) {
    setup_wrapped(&[], script, args)
}

/// [`setup`] with the proxy run through `wrapper` (see [`Proxy::start_wrapped`]).
pub fn setup_wrapped(wrapper: &[&str], script: Script, args: &[&str]) -> (FakeSam, Proxy) {
    let fake = FakeSam::start(script);
    let p = start_on(&fake, wrapper, args);
    (fake, p)
}

/// A proxy on `fake`, which may have served others before: returned once it logged
/// [`READY`] and the fake has one more session, with a live control socket.
pub fn start_on(fake: &FakeSam, wrapper: &[&str], args: &[&str]) -> Proxy {
    let sam = fake.addr_arg();
    let before = fake.sessions().len();
    let mut all = args.to_vec();
    if !args.contains(&NO_SPARES[0]) {
        all.extend(NO_SPARES);
    }
    let p = Proxy::start_wrapped(wrapper, &bridge_args(&sam, &all));
    assert!(p.wait_for_line(READY, WAIT).is_some(), "no `{READY}` line");
    // The fake records a session, and its control socket, before it answers.
    assert!(fake.wait_sessions(before + 1, WAIT), "no session recorded by the fake");
    assert!(fake.wait_live_session(WAIT), "no live session on the fake");
    p
}
