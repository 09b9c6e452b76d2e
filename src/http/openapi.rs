//! `GET /openapi.json`: the hand-written OpenAPI 3.1 document of the REST
//! API (`openapi.json` beside this file), served as it is. Its tests hold it
//! to the router: every endpoint documented, every documented path routed.

use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};

use crate::http::body::{self, Body};
use crate::http::static_files;

/// The document, compiled into the binary.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// FNV-1a of the document, computed at compile time: the ETag changes
/// exactly when the document does.
const HASH: u64 = {
    let bytes = DOCUMENT.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
};

/// The document with the web client's cache policy: revalidate every time,
/// 304 when the client's `If-None-Match` holds the current ETag.
pub fn serve(headers: &HeaderMap) -> Response<Body> {
    let etag = format!("\"{HASH:016x}\"");
    let not_modified = static_files::none_match(headers, &etag);
    let mut response = Response::new(if not_modified { body::empty() } else { body::full(DOCUMENT) });
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(ETAG, value);
    }
    out.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !not_modified {
        out.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use hyper::Method;
    use serde_json::Value;

    use super::DOCUMENT;
    use crate::http::router::{ROUTE_NAMES, Route, UNMATCHED, route};

    /// Methods a document path may list, as OpenAPI spells them.
    const METHODS: [&str; 6] = ["get", "head", "post", "put", "patch", "delete"];

    /// One request per endpoint and the documented path it belongs to. When
    /// an endpoint is added to the router, `every_endpoint_is_documented`
    /// fails until it has a line here, and then until the document has it.
    const SAMPLES: &[(&str, &str, &str)] = &[
        ("get", "/", "/"),
        ("get", "/static/app.js", "/static/{path}"),
        ("get", "/healthz", "/healthz"),
        ("get", "/metrics", "/metrics"),
        ("get", "/openapi.json", "/openapi.json"),
        ("post", "/api/auth/register", "/api/auth/register"),
        ("post", "/api/auth/login", "/api/auth/login"),
        ("get", "/api/auth/me", "/api/auth/me"),
        ("post", "/api/auth/password", "/api/auth/password"),
        ("post", "/api/auth/logout", "/api/auth/logout"),
        ("get", "/api/chat/search-users", "/api/chat/search-users"),
        ("get", "/api/chat/rooms", "/api/chat/rooms"),
        ("post", "/api/chat/rooms", "/api/chat/rooms"),
        ("get", "/api/chat/rooms/3", "/api/chat/rooms/{room_id}"),
        ("patch", "/api/chat/rooms/3", "/api/chat/rooms/{room_id}"),
        ("get", "/api/chat/rooms/3/members", "/api/chat/rooms/{room_id}/members"),
        ("post", "/api/chat/rooms/3/members", "/api/chat/rooms/{room_id}/members"),
        ("delete", "/api/chat/rooms/3/members/9", "/api/chat/rooms/{room_id}/members/{user_id}"),
        ("patch", "/api/chat/rooms/3/members/9", "/api/chat/rooms/{room_id}/members/{user_id}"),
        ("get", "/api/chat/rooms/3/messages", "/api/chat/rooms/{room_id}/messages"),
        ("post", "/api/chat/rooms/3/read", "/api/chat/rooms/{room_id}/read"),
        ("put", "/api/chat/messages/7", "/api/chat/messages/{message_id}"),
        ("delete", "/api/chat/messages/7", "/api/chat/messages/{message_id}"),
        ("post", "/api/chat/messages/7/like", "/api/chat/messages/{message_id}/like"),
        ("delete", "/api/chat/messages/7/like", "/api/chat/messages/{message_id}/like"),
        ("post", "/api/chat/messages/7/reactions", "/api/chat/messages/{message_id}/reactions"),
        ("delete", "/api/chat/messages/7/reactions/%F0%9F%91%8D", "/api/chat/messages/{message_id}/reactions/{emoji}"),
        ("post", "/api/chat/messages/7/forward", "/api/chat/messages/{message_id}/forward"),
        ("post", "/api/chat/messages/7/files/0/share", "/api/chat/messages/{message_id}/files/{index}/share"),
        ("get", "/api/chat/unread-count", "/api/chat/unread-count"),
        ("get", "/api/chat/online-users", "/api/chat/online-users"),
        ("get", "/api/chat/ws", "/api/chat/ws"),
        ("get", "/api/chat/events", "/api/chat/events"),
        ("get", "/api/chat/search", "/api/chat/search"),
        ("get", "/api/chat/scheduled", "/api/chat/scheduled"),
        ("delete", "/api/chat/scheduled/4", "/api/chat/scheduled/{scheduled_id}"),
        ("post", "/api/chat/uploads", "/api/chat/uploads"),
        ("head", "/api/chat/uploads/abc", "/api/chat/uploads/{upload_id}"),
        ("patch", "/api/chat/uploads/abc", "/api/chat/uploads/{upload_id}"),
        ("get", "/api/chat/export", "/api/chat/export"),
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    fn method(name: &str) -> Method {
        Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("a method")
    }

    /// A documented path with a sample value in place of each `{parameter}`.
    fn concrete(template: &str) -> String {
        template
            .split('/')
            .map(|segment| match segment {
                "{emoji}" => "%F0%9F%91%8D",
                "{upload_id}" => "abc",
                "{path}" => "app.js",
                "{index}" => "0",
                s if s.starts_with('{') => "5",
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_endpoint_is_documented() {
        let doc = document();
        let mut covered = BTreeSet::new();
        for (name, path, template) in SAMPLES {
            let Route::Found(endpoint) = route(&method(name), path) else {
                panic!("{name} {path} does not route to an endpoint");
            };
            covered.insert(endpoint.index());
            assert!(
                doc["paths"][template][name].is_object(),
                "{name} {template} ({:?}) is missing from openapi.json",
                endpoint
            );
        }
        let missing: Vec<_> = (0..UNMATCHED).filter(|i| !covered.contains(i)).map(|i| ROUTE_NAMES[i]).collect();
        assert!(missing.is_empty(), "endpoints without a sample (and so maybe undocumented): {missing:?}");
    }

    #[test]
    fn every_documented_operation_routes_and_other_methods_are_405() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        assert!(!paths.is_empty());
        for (template, item) in paths {
            let path = concrete(template);
            let documented: HashSet<&str> = METHODS.iter().copied().filter(|m| item[m].is_object()).collect();
            assert!(!documented.is_empty(), "{template} has no operation");
            for name in METHODS {
                let routed = route(&method(name), &path);
                if documented.contains(name) {
                    assert!(matches!(routed, Route::Found(_)), "{name} {template} ({path}) routes to {routed:?}");
                } else if let Route::MethodNotAllowed { allow } = routed {
                    let allowed: HashSet<String> = allow.split(", ").map(str::to_ascii_lowercase).collect();
                    let listed: HashSet<String> = documented.iter().map(|m| m.to_string()).collect();
                    assert_eq!(allowed, listed, "Allow of {template} and its documented methods");
                } else {
                    panic!("{name} {template} is not documented but routes to {routed:?}");
                }
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = document();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "openapi: {}", doc["openapi"]);
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for reference in refs {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("{reference} is not local"));
            assert!(doc.pointer(pointer).is_some(), "{reference} does not resolve");
        }
    }

    #[test]
    fn every_operation_has_an_id_and_lists_its_statuses() {
        let doc = document();
        let mut ids = HashSet::new();
        for (template, item) in doc["paths"].as_object().expect("paths") {
            for name in METHODS {
                let Some(operation) = item.get(name) else { continue };
                let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{name} {template}: no id"));
                assert!(ids.insert(id.to_owned()), "operationId {id} twice");
                let responses = operation["responses"].as_object().expect("responses");
                assert!(!responses.contains_key("default"), "{id}: every status is listed, no default");
                assert!(!responses.contains_key("500"), "{id}: 500 is a bug, never a documented answer");
                // Every authenticated operation can answer 401.
                let open = operation.get("security").is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
                assert!(open || responses.contains_key("401"), "{id} needs a token but lists no 401");
            }
        }
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(reference)) = map.get("$ref") {
                    out.push(reference.clone());
                }
                map.values().for_each(|v| collect_refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
