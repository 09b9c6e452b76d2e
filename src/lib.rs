//! chatd: a small, fast chat server.
pub mod attach;
pub mod http;
