//! Static files: the web client and stored attachments under the static dir.
//! `resolve` is the pure path check (no `..`, no encoded separators, no hidden
//! files); `serve` opens, validates with ETag/Range and streams in chunks,
//! never reading a whole file into memory.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::attach::CHAT_FILES_DIR;
use crate::attach::civil::UtcDateTime;
use crate::http::body::{self, Body};

/// The URL prefix that maps onto the static dir.
pub const STATIC_PREFIX: &str = "/static/";
/// Bytes read from disk per body frame.
const STREAM_CHUNK_BYTES: usize = 64 * 1024;
/// Stored attachments never change under their name (names are never reused).
const CACHE_STORED: &str = "private, max-age=31536000, immutable";
/// The web client changes on deploy: revalidate with the ETag every time.
const CACHE_CLIENT: &str = "no-cache";
/// The web client's policy: its own scripts and styles only, never inline
/// ones, so text that slips into the page cannot run. `blob:` images and
/// media are the previews of files before they are sent; the WebSocket is
/// on `ws:` or `wss:`.
pub const CLIENT_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// A stored file is data, never a document of this origin.
pub const STORED_CSP: &str = "default-src 'none'; sandbox";

/// Maps a raw request path onto a file under `static_dir`: `/` is
/// `index.html`, `/static/<rest>` is `<rest>`; anything else is `None` (404).
///
/// Refused: `..` and `.` segments, hidden files (a segment starting with
/// '.'), empty segments (`//`, a trailing `/`), percent-encoded `/`, `\` or
/// NUL, backslashes, control characters, `:` and invalid percent-encoding or
/// UTF-8. Whether the path is a directory is found out by `serve`. Symbolic
/// links inside the static dir are followed: only the operator can make them.
pub fn resolve(static_dir: &Path, raw_path: &str) -> Option<PathBuf> {
    let path = raw_path.split(['?', '#']).next().unwrap_or("");
    if path == "/" {
        return Some(static_dir.join("index.html"));
    }
    let rest = path.strip_prefix(STATIC_PREFIX)?;
    let decoded = percent_decode(rest)?;
    let mut resolved = static_dir.to_path_buf();
    for segment in decoded.split('/') {
        if !is_plain_segment(segment) {
            return None;
        }
        resolved.push(segment);
    }
    Some(resolved)
}

/// Serves GET or HEAD of a static file. See the module documentation and
/// SPEC 4 for the headers; 404 `{"detail":"Not found"}` for anything missing,
/// a directory or outside the static dir.
pub async fn serve(static_dir: &Path, raw_path: &str, method: &Method, headers: &HeaderMap) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = json_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(path) = resolve(static_dir, raw_path) else {
        return not_found();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) => return open_failed(&path, error),
    };
    let metadata = match file.metadata().await {
        Ok(metadata) => metadata,
        Err(error) => return open_failed(&path, error),
    };
    if !metadata.is_file() {
        return not_found();
    }
    let len = metadata.len();
    let modified = metadata.modified().ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok());
    let etag = format!("\"{len:x}-{:x}\"", modified.map_or(0, |since| since.as_nanos()));
    let last_modified = modified
        .map(|since| UtcDateTime::from_unix_secs(i64::try_from(since.as_secs()).unwrap_or(i64::MAX)).http_date());

    let segments: Vec<&str> = path
        .strip_prefix(static_dir)
        .map(|rel| rel.iter().filter_map(|part| part.to_str()).collect())
        .unwrap_or_default();
    let kind = ContentKind::of(&segments);
    let mut response = Response::new(body::empty());
    {
        let out = response.headers_mut();
        insert(out, header::ETAG, &etag);
        if let Some(date) = &last_modified {
            insert(out, header::LAST_MODIFIED, date);
        }
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static(kind.cache_control));
        out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind.content_type));
        if let Some(disposition) = &kind.disposition {
            insert(out, header::CONTENT_DISPOSITION, disposition);
        }
        let policy = if kind.stored { STORED_CSP } else { CLIENT_CSP };
        out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
        // Links out of the chat must not carry the room's file URLs along.
        out.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        // For browsers that predate CSP's frame-ancestors: no clickjacking frames.
        out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }

    if none_match(headers, &etag) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    let range = if if_range_holds(headers, &etag, last_modified.as_deref()) {
        parse_range(headers.get(header::RANGE), len)
    } else {
        ByteRange::Whole
    };
    let (start, count) = match range {
        ByteRange::Whole => (0, len),
        ByteRange::Part { start, end } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            insert(response.headers_mut(), header::CONTENT_RANGE, &format!("bytes {start}-{end}/{len}"));
            (start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let out = response.headers_mut();
            insert(out, header::CONTENT_RANGE, &format!("bytes */{len}"));
            out.insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return response;
        }
    };
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if method == Method::HEAD || count == 0 {
        return response;
    }
    match stream_file(file, start, count).await {
        Ok(body) => {
            *response.body_mut() = body;
            response
        }
        Err(error) => open_failed(&path, error),
    }
}

