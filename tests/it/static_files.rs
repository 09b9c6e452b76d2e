//! `GET /static/...` and `GET /` over real HTTP: headers, ETag/304, Range,
//! every traversal spelling, and the web client's security headers (with a
//! check that the client needs no inline script or style to live with them).

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

    let link = s.file_link("chat_files/files/user_1_20240101_120000_0_doc.pdf");
    let path = link.as_str();
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

/// The repository's web client, the files that `GET /` and `/static/` serve.
fn client_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static")
}

fn client_files(ext: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(client_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .map(|path| (path.display().to_string(), std::fs::read_to_string(&path).unwrap()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .{ext} files in {}", client_dir().display());
    files
}

#[tokio::test]
async fn the_web_client_is_served_with_csp_referrer_and_frame_headers() {
    let s = TestServer::start().await;
    for (path, _) in client_files("html").into_iter().chain(client_files("js")).chain(client_files("css")) {
        let path = std::path::Path::new(&path);
        std::fs::copy(path, s.static_dir().join(path.file_name().unwrap())).unwrap();
    }
    let csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
               media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
               form-action 'self'; frame-ancestors 'none'";
    for path in ["/", "/static/index.html", "/static/app.js", "/static/style.css"] {
        let r = s.raw(Method::GET, path, None, None, Vec::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.headers["content-security-policy"], csp, "{path}");
        assert_eq!(r.headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(r.headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(r.headers["x-content-type-options"], "nosniff", "{path}");
    }
    let index = s.raw(Method::GET, "/", None, None, Vec::new()).await;
    assert!(index.text().contains("<script type=\"module\" src=\"/static/app.js\">"), "the real client is served");

    // Stored files keep their sandbox and get the referrer policy too.
    let stored = s.static_dir().join("chat_files/images/user_1_20240101_120000_0_a.png");
    std::fs::write(&stored, b"\x89PNG\r\n\x1a\n").unwrap();
    let path = s.file_link("chat_files/images/user_1_20240101_120000_0_a.png");
    let r = s.raw(Method::GET, &path, None, None, Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-security-policy"], "default-src 'none'; sandbox");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    s.stop().await;
}

/// What the client's CSP forbids, as it would appear in the source: inline
/// scripts, inline event handler attributes and `style` attributes, and HTML
/// built from strings (where such attributes could hide).
#[test]
fn the_web_client_has_no_inline_script_handlers_or_style_attributes() {
    for (path, html) in client_files("html") {
        let lower = html.to_ascii_lowercase();
        for (at, _) in lower.match_indices("<script") {
            let tag = &lower[at..at + lower[at..].find('>').unwrap()];
            assert!(tag.contains(" src="), "{path}: an inline script: {tag}");
        }
        assert!(!lower.contains("<style"), "{path}: a <style> element");
        assert!(!lower.contains("javascript:"), "{path}: a javascript: URL");
        for (at, _) in lower.match_indices(char::is_whitespace) {
            let attribute: String =
                lower[at + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            let rest = &lower[at + 1 + attribute.len()..];
            if rest.trim_start().starts_with('=') {
                assert!(!attribute.starts_with("on"), "{path}: an inline handler {attribute}=");
                assert_ne!(attribute, "style", "{path}: a style attribute");
            }
        }
    }
    for (path, js) in client_files("js") {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "style=",
            "style:",
            "'style'",
            "\"style\"",
            "eval(",
            "new Function",
            "javascript:",
        ] {
            assert!(!js.contains(forbidden), "{path} contains {forbidden:?}");
        }
    }
}
