//! WebSocket: one task pair per connection (`connection`) and the pure
//! client-protocol parser (`protocol`). The upgrade itself is an HTTP
//! handler (`http::upgrade`); nothing here imports `http`.

pub mod connection;
#[doc(hidden)]
pub mod fuzz;
pub mod metered;
pub mod protocol;