/// Fuzz harness shared by `fuzz/` and `tests/fuzz_corpus.rs`: whatever
/// `resolve` accepts lies strictly below the static dir, made of plain
/// segments only. Panics when that breaks; nothing else may call it.
#[doc(hidden)]
pub fn fuzz_static_path(data: &[u8]) {
    use std::path::Component;
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let root = Path::new("/srv/static");
    let Some(path) = resolve(root, raw) else {
        return;
    };
    let rel = path.strip_prefix(root);
    assert!(rel.is_ok(), "{raw:?} -> {}", path.display());
    let rel = rel.unwrap_or(Path::new(""));
    assert!(rel.components().next().is_some(), "{raw:?} -> the root itself");
    for component in rel.components() {
        let plain = matches!(component, Component::Normal(part)
            if part.to_str().is_some_and(is_plain_segment));
        assert!(plain, "{raw:?} -> {}", path.display());
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape, an encoded `/`,
/// `\` or NUL, or bytes that are not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let byte = u8::from_str_radix(hex, 16).ok()?;
            if matches!(byte, b'/' | b'\\' | 0) {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn is_plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 255
        && !segment.starts_with('.')
        && !segment.contains(['\\', ':'])
        && !segment.chars().any(char::is_control)
}

/// How a file is presented: its type, whether it downloads, how long it caches.
struct ContentKind {
    content_type: &'static str,
    disposition: Option<String>,
    cache_control: &'static str,
    /// Under `chat_files/`: uploaded by users.
    stored: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Presentation {
    /// Shown inline anywhere.
    Image,
    /// Part of the web client: inline outside `chat_files/` only.
    ClientAsset,
    /// Always `Content-Disposition: attachment`.
    Download,
}

impl ContentKind {
    /// `segments`: the path below the static dir, e.g. `["chat_files", "images", "a.png"]`.
    fn of(segments: &[&str]) -> ContentKind {
        let stored = segments.len() > 1 && segments[0] == CHAT_FILES_DIR;
        let name = segments.last().copied().unwrap_or("");
        let ext = name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
        let (mut content_type, mut presentation) = content_type_of(&ext);
        if stored && presentation == Presentation::ClientAsset {
            // Uploads cannot have these types; if one appears, never render it.
            content_type = "application/octet-stream";
            presentation = Presentation::Download;
        }
        let disposition = (presentation == Presentation::Download).then(|| {
            let download = if stored { original_name(name) } else { name };
            let safe = !download.is_empty()
                && download.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if safe { format!("attachment; filename=\"{download}\"") } else { "attachment".to_owned() }
        });
        ContentKind {
            content_type,
            disposition,
            cache_control: if stored { CACHE_STORED } else { CACHE_CLIENT },
            stored,
        }
    }
}

fn content_type_of(ext: &str) -> (&'static str, Presentation) {
    use Presentation::{ClientAsset, Download, Image};
    match ext {
        "jpg" | "jpeg" => ("image/jpeg", Image),
        "png" => ("image/png", Image),
        "gif" => ("image/gif", Image),
        "webp" => ("image/webp", Image),
        "html" | "htm" => ("text/html; charset=utf-8", ClientAsset),
        "js" | "mjs" => ("text/javascript; charset=utf-8", ClientAsset),
        "css" => ("text/css; charset=utf-8", ClientAsset),
        "svg" => ("image/svg+xml", ClientAsset),
        "ico" => ("image/x-icon", ClientAsset),
        "json" | "map" => ("application/json", ClientAsset),
        "webmanifest" => ("application/manifest+json", ClientAsset),
        "woff" => ("font/woff", ClientAsset),
        "woff2" => ("font/woff2", ClientAsset),
        "wasm" => ("application/wasm", ClientAsset),
        "pdf" => ("application/pdf", Download),
        "doc" => ("application/msword", Download),
        "docx" => ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", Download),
        "xls" => ("application/vnd.ms-excel", Download),
        "xlsx" => ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Download),
        "txt" => ("text/plain; charset=utf-8", Download),
        "zip" => ("application/zip", Download),
        "rar" => ("application/vnd.rar", Download),
        "mp3" => ("audio/mpeg", Download),
        "wav" => ("audio/wav", Download),
        _ => ("application/octet-stream", Download),
    }
}

/// `user_<uid>_<YYYYMMDD>_<HHMMSS>_<index>_<name>` → `<name>`, so a download
/// gets the sanitised name the sender gave; any other name is kept whole.
fn original_name(stored: &str) -> &str {
    let mut parts = stored.splitn(6, '_');
    let prefix_ok = parts.next() == Some("user")
        && (0..4).all(|_| parts.next().is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())));
    match parts.next() {
        Some(name) if prefix_ok && !name.is_empty() => name,
        _ => stored,
    }
}

