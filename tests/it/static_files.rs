//! `GET /static/...` and `GET /` over real HTTP: headers, ETag/304, Range,
//! and every traversal spelling.

use hyper::{Method, StatusCode};

use crate::support::TestServer;

#[tokio::test]
async fn serves_files_with_caching_and_ranges() {
    let s = TestServer::start().await;
    let dir = s.static_dir();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>chatd</title>").unwrap();
    let pdf = dir.join("chat_files/files/user_1_20240101_120000_0_doc.pdf");
    let body: Vec<u8> = b"%PDF-1.4\n".iter().copied().chain((0..1000u32).map(|i| i as u8)).collect();
    std::fs::write(&pdf, &body).unwrap();

    let index = s.raw(Method::GET, "/", None, None, Vec::new()).await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(index.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(index.text().contains("chatd"));

    let path = "/static/chat_files/files/user_1_20240101_120000_0_doc.pdf";
    let full = s.raw(Method::GET, path, None, None, Vec::new()).await;
    assert_eq!((full.status, full.body.to_vec()), (StatusCode::OK, body.clone()));
    let h = &full.headers;
    assert_eq!(h["content-type"], "application/pdf");
    assert_eq!(h["content-length"], body.len().to_string().as_str());
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-disposition"].to_str().unwrap().starts_with("attachment"));
    assert!(h.contains_key("last-modified"));
    let etag = h["etag"].to_str().unwrap().to_owned();

    let cached = s.raw_with(Method::GET, path, None, None, Vec::new(), &[("if-none-match", &etag)]).await;
    assert_eq!((cached.status, cached.body.len()), (StatusCode::NOT_MODIFIED, 0));
    let part = s.raw_with(Method::GET, path, None, None, Vec::new(), &[("range", "bytes=2-9")]).await;
    assert_eq!((part.status, part.body.to_vec()), (StatusCode::PARTIAL_CONTENT, body[2..10].to_vec()));
    assert_eq!(part.headers["content-range"], format!("bytes 2-9/{}", body.len()).as_str());
    let tail = s.raw_with(Method::GET, path, None, None, Vec::new(), &[("range", "bytes=-5")]).await;
    assert_eq!(tail.body.to_vec(), body[body.len() - 5..].to_vec());
    let beyond = s.raw_with(Method::GET, path, None, None, Vec::new(), &[("range", "bytes=5000-")]).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers["content-range"], format!("bytes */{}", body.len()).as_str());
    s.stop().await;
}

#[tokio::test]
async fn nothing_outside_the_static_folder_is_reachable() {
    let s = TestServer::start().await;
    std::fs::write(s.state.config.data_dir.join("secret.txt"), "top secret").unwrap();
    for path in [
        "/static/../data/secret.txt",
        "/static/%2e%2e/data/secret.txt",
        "/static/chat_files/..%2f..%2fdata/secret.txt",
        "/static/chat_files%2f..%2f..%2fdata%2fsecret.txt",
        "/static/..%5cdata%5csecret.txt",
        "/static/chat_files",
        "/static/chat_files/",
        "/static//etc/passwd",
        "/static/%00",
        "/static/.hidden",
    ] {
        let r = s.raw(Method::GET, path, None, None, Vec::new()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!r.text().contains("top secret"), "{path}");
    }
    s.stop().await;
}
