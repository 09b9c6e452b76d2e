//! `GET /openapi.json`: the OpenAPI 3.1 document, served as JSON with an
//! ETag to revalidate against. (`src/http/openapi.rs` holds it to the
//! router; `.ci/schemathesis.sh` holds the server to it.)

use hyper::{Method, StatusCode};

use crate::support::TestServer;

#[tokio::test]
async fn serves_the_openapi_3_1_document_as_json() {
    let s = TestServer::start().await;
    let r = s.raw(Method::GET, "/openapi.json", None, None, Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["cache-control"], "no-cache");
    let version = r.json["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert!(r.json["paths"]["/api/chat/rooms"]["post"].is_object());
    assert!(r.json["paths"]["/openapi.json"]["get"].is_object(), "the document describes itself");

    let etag = r.headers["etag"].to_str().expect("etag").to_owned();
    let again = s.raw_with(Method::GET, "/openapi.json", None, None, Vec::new(), &[("if-none-match", &etag)]).await;
    assert_eq!((again.status, again.body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(again.headers["etag"], etag.as_str());

    let post = s.raw(Method::POST, "/openapi.json", None, None, Vec::new()).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET");
}