/// True when an `If-None-Match` header matches `etag` (weak comparison, as
/// RFC 9110 asks for this header).
pub(crate) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// False when `If-Range` names another version: then the whole file is sent.
fn if_range_holds(headers: &HeaderMap, etag: &str, last_modified: Option<&str>) -> bool {
    let Some(value) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let value = value.to_str().unwrap_or("").trim();
    value == etag || last_modified == Some(value)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ByteRange {
    Whole,
    /// Inclusive, within the file.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// One `bytes=a-b`, `a-` or `-n` range. Several ranges, other units and
/// malformed headers get the whole file, as RFC 9110 allows.
fn parse_range(value: Option<&HeaderValue>, len: u64) -> ByteRange {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return ByteRange::Whole;
    };
    let value = value.trim();
    let spec = match value.get(..6) {
        Some(unit) if unit.eq_ignore_ascii_case("bytes=") => &value[6..],
        _ => return ByteRange::Whole,
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return match parse_digits(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(suffix) => ByteRange::Part { start: len - suffix.min(len), end: len - 1 },
            None => ByteRange::Whole,
        };
    }
    let Some(start) = parse_digits(first) else {
        return ByteRange::Whole;
    };
    let end = if last.is_empty() {
        None
    } else {
        match parse_digits(last) {
            Some(end) if end >= start => Some(end),
            _ => return ByteRange::Whole,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part { start, end: end.map_or(len - 1, |end| end.min(len - 1)) }
}

fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // More digits than u64 holds: far past any file's end.
    Some(text.parse().unwrap_or(u64::MAX))
}

async fn stream_file(mut file: tokio::fs::File, start: u64, count: u64) -> io::Result<Body> {
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    let chunks = ReaderStream::with_capacity(file.take(count), STREAM_CHUNK_BYTES);
    Ok(StreamBody::new(chunks.map_ok(Frame::data)).boxed_unsync())
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    // Every value here is built from ASCII; a failure would only drop a header.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn open_failed(path: &Path, error: io::Error) -> Response<Body> {
    use io::ErrorKind::{InvalidFilename, IsADirectory, NotADirectory, NotFound};
    match error.kind() {
        NotFound | NotADirectory | IsADirectory | InvalidFilename => not_found(),
        _ => {
            tracing::warn!(path = %path.display(), %error, "could not read a static file");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
    }
}

pub fn not_found() -> Response<Body> {
    json_error(StatusCode::NOT_FOUND, "Not found")
}

fn json_error(status: StatusCode, detail: &'static str) -> Response<Body> {
    let text = format!("{{\"detail\":\"{detail}\"}}");
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn resolve_maps_root_and_static_paths_only() {
        let dir = Path::new("/srv/static");
        let cases = [
            ("/", Some("/srv/static/index.html")),
            ("/?v=3", Some("/srv/static/index.html")),
            ("/static/chat_files/images/a.png", Some("/srv/static/chat_files/images/a.png")),
            ("/static/app.js?v=1#x", Some("/srv/static/app.js")),
            ("/static/a%20b.txt", Some("/srv/static/a b.txt")),
            ("/static/%D1%84.txt", Some("/srv/static/ф.txt")),
            ("/static/a..b.txt", Some("/srv/static/a..b.txt")),
            ("/app.js", None),
            ("/index.html", None),
            ("/static", None),
            ("/static/", None),
            ("/staticx/a", None),
            ("", None),
        ];
        for (raw, want) in cases {
            assert_eq!(resolve(dir, raw), want.map(PathBuf::from), "{raw}");
        }
    }

    #[test]
    fn resolve_refuses_traversal_in_every_spelling() {
        let dir = Path::new("/srv/static");
        let refused = [
            "/static/../etc/passwd",
            "/static/chat_files/../../etc/passwd",
            "/static/./index.html",
            "/static/%2e%2e/etc/passwd",
            "/static/%2E%2E/secret",
            "/static/.%2e/secret",
            "/static/..%2fetc%2fpasswd",
            "/static/..%2Fetc",
            "/static/a%2fb",
            "/static/a%5cb",
            "/static/a%5C..%5Cb",
            "/static/..\\etc\\passwd",
            "/static/a\\b",
            "/static//etc/passwd",
            "/static/chat_files//a.png",
            "/static/chat_files/images/",
            "/static/%00",
            "/static/a%00.png",
            "/static/a\0.png",
            "/static/.env",
            "/static/.git/config",
            "/static/chat_files/images/.tmp-0123abcd",
            "/static/C:/Windows",
            "/static/a%",
            "/static/a%2",
            "/static/a%zz",
            "/static/%ff.txt",
            "/static/a%0a.txt",
            "//etc/passwd",
            "/../etc/passwd",
            "/etc/passwd",
        ];
        for raw in refused {
            assert_eq!(resolve(dir, raw), None, "{raw}");
        }
    }

    #[test]
    fn range_headers_parse_to_one_range_or_the_whole_file() {
        let len = 1000;
        let part = |start, end| ByteRange::Part { start, end };
        let cases = [
            ("bytes=0-99", part(0, 99)),
            ("bytes=100-", part(100, 999)),
            ("bytes=-100", part(900, 999)),
            ("bytes=-5000", part(0, 999)),
            ("bytes=990-5000", part(990, 999)),
            ("Bytes = 5-5", ByteRange::Whole),
            ("BYTES=5-5", part(5, 5)),
            ("bytes= 1-2 ", part(1, 2)),
            ("bytes=1000-", ByteRange::Unsatisfiable),
            ("bytes=5000-6000", ByteRange::Unsatisfiable),
            ("bytes=-0", ByteRange::Unsatisfiable),
            ("bytes=99999999999999999999999-", ByteRange::Unsatisfiable),
            ("bytes=0-1,5-6", ByteRange::Whole),
            ("bytes=5-1", ByteRange::Whole),
            ("bytes=a-b", ByteRange::Whole),
            ("bytes=-", ByteRange::Whole),
            ("bytes=+1-2", ByteRange::Whole),
            ("items=0-1", ByteRange::Whole),
            ("", ByteRange::Whole),
        ];
        for (header, want) in cases {
            let value = HeaderValue::from_str(header).unwrap();
            assert_eq!(parse_range(Some(&value), len), want, "{header}");
        }
        let any = HeaderValue::from_static("bytes=-1");
        assert_eq!(parse_range(Some(&any), 0), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(None, len), ByteRange::Whole);
    }

    #[test]
    fn stored_names_download_under_the_senders_name() {
        assert_eq!(original_name("user_7_20240101_120000_0_photo.jpg"), "photo.jpg");
        assert_eq!(original_name("user_7_20240101_120000_3_a_b_1.pdf"), "a_b_1.pdf");
        assert_eq!(original_name("user_x_20240101_120000_0_a.pdf"), "user_x_20240101_120000_0_a.pdf");
        assert_eq!(original_name("report.pdf"), "report.pdf");
    }

    struct Site {
        dir: tempfile::TempDir,
        content: Vec<u8>,
    }

    fn site() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let images = dir.path().join("chat_files/images");
        let files = dir.path().join("chat_files/files");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(images.join("user_1_20240101_120000_0_a.png"), &content).unwrap();
        std::fs::write(files.join("user_1_20240101_120000_0_doc.pdf"), b"%PDF-1.4").unwrap();
        std::fs::write(files.join("evil.html"), b"<script>").unwrap();
        std::fs::write(dir.path().join("index.html"), b"<!doctype html>").unwrap();
        std::fs::write(dir.path().join("app.js"), b"let a;").unwrap();
        std::fs::write(dir.path().join("notes.bin"), b"x").unwrap();
        std::fs::write(dir.path().join(".env"), b"SECRET").unwrap();
        Site { dir, content }
    }

    async fn get(site: &Site, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        request(site, Method::GET, path, headers).await
    }

    async fn request(
        site: &Site,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let response = serve(site.dir.path(), path, &method, &map).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, bytes)
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn an_image_is_served_whole_with_validators_and_inline() {
        let site = site();
        let (status, headers, body) = get(&site, "/static/chat_files/images/user_1_20240101_120000_0_a.png", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, site.content);
        assert_eq!(header(&headers, "content-type"), Some("image/png"));
        assert_eq!(header(&headers, "content-length"), Some("200000"));
        assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&headers, "content-disposition"), None);
        assert_eq!(header(&headers, "cache-control"), Some(CACHE_STORED));
        assert!(header(&headers, "etag").unwrap().starts_with("\"30d40-"));
        let date = header(&headers, "last-modified").unwrap();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
    }

    #[tokio::test]
    async fn a_matching_etag_gets_304_without_a_body() {
        let site = site();
        let path = "/static/chat_files/images/user_1_20240101_120000_0_a.png";
        let (_, headers, _) = get(&site, path, &[]).await;
        let etag = header(&headers, "etag").unwrap().to_owned();
        for value in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_owned()] {
            let (status, headers, body) = get(&site, path, &[("if-none-match", &value)]).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{value}");
            assert!(body.is_empty());
            assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
        }
        let (status, _, body) = get(&site, path, &[("if-none-match", "\"other\"")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 200_000);
    }

    #[tokio::test]
    async fn single_ranges_get_206_and_bad_ones_416() {
        let site = site();
        let path = "/static/chat_files/images/user_1_20240101_120000_0_a.png";
        let (status, headers, body) = get(&site, path, &[("range", "bytes=100-199")]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, &site.content[100..200]);
        assert_eq!(header(&headers, "content-range"), Some("bytes 100-199/200000"));
        assert_eq!(header(&headers, "content-length"), Some("100"));

        let (status, headers, body) = get(&site, path, &[("range", "bytes=-10")]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, &site.content[199_990..]);
        assert_eq!(header(&headers, "content-range"), Some("bytes 199990-199999/200000"));

        let (status, _, body) = get(&site, path, &[("range", "bytes=70000-")]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body, &site.content[70_000..]);

        let (status, headers, body) = get(&site, path, &[("range", "bytes=200000-")]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&headers, "content-range"), Some("bytes */200000"));
        assert!(body.is_empty());

        let (status, _, body) = get(&site, path, &[("range", "bytes=0-1,5-9")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 200_000);

        // If-Range naming another version: the whole, current file.
        let (status, _, body) = get(&site, path, &[("range", "bytes=0-9"), ("if-range", "\"old\"")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 200_000);
        let (_, headers, _) = get(&site, path, &[]).await;
        let etag = header(&headers, "etag").unwrap().to_owned();
        let (status, _, body) = get(&site, path, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(body.len(), 10);
    }

    #[tokio::test]
    async fn head_sends_the_headers_of_get_without_a_body() {
        let site = site();
        let path = "/static/chat_files/images/user_1_20240101_120000_0_a.png";
        let (status, headers, body) = request(&site, Method::HEAD, path, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(header(&headers, "content-length"), Some("200000"));
        let (status, headers, _) = request(&site, Method::POST, path, &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
    }

    #[tokio::test]
    async fn non_images_download_and_client_assets_render() {
        let site = site();
        let (status, headers, _) = get(&site, "/static/chat_files/files/user_1_20240101_120000_0_doc.pdf", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "content-type"), Some("application/pdf"));
        assert_eq!(header(&headers, "content-disposition"), Some("attachment; filename=\"doc.pdf\""));

        let (_, headers, _) = get(&site, "/static/chat_files/files/evil.html", &[]).await;
        assert_eq!(header(&headers, "content-type"), Some("application/octet-stream"));
        assert_eq!(header(&headers, "content-disposition"), Some("attachment; filename=\"evil.html\""));
        assert!(header(&headers, "content-security-policy").unwrap().contains("sandbox"));

        let (status, headers, body) = get(&site, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"<!doctype html>");
        assert_eq!(header(&headers, "content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(header(&headers, "content-disposition"), None);
        assert_eq!(header(&headers, "cache-control"), Some(CACHE_CLIENT));

        let (_, headers, _) = get(&site, "/static/app.js", &[]).await;
        assert_eq!(header(&headers, "content-type"), Some("text/javascript; charset=utf-8"));
        assert_eq!(header(&headers, "content-disposition"), None);

        let (_, headers, _) = get(&site, "/static/notes.bin", &[]).await;
        assert_eq!(header(&headers, "content-type"), Some("application/octet-stream"));
        assert_eq!(header(&headers, "content-disposition"), Some("attachment; filename=\"notes.bin\""));
    }

    #[tokio::test]
    async fn the_client_gets_its_policy_and_stored_files_the_sandbox() {
        let site = site();
        let client_paths = ["/", "/static/index.html", "/static/app.js"];
        for path in client_paths {
            let (status, headers, _) = get(&site, path, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(header(&headers, "content-security-policy"), Some(CLIENT_CSP), "{path}");
            assert_eq!(header(&headers, "referrer-policy"), Some("no-referrer"), "{path}");
            assert_eq!(header(&headers, "x-frame-options"), Some("DENY"), "{path}");
        }
        let (_, headers, _) = get(&site, "/", &[]).await;
        let etag = header(&headers, "etag").unwrap().to_owned();
        let (status, headers, _) = get(&site, "/", &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(header(&headers, "content-security-policy"), Some(CLIENT_CSP));

        let stored = "/static/chat_files/images/user_1_20240101_120000_0_a.png";
        let (_, headers, _) = get(&site, stored, &[]).await;
        assert_eq!(header(&headers, "content-security-policy"), Some(STORED_CSP));
        assert_eq!(header(&headers, "referrer-policy"), Some("no-referrer"));
        // The policy is one line: the source's line continuations leave no newline or double space.
        assert!(!CLIENT_CSP.contains('\n') && !CLIENT_CSP.contains("  "), "{CLIENT_CSP}");
    }

    #[tokio::test]
    async fn missing_hidden_directories_and_outside_paths_are_404_json() {
        let site = site();
        for path in [
            "/static/missing.png",
            "/static/chat_files",
            "/static/chat_files/images",
            "/static/chat_files/images/",
            "/static/.env",
            "/static/../index.html",
            "/static/%2e%2e/index.html",
            "/static/app.js/x",
            "/app.js",
        ] {
            let (status, headers, body) = get(&site, path, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body, br#"{"detail":"Not found"}"#, "{path}");
            assert_eq!(header(&headers, "content-type"), Some("application/json"));
        }
    }
}
