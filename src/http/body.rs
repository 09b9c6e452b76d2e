//! The one response body type of chatd and small constructors for it.
//! Full bodies for JSON, streamed bodies for static files.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Every response chatd sends has this body type.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A body that holds all of its bytes already.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A file's bytes from its current position, read in chunks as the client
/// takes them.
pub fn file(file: tokio::fs::File) -> Body {
    use futures_util::TryStreamExt as _;
    let chunks = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    http_body_util::StreamBody::new(chunks.map_ok(hyper::body::Frame::data)).boxed_unsync()
}

/// A body with nothing in it (204, 304, HEAD).
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}
