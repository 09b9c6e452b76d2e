//! JSON text written by hand for the hottest objects (a message in every
//! `new_message` frame): the same bytes `serde_json` writes, without its
//! per-key escaping and state machine. Pure functions over a `String`.

use serde::Serialize;

/// Appends `text` as a JSON string, quoted and escaped exactly as
/// `serde_json` escapes it (`\"`, `\\`, the short escapes, `\u00XX` for the
/// other control characters; everything else as is).
pub fn push_str(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs an escape (most text).
        if let Some(word) = bytes.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok())
            && !word_needs_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        let byte = bytes[i];
        i += 1;
        if !needs_escape(byte) {
            continue;
        }
        // Every byte that needs an escape is ASCII, so both slices end on a
        // character boundary.
        out.push_str(&text[start..i - 1]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        start = i;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// Whether any of the eight bytes of `word` needs an escape: a byte below
/// 0x20, a quote or a backslash (the classic "has a byte less than n" and
/// "has a zero byte" tests; exact as yes/no answers).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space || has_zero(word ^ (ONES * u64::from(b'"'))) || has_zero(word ^ (ONES * u64::from(b'\\')))
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Appends `value` or `null`.
pub fn push_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(text) => push_str(out, text),
        None => out.push_str("null"),
    }
}

/// Appends an integer.
pub fn push_int(out: &mut String, value: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// Appends `true` or `false`.
pub fn push_bool(out: &mut String, value: bool) {
    out.push_str(if value { "true" } else { "false" });
}

/// Appends anything else through `serde_json` (the cold parts: files,
/// replies, reactions, floats), so those bytes are serde's by construction.
pub fn push_serde(out: &mut String, value: &impl Serialize) {
    // Serialising plain structs of strings and numbers cannot fail.
    if let Ok(text) = serde_json::to_string(value) {
        out.push_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut every_byte = String::new();
        for c in (0u8..=0x7f).map(char::from).chain(['é', '€', '👍', '\u{2028}', '\u{7f}']) {
            every_byte.push(c);
        }
        let long = format!("{every_byte}0123456789abcdef\"{every_byte}");
        for text in [
            "",
            "plain",
            "exactly8",
            "sixteen bytes ok",
            "a \"quoted\" \\ path\\",
            "line\nbreak\ttab\r\u{8}\u{c}\u{0}\u{1f}",
            "seven b\"",
            "eight by\"x",
            &every_byte,
            &long,
        ] {
            let mut ours = String::new();
            push_str(&mut ours, text);
            assert_eq!(ours, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }

    /// Each byte value at each place of a word: the word test must see
    /// every byte that needs an escape and no other.
    #[test]
    fn the_word_test_finds_exactly_the_bytes_that_need_an_escape() {
        for byte in 0..=255u8 {
            for place in 0..8 {
                let mut word = *b"abcdefgh";
                word[place] = byte;
                assert_eq!(word_needs_escape(u64::from_le_bytes(word)), needs_escape(byte), "{byte:#x} at {place}");
            }
        }
        assert!(!word_needs_escape(u64::from_le_bytes(*b"\x7f\x80\xff !#[]")));
    }

    #[test]
    fn numbers_and_the_rest_match_serde_json() {
        for n in [0_i64, -1, 7, i64::MIN, i64::MAX] {
            let mut ours = String::new();
            push_int(&mut ours, n);
            assert_eq!(ours, serde_json::to_string(&n).unwrap());
        }
        let mut ours = String::new();
        push_opt_str(&mut ours, None);
        push_bool(&mut ours, true);
        push_serde(&mut ours, &Some(1.5_f64));
        assert_eq!(ours, "nulltrue1.5");
    }
}
