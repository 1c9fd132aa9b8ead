pub mod fake_sam;
pub mod proxy;
