//! WebSocket: the upgrade (`upgrade`), one task pair per connection
//! (`connection`), and the pure client-protocol parser (`protocol`).

pub mod connection;
#[doc(hidden)]
pub mod fuzz;
pub mod protocol;
pub mod upgrade;
