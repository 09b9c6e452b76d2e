//! Authentication: Argon2id password hashes and HS256 JWTs, and the one
//! function that turns a request's credentials into a user id.

pub mod jwt;
pub mod password;
pub mod tokens;

pub use jwt::{AuthError, Keys, Verified};
pub use tokens::TokenState;
