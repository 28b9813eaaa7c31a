//! placeholder replaced by the admin benchmark helper
fn main() {}
