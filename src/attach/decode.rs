//! Chunked base64 → writer with the content checks that need the bytes: the
//! magic of the first chunk and, for text, UTF-8 without NUL across chunks.
//! Memory is one fixed buffer, whatever the size of the file.

use std::io::{self, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::validate::{Magic, magic_matches};

/// Base64 characters decoded at a time: a multiple of 4, so every chunk but
/// the last holds whole quanta and no padding.
pub const CHUNK_BASE64_BYTES: usize = 64 * 1024;
/// Decoded bytes of one full chunk.
pub const CHUNK_DECODED_BYTES: usize = CHUNK_BASE64_BYTES / 4 * 3;
/// Room in front of a chunk for an unfinished UTF-8 sequence of the previous one.
const UTF8_CARRY_MAX: usize = 3;

/// Why a payload could not be decoded into a file.
#[derive(Debug)]
pub enum DecodeError {
    InvalidBase64,
    ContentMismatch,
    Io(io::Error),
}

/// The reusable output buffer of `decode_into`.
pub struct DecodeBuffer {
    bytes: Box<[u8]>,
}

impl DecodeBuffer {
    pub fn new() -> DecodeBuffer {
        DecodeBuffer { bytes: vec![0; CHUNK_DECODED_BYTES + UTF8_CARRY_MAX + 1].into_boxed_slice() }
    }
}

impl Default for DecodeBuffer {
    fn default() -> DecodeBuffer {
        DecodeBuffer::new()
    }
}

/// Decodes padded standard base64 chunk by chunk into `out`, checking the
/// magic bytes on the first chunk and, for text, UTF-8 without NUL bytes over
/// the whole file. Returns the number of bytes written. An empty payload
/// fails: it has no magic.
pub fn decode_into<W: Write>(
    payload: &str,
    magic: Magic,
    out: &mut W,
    buffer: &mut DecodeBuffer,
) -> Result<u64, DecodeError> {
    let input = payload.as_bytes();
    if input.is_empty() {
        return Err(DecodeError::ContentMismatch);
    }
    let buf = &mut buffer.bytes;
    let chunk_count = input.len().div_ceil(CHUNK_BASE64_BYTES);
    let mut written: u64 = 0;
    // Bytes of an unfinished UTF-8 sequence kept at the front of `buf`
    // (already written; validated together with the next chunk).
    let mut carry = 0;
    for (index, chunk) in input.chunks(CHUNK_BASE64_BYTES).enumerate() {
        // Padding may only end the whole payload; each chunk decodes on its own.
        if index + 1 < chunk_count && chunk.last() == Some(&b'=') {
            return Err(DecodeError::InvalidBase64);
        }
        let decoded = STANDARD.decode_slice(chunk, &mut buf[carry..]).map_err(|_| DecodeError::InvalidBase64)?;
        let fresh = &buf[carry..carry + decoded];
        if index == 0 && !magic_matches(magic, fresh) {
            return Err(DecodeError::ContentMismatch);
        }
        out.write_all(fresh).map_err(DecodeError::Io)?;
        written += decoded as u64;
        if magic == Magic::Text {
            if fresh.contains(&0) {
                return Err(DecodeError::ContentMismatch);
            }
            let end = carry + decoded;
            carry = unfinished_utf8_suffix(&buf[..end]).ok_or(DecodeError::ContentMismatch)?;
            buf.copy_within(end - carry..end, 0);
        }
    }
    if carry != 0 {
        return Err(DecodeError::ContentMismatch);
    }
    Ok(written)
}

/// How many bytes at the end of `bytes` start a UTF-8 sequence that the next
/// chunk may finish; `None` when `bytes` is invalid UTF-8 anyway.
fn unfinished_utf8_suffix(bytes: &[u8]) -> Option<usize> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Some(0),
        Err(e) if e.error_len().is_none() => {
            let rest = bytes.len() - e.valid_up_to();
            (rest <= UTF8_CARRY_MAX).then_some(rest)
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(payload: &str, magic: Magic) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        let n = decode_into(payload, magic, &mut out, &mut DecodeBuffer::new())?;
        assert_eq!(n as usize, out.len());
        Ok(out)
    }

    #[test]
    fn multi_chunk_payload_decodes_to_the_original_bytes() {
        let mut data = b"%PDF-1.7\n".to_vec();
        data.extend((0..200_000u32).map(|i| (i * 7 % 251) as u8));
        let text = STANDARD.encode(&data);
        assert!(text.len() > 3 * CHUNK_BASE64_BYTES);
        assert_eq!(decode(&text, Magic::Pdf).unwrap(), data);
    }

    #[test]
    fn utf8_split_across_a_chunk_boundary_is_accepted() {
        // Put a 4-byte character across the 48 KiB decoded chunk boundary.
        for shift in 0..4 {
            let mut data = vec![b'a'; CHUNK_DECODED_BYTES - shift];
            data.extend("𝄞 end".as_bytes());
            let text = STANDARD.encode(&data);
            assert_eq!(decode(&text, Magic::Text).unwrap(), data, "shift {shift}");
        }
    }

    #[test]
    fn text_with_invalid_utf8_or_nul_is_rejected_in_any_chunk() {
        for bad in [&[0xC3, 0x28][..], &[0][..], &[0xF0, 0x9D][..]] {
            let mut data = vec![b'a'; CHUNK_DECODED_BYTES + 10];
            data.extend(bad);
            let text = STANDARD.encode(&data);
            assert!(matches!(decode(&text, Magic::Text), Err(DecodeError::ContentMismatch)));
        }
    }

    #[test]
    fn padding_inside_the_payload_is_invalid_even_on_a_chunk_boundary() {
        let mut text = "QUFB".repeat(CHUNK_BASE64_BYTES / 4 - 1);
        text.push_str("AA==");
        text.push_str("AAAA");
        assert!(matches!(decode(&text, Magic::Text), Err(DecodeError::InvalidBase64)));
        assert!(matches!(decode("JVBE Ri0x", Magic::Pdf), Err(DecodeError::InvalidBase64)));
        assert!(matches!(decode("JVBERi0x\n", Magic::Pdf), Err(DecodeError::InvalidBase64)));
    }

    #[test]
    fn empty_payload_has_no_magic() {
        assert!(matches!(decode("", Magic::Text), Err(DecodeError::ContentMismatch)));
    }
}
