//! Thumbnails (SPEC section 11): every stored image gets one (PNG, JPEG,
//! GIF, WebP), made off the request path and announced with
//! `message_update`; a 20,000 × 20,000 PNG whose data is tiny gets none and
//! never reaches the decoder; a deleted image takes its thumbnail along.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::attachments::{file, url_path};
use crate::support::{TestServer, Ws};

pub(crate) fn encoded(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(img).write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A valid PNG header that claims `width` × `height` pixels, followed by a
/// few bytes of compressed zeros: what a decompression bomb looks like.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit greyscale
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

pub(crate) async fn send_image(ws: &mut Ws, room: i64, name: &str, mime: &str, bytes: &[u8], temp: &str) -> Value {
    ws.send(json!({"type": "send_message", "data": {"room_id": room, "message_type": "image", "content": "", "local_temp_id": temp, "files_data": [file(name, bytes, mime)]}})).await;
    ws.expect_where("new_message", |v| v["data"]["local_temp_id"] == temp).await["data"].clone()
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_image_type_gets_a_thumbnail_that_keeps_its_shape() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    for (format, name, mime) in [
        (image::ImageFormat::Png, "a.png", "image/png"),
        (image::ImageFormat::Jpeg, "a.jpg", "image/jpeg"),
        (image::ImageFormat::Gif, "a.gif", "image/gif"),
        (image::ImageFormat::WebP, "a.webp", "image/webp"),
    ] {
        let sent = send_image(&mut a, room, name, mime, &encoded(800, 400, format), name).await;
        assert_eq!(sent["files_data"][0]["thumbnail_path"], Value::Null, "not made on the request path");
        let id = sent["id"].clone();
        let update = b.expect_where("message_update", |v| v["data"]["id"] == id).await;
        let thumb = update["data"]["files_data"][0]["thumbnail_path"].as_str().expect("a thumbnail").to_owned();
        assert!(thumb.contains("/static/chat_files/thumbnails/") && thumb.contains("sig="), "{thumb}");
        let local = thumb.strip_prefix(&format!("http://{}", s.addr)).expect("local");
        let r = s.raw(Method::GET, local, None, None, Vec::new()).await;
        assert_eq!((r.status, r.headers["content-type"].to_str().ok()), (StatusCode::OK, Some("image/jpeg")), "{name}");
        let made = image::load_from_memory(&r.body).expect("a JPEG");
        assert_eq!((made.width(), made.height()), (320, 160), "{name}");
        assert_eq!(
            s.raw(Method::GET, url_path(local), None, None, Vec::new()).await.status,
            StatusCode::NOT_FOUND,
            "signed like file_path"
        );
        let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &bob.token).await;
        let last = page.json["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or(Value::Null);
        assert_eq!(last["files_data"][0]["thumbnail_path"], thumb.as_str(), "REST renders it too");
    }
    // Deleting the message removes the image and its thumbnail.
    let page = s.get(&format!("/api/chat/rooms/{room}/messages"), &ann.token).await;
    let last = page.json["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or(Value::Null);
    let thumb = last["files_data"][0]["thumbnail_path"].as_str().expect("thumb").to_owned();
    let on_disk = s.static_dir().join(url_path(&thumb).split("/static/").nth(1).expect("rel"));
    assert!(on_disk.exists());
    let del =
        s.raw(Method::DELETE, &format!("/api/chat/messages/{}", last["id"]), Some(&ann.token), None, Vec::new()).await;
    assert_eq!(del.status, StatusCode::OK);
    assert!(!on_disk.exists(), "the thumbnail went with its image");
    s.stop().await;
}

#[tokio::test]
async fn a_decompression_bomb_is_stored_without_a_thumbnail_and_without_decoding() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    let mut b = s.ws(&bob).await;
    let bomb = png_bomb(20_000, 20_000);
    assert!(bomb.len() < 100);
    let before = vm_hwm_kb();
    let sent = send_image(&mut a, room, "bomb.png", "image/png", &bomb, "bomb").await;
    assert_eq!(sent["files_data"][0]["file_size"], bomb.len());
    // A normal image after it gets its thumbnail: the worker went past the bomb.
    let fine =
        send_image(&mut a, room, "fine.png", "image/png", &encoded(64, 64, image::ImageFormat::Png), "fine").await;
    let update = b.expect("message_update").await;
    assert_eq!(update["data"]["id"], fine["id"], "no update for the bomb");
    b.expect_none("message_update", Duration::from_millis(300)).await;
    let grew_mb = vm_hwm_kb().saturating_sub(before) / 1024;
    // Decoding it would need 400 MB (8-bit greyscale) at the least.
    assert!(grew_mb < 64, "peak memory grew {grew_mb} MB");
    let thumbs = s.static_dir().join("chat_files/thumbnails");
    let names: Vec<String> = std::fs::read_dir(thumbs)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(names.iter().all(|n| !n.contains("bomb")), "{names:?}");
    s.stop().await;
}
