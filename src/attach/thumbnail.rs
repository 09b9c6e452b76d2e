//! Thumbnails of stored images (SPEC section 11): the longest side at most
//! 320 px, JPEG, kept as `chat_files/thumbnails/<image name>.jpg`. The name
//! follows from the image's, so a forwarded copy finds its original's
//! thumbnail made. Blocking; the `thumbnails` worker runs it off the
//! request path, a bounded number at a time.
//!
//! An image whose header declares more than `MAX_PIXELS` gets none: the
//! dimensions are read from the header alone, so a decompression bomb (a
//! tiny file that claims 20,000 × 20,000) never reaches the decoder, and
//! the decoder runs with limits set to the dimensions the header gave.

use std::fs;
use std::io;
use std::path::Path;

use image::{ImageReader, Limits};

use super::CHAT_FILES_DIR;

/// The folder under `chat_files/`.
pub const THUMBNAIL_FOLDER: &str = "thumbnails";
/// The longest side of a thumbnail.
pub const MAX_SIDE: u32 = 320;
/// Images larger than this (per their header) get no thumbnail.
pub const MAX_PIXELS: u64 = 50_000_000;
const JPEG_QUALITY: u8 = 80;

/// `chat_files/thumbnails/<name>.jpg` for `chat_files/images/<name>`;
/// `None` for anything that is not a stored image.
pub fn thumbnail_rel_path(rel_path: &str) -> Option<String> {
    let name = rel_path.strip_prefix(CHAT_FILES_DIR)?.strip_prefix("/images/")?;
    let plain = !name.is_empty() && !name.contains(['/', '\\', '\0']) && !name.starts_with('.');
    plain.then(|| format!("{CHAT_FILES_DIR}/{THUMBNAIL_FOLDER}/{name}.jpg"))
}

/// What became of one image.
#[derive(Debug, PartialEq, Eq)]
pub enum Thumbnail {
    /// Made now, or found made (a copy of a message whose image has one).
    Ready(String),
    /// The header declares more pixels than `MAX_PIXELS`.
    TooLarge { width: u32, height: u32 },
}

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("not a stored image: {0}")]
    NotAnImage(String),
    #[error("cannot decode: {0}")]
    Decode(#[from] image::ImageError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Makes (or finds) the thumbnail of the stored image at `rel_path`.
pub fn make_thumbnail(static_dir: &Path, rel_path: &str) -> Result<Thumbnail, ThumbnailError> {
    let thumb_rel = thumbnail_rel_path(rel_path).ok_or_else(|| ThumbnailError::NotAnImage(rel_path.to_owned()))?;
    let source = static_dir.join(rel_path);
    let target = static_dir.join(&thumb_rel);
    if target.exists() {
        return Ok(Thumbnail::Ready(thumb_rel));
    }
    let (width, height) = ImageReader::open(&source)?.with_guessed_format()?.into_dimensions()?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Ok(Thumbnail::TooLarge { width, height });
    }
    let mut reader = ImageReader::open(&source)?.with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel, plus the decoder's own working room.
    limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + 64 * 1024 * 1024);
    reader.limits(limits);
    let image = reader.decode()?;
    let small = if width <= MAX_SIDE && height <= MAX_SIDE { image } else { image.thumbnail(MAX_SIDE, MAX_SIDE) };
    // JPEG has no alpha: transparent parts become white, as viewers show them.
    let rgba = small.to_rgba8();
    let mut rgb = image::RgbImage::new(rgba.width(), rgba.height());
    for (to, from) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = u16::from(from[3]);
        for c in 0..3 {
            to[c] = ((u16::from(from[c]) * alpha + 255 * (255 - alpha)) / 255) as u8;
        }
    }
    if let Some(folder) = target.parent() {
        fs::create_dir_all(folder)?;
    }
    // Written beside the target and renamed: a reader never sees half a file.
    let temp = target.with_extension("jpg.tmp");
    let written = (|| -> Result<(), ThumbnailError> {
        let mut out = io::BufWriter::new(fs::File::create(&temp)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&rgb)?;
        io::Write::flush(&mut out)?;
        out.get_ref().sync_all()?;
        fs::rename(&temp, &target)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.map(|()| Thumbnail::Ready(thumb_rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(dir: &Path, name: &str, bytes: &[u8]) -> String {
        let rel = format!("{CHAT_FILES_DIR}/images/{name}");
        fs::create_dir_all(dir.join(CHAT_FILES_DIR).join("images")).expect("dir");
        fs::write(dir.join(&rel), bytes).expect("write");
        rel
    }

    fn encoded(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
        let img =
            image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255]));
        let mut out = io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgba8(img).write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    #[test]
    fn names_follow_the_image() {
        assert_eq!(
            thumbnail_rel_path("chat_files/images/user_1_x_0_a.png").as_deref(),
            Some("chat_files/thumbnails/user_1_x_0_a.png.jpg")
        );
        assert_eq!(thumbnail_rel_path("chat_files/files/user_1_x_0_a.pdf"), None);
        assert_eq!(thumbnail_rel_path("chat_files/images/../x"), None);
    }

    #[test]
    fn each_format_gets_a_thumbnail_that_keeps_its_shape() {
        let dir = tempfile::tempdir().expect("dir");
        for (format, name) in [
            (image::ImageFormat::Png, "a.png"),
            (image::ImageFormat::Jpeg, "a.jpg"),
            (image::ImageFormat::Gif, "a.gif"),
            (image::ImageFormat::WebP, "a.webp"),
        ] {
            let rel = stored(dir.path(), name, &encoded(800, 400, format));
            let Thumbnail::Ready(thumb) = make_thumbnail(dir.path(), &rel).expect(name) else { panic!("{name}") };
            let made = image::open(dir.path().join(&thumb)).expect("a JPEG");
            assert_eq!((made.width(), made.height()), (320, 160), "{name}");
            assert!(matches!(make_thumbnail(dir.path(), &rel), Ok(Thumbnail::Ready(t)) if t == thumb), "found made");
        }
        // Small images keep their size.
        let rel = stored(dir.path(), "tiny.png", &encoded(40, 30, image::ImageFormat::Png));
        let Ok(Thumbnail::Ready(thumb)) = make_thumbnail(dir.path(), &rel) else { panic!() };
        let made = image::open(dir.path().join(thumb)).expect("jpeg");
        assert_eq!((made.width(), made.height()), (40, 30));
    }

    #[test]
    fn a_bomb_is_refused_from_its_header() {
        let dir = tempfile::tempdir().expect("dir");
        let rel = stored(dir.path(), "bomb.png", &crate::attach::samples::png_header_only(20_000, 20_000));
        assert_eq!(
            make_thumbnail(dir.path(), &rel).expect("read"),
            Thumbnail::TooLarge { width: 20_000, height: 20_000 }
        );
        assert!(!dir.path().join(CHAT_FILES_DIR).join(THUMBNAIL_FOLDER).exists(), "nothing written");
    }

    #[test]
    fn garbage_fails_cleanly() {
        let dir = tempfile::tempdir().expect("dir");
        let rel = stored(dir.path(), "broken.png", b"\x89PNG\r\n\x1a\nnot really");
        assert!(make_thumbnail(dir.path(), &rel).is_err());
        assert!(!dir.path().join(CHAT_FILES_DIR).join(THUMBNAIL_FOLDER).join("broken.png.jpg").exists());
    }
}
