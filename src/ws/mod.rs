//! WebSocket: the upgrade (`upgrade`), one task pair per connection
//! (`connection`), and the pure client-protocol parser (`protocol`).

pub mod connection;
pub mod protocol;
pub mod upgrade;
