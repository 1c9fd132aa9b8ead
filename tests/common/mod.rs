//! Shared integration-test helpers. Each test binary compiles all of them and uses some, so
//! unused-item warnings are off here.

#![allow(dead_code)]

pub mod fake_sam;
pub mod http;
pub mod i2pd;
pub mod proxy;
pub mod sam_client;
pub mod udp_client;
