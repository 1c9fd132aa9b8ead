pub mod fake_sam;
pub mod proxy;
pub mod udp_client;
