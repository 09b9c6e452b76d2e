//! The fuzz harness of the REST router, shared by the cargo-fuzz target in
//! `fuzz/` and by `tests/fuzz_corpus.rs`. It panics when an invariant
//! breaks; that is its whole purpose, so nothing else may call it.

use hyper::Method;

use super::router::{self, Endpoint, Route};

/// `route` on any method and path never panics; every id it captures is
/// positive; a 405 never lists the method it refused. Input: `METHOD path`
/// (without a space: a GET of the whole input). Returns whether it matched.
pub fn route(data: &[u8]) -> bool {
    let (method, path) = match data.iter().position(|&b| b == b' ') {
        Some(space) => (Method::from_bytes(&data[..space]).unwrap_or(Method::GET), &data[space + 1..]),
        None => (Method::GET, data),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return false;
    };
    match router::route(&method, path) {
        Route::Found(endpoint) => {
            let id = match endpoint {
                Endpoint::GetRoom(id)
                | Endpoint::Messages(id)
                | Endpoint::MarkRead(id)
                | Endpoint::EditMessage(id)
                | Endpoint::DeleteMessage(id)
                | Endpoint::Like(id)
                | Endpoint::Unlike(id)
                | Endpoint::RenameRoom(id)
                | Endpoint::Members(id)
                | Endpoint::AddMembers(id)
                | Endpoint::AddReaction(id)
                | Endpoint::RemoveReaction(id) => id,
                Endpoint::RemoveMember(room, user) | Endpoint::SetRole(room, user) => room.min(user),
                _ => 1,
            };
            assert!(id > 0, "{method} {path:?} → {endpoint:?}");
            true
        }
        Route::MethodNotAllowed { allow } => {
            assert!(!allow.split(", ").any(|m| m == method.as_str()), "{method} {path:?} refused with Allow: {allow}");
            false
        }
        Route::NotFound | Route::BadId(_) => false,
    }
}
