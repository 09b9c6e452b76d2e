//! HTTP: the router, the handlers and static files.
pub mod body;
pub mod static_files;

pub use body::Body;
