//! Small valid files of every allowed type, and declared files built from
//! them, for the unit tests.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::IncomingFile;

/// The smallest bytes each type's magic check accepts, padded a little.
pub fn sample_bytes(ext: &str) -> Vec<u8> {
    let head: &[u8] = match ext {
        "jpg" | "jpeg" => b"\xFF\xD8\xFF\xE0\x00\x10JFIF\x00",
        "png" => b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        "gif" => b"GIF89a\x01\x00\x01\x00",
        "webp" => b"RIFF\x1a\x00\x00\x00WEBPVP8 ",
        "pdf" => b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n",
        "doc" | "xls" => b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\x00\x00",
        "docx" | "xlsx" | "zip" => b"PK\x03\x04\x14\x00\x00\x00",
        "rar" => b"Rar!\x1a\x07\x01\x00",
        "mp3" => b"ID3\x04\x00\x00\x00\x00\x00\x00",
        "wav" => b"RIFF$\x00\x00\x00WAVEfmt ",
        "txt" => "hello, wörld\n".as_bytes(),
        other => panic!("no sample for {other}"),
    };
    let mut bytes = head.to_vec();
    if ext != "txt" {
        bytes.extend((0..40u8).map(|i| i.wrapping_mul(37)));
    }
    bytes
}

/// A declared file that owns its strings, so tests can build and tweak it.
#[derive(Clone, Debug)]
pub struct Declared {
    pub data: String,
    pub name: String,
    pub size: i64,
    pub mime: String,
    pub duration: Option<f64>,
}

impl Declared {
    /// `name` with `bytes` as its content, declared with the right size.
    pub fn new(name: &str, mime: &str, bytes: &[u8]) -> Declared {
        Declared {
            data: STANDARD.encode(bytes),
            name: name.to_owned(),
            size: bytes.len() as i64,
            mime: mime.to_owned(),
            duration: None,
        }
    }

    /// The sample of the extension of `name`.
    pub fn sample(name: &str, mime: &str) -> Declared {
        let ext = name.rsplit('.').next().unwrap_or("");
        Declared::new(name, mime, &sample_bytes(&ext.to_ascii_lowercase()))
    }

    pub fn duration(mut self, seconds: f64) -> Declared {
        self.duration = Some(seconds);
        self
    }

    pub fn incoming(&self) -> IncomingFile<'_> {
        IncomingFile {
            file_data: &self.data,
            file_name: &self.name,
            file_size: self.size,
            mime_type: &self.mime,
            duration: self.duration,
        }
    }
}

pub fn incoming(files: &[Declared]) -> Vec<IncomingFile<'_>> {
    files.iter().map(Declared::incoming).collect()
}

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A valid PNG header that claims `width` × `height` 8-bit grey pixels,
/// then a few bytes of compressed zeros: a decompression bomb's shape.
pub fn png_header_only(width: u32, height: u32) -> Vec<u8> {
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
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    for (kind, data) in [(b"IHDR", ihdr.as_slice()), (b"IDAT", &[0x78, 0x9C, 0x63, 0, 0, 0, 1, 0, 1]), (b"IEND", &[])] {
        png.extend((data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend(kind);
        png.extend(data);
        let crc = crc32(&png[start..]);
        png.extend(crc.to_be_bytes());
    }
    png
}
