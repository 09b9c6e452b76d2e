//! Authentication: Argon2id password hashes and HS256 JWTs, and the one
//! function that turns a request's credentials into a user id.

pub mod jwt;
pub mod password;

pub use jwt::{AuthError, Keys};
