//! Pure checks of declared attachments: counts, types, extensions, names, sizes
//! implied by the base64 length, and the magic bytes of a first chunk.
//! Nothing here touches the filesystem.

use super::{AttachError, Category, FileMessageKind, IncomingFile};

/// Files per message (SPEC 7).
pub const MAX_FILES: usize = 10;
/// Longest sanitised name, in characters (all ASCII after sanitising).
pub const MAX_SANITISED_CHARS: usize = 100;
/// Longest name shown to clients, in characters. Long names are shortened,
/// not refused; this keeps what every render of the message repeats small.
pub const MAX_DISPLAY_NAME_CHARS: usize = 255;

/// What the first bytes of a file must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    Jpeg,
    Png,
    Gif,
    Webp,
    Pdf,
    /// OLE compound file: .doc and .xls.
    Ole,
    /// ZIP: .zip, .docx, .xlsx.
    Zip,
    Rar,
    Mp3,
    Wav,
    /// UTF-8 without NUL bytes, checked over the whole file.
    Text,
}

/// One row of the type table of SPEC 4.
#[derive(Debug, PartialEq, Eq)]
pub struct FileType {
    pub mime: &'static str,
    pub category: Category,
    pub extensions: &'static [&'static str],
    pub magic: Magic,
}

const fn row(mime: &'static str, category: Category, extensions: &'static [&'static str], magic: Magic) -> FileType {
    FileType { mime, category, extensions, magic }
}

/// Every allowed mime type, in the order of SPEC 4 (the order of the error texts).
pub static FILE_TYPES: &[FileType] = &[
    row("image/jpeg", Category::Image, &["jpg", "jpeg"], Magic::Jpeg),
    row("image/png", Category::Image, &["png"], Magic::Png),
    row("image/gif", Category::Image, &["gif"], Magic::Gif),
    row("image/webp", Category::Image, &["webp"], Magic::Webp),
    row("application/pdf", Category::File, &["pdf"], Magic::Pdf),
    row("application/msword", Category::File, &["doc"], Magic::Ole),
    row(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Category::File,
        &["docx"],
        Magic::Zip,
    ),
    row("application/vnd.ms-excel", Category::File, &["xls"], Magic::Ole),
    row("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Category::File, &["xlsx"], Magic::Zip),
    row("text/plain", Category::File, &["txt"], Magic::Text),
    row("application/zip", Category::File, &["zip"], Magic::Zip),
    row("application/x-zip-compressed", Category::File, &["zip"], Magic::Zip),
    row("application/vnd.rar", Category::File, &["rar"], Magic::Rar),
    row("application/x-rar-compressed", Category::File, &["rar"], Magic::Rar),
    row("audio/mpeg", Category::Voice, &["mp3"], Magic::Mp3),
    row("audio/mp3", Category::Voice, &["mp3"], Magic::Mp3),
    row("audio/wav", Category::Voice, &["wav"], Magic::Wav),
    row("audio/x-wav", Category::Voice, &["wav"], Magic::Wav),
    row("audio/wave", Category::Voice, &["wav"], Magic::Wav),
];

/// The mime types a message of `kind` accepts, joined for the error text.
pub fn allowed_types_text(kind: FileMessageKind) -> String {
    FILE_TYPES.iter().filter(|t| kind_accepts(kind, t.category)).map(|t| t.mime).collect::<Vec<_>>().join(", ")
}

pub(super) fn kind_accepts(kind: FileMessageKind, category: Category) -> bool {
    match kind {
        FileMessageKind::Image => category == Category::Image,
        FileMessageKind::Voice => category == Category::Voice,
        FileMessageKind::File => true,
    }
}

/// Finds the table row of a declared mime type. Case and parameters
/// (`text/plain; charset=utf-8`) are ignored, as RFC 9110 allows.
pub fn lookup_mime(mime: &str) -> Option<&'static FileType> {
    let essence = mime.split(';').next().unwrap_or("").trim();
    FILE_TYPES.iter().find(|t| t.mime.eq_ignore_ascii_case(essence))
}

/// One file after every check that can be made without decoding it.
#[derive(Debug)]
pub struct PlannedFile<'a> {
    pub file_type: &'static FileType,
    /// The sanitised name (the `<name>` of the stored file name).
    pub sanitised: String,
    /// The base64 text without any `data:` prefix.
    pub payload: &'a str,
    /// The decoded size the base64 length implies (equal to the declared size).
    pub decoded_len: u64,
    /// Kept for audio only, where it is finite and positive.
    pub duration: Option<f64>,
}

/// Checks a whole message before anything is decoded.
pub fn plan_files<'a>(kind: FileMessageKind, files: &[IncomingFile<'a>]) -> Result<Vec<PlannedFile<'a>>, AttachError> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(AttachError::FileCount { count: files.len() });
    }
    files.iter().map(|file| plan_file(kind, file)).collect()
}

fn plan_file<'a>(kind: FileMessageKind, file: &IncomingFile<'a>) -> Result<PlannedFile<'a>, AttachError> {
    let sanitised = sanitize_file_name(file.file_name)?;
    let name = || sanitised.clone();

    let file_type = lookup_mime(file.mime_type)
        .filter(|t| kind_accepts(kind, t.category))
        .ok_or_else(|| AttachError::TypeNotAllowed { name: name(), allowed: allowed_types_text(kind) })?;

    let extension = extension_of(&sanitised);
    if !file_type.extensions.iter().any(|allowed| extension.is_some_and(|ext| ext.eq_ignore_ascii_case(allowed))) {
        return Err(AttachError::ExtensionMismatch { name: name() });
    }

    let duration = match file.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(d),
        Some(_) => return Err(AttachError::InvalidDuration { name: name() }),
        None if kind == FileMessageKind::Voice => {
            return Err(AttachError::InvalidDuration { name: name() });
        }
        None => None,
    };
    let duration = duration.filter(|_| file_type.category == Category::Voice);

    if file.file_size < 0 {
        return Err(AttachError::SizeMismatch { name: name() });
    }
    let payload = strip_data_url(file.file_data).ok_or_else(|| AttachError::InvalidBase64 { name: name() })?;
    let decoded_len = decoded_len(payload).ok_or_else(|| AttachError::InvalidBase64 { name: name() })?;
    let max_bytes = file_type.category.max_bytes();
    if decoded_len > max_bytes {
        return Err(AttachError::TooLarge { name: name(), max_bytes });
    }
    if decoded_len == 0 {
        return Err(AttachError::Empty { name: name() });
    }
    if u64::try_from(file.file_size).ok() != Some(decoded_len) {
        return Err(AttachError::SizeMismatch { name: name() });
    }

    Ok(PlannedFile { file_type, sanitised, payload, decoded_len, duration })
}

/// Removes a `data:<mime>;base64,` prefix; `None` for a `data:` URL that is
/// not base64.
pub fn strip_data_url(data: &str) -> Option<&str> {
    // A real header is short; looking further would scan a whole file.
    const MAX_HEADER: usize = 256;
    let Some(head) = data.get(..5) else {
        return Some(data);
    };
    if !head.eq_ignore_ascii_case("data:") {
        return Some(data);
    }
    let window = &data.as_bytes()[..data.len().min(MAX_HEADER)];
    let comma = window.iter().position(|&b| b == b',')?;
    // Compared as bytes: the header may hold multi-byte characters.
    let header = &data.as_bytes()[..comma];
    let is_base64 = header.len() >= 7 && header[header.len() - 7..].eq_ignore_ascii_case(b";base64");
    is_base64.then(|| &data[comma + 1..])
}

/// The decoded size of padded standard base64, from its length alone.
/// `None` when the length cannot be valid base64; the characters themselves
/// are checked while decoding.
pub fn decoded_len(payload: &str) -> Option<u64> {
    let bytes = payload.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 {
        return None;
    }
    let groups = u64::try_from(bytes.len() / 4).ok()?;
    Some(groups * 3 - padding as u64)
}

/// Reduces a client's file name to a safe one: the last path component,
/// anything outside `[A-Za-z0-9._-]` replaced by `_`, at most 100 characters
/// with the extension kept. A longer name is shortened, not refused; names
/// with control characters, and names of nothing but dots, are refused.
pub fn sanitize_file_name(raw: &str) -> Result<String, AttachError> {
    let invalid = || AttachError::InvalidName { name: printable_name(raw) };
    if raw.chars().any(char::is_control) {
        return Err(invalid());
    }
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    if last.trim_matches('.').is_empty() || last.trim().is_empty() {
        return Err(invalid());
    }
    let replaced: String =
        last.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    let name = shorten_keeping_extension(&replaced, MAX_SANITISED_CHARS);
    // Cutting "....(100 dots)x.y" can leave only dots.
    if name.bytes().all(|b| b == b'.') {
        return Err(invalid());
    }
    Ok(name)
}

/// The name clients are shown (`file_name` of `files_data`): the name as
/// sent, without control characters and without Unicode format characters
/// (general category Cf: bidi overrides and isolates, zero-width characters,
/// the soft hyphen, the BOM), so that `evil\u{202E}gpj.exe` cannot pass for
/// `evilexe.jpg`. At most 255 characters, extension kept. When nothing is
/// left, the sanitised name stands in.
pub fn display_file_name(raw: &str, sanitised: &str) -> String {
    let visible: String = raw.chars().filter(|&c| !c.is_control() && !is_format_char(c)).collect();
    let shown = shorten_keeping_extension(&visible, MAX_DISPLAY_NAME_CHARS);
    // Checked after shortening: a cut can leave only the leading spaces.
    if shown.trim().is_empty() { sanitised.to_owned() } else { shown }
}

/// Whether `c` is in Unicode general category Cf (format characters,
/// Unicode 15). They are invisible yet change how the text around them is
/// shown, so no file name keeps them.
pub fn is_format_char(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// A name that is safe to put into an error text even when it was rejected:
/// control and format characters replaced, at most 100 characters.
pub fn printable_name(raw: &str) -> String {
    let shown: String = raw
        .chars()
        .take(MAX_SANITISED_CHARS)
        .map(|c| if c.is_control() || is_format_char(c) { '?' } else { c })
        .collect();
    if shown.trim().is_empty() { "(unnamed)".to_owned() } else { shown }
}

/// `name` cut to `max_chars` characters. The extension (from the last dot)
/// is kept when it is shorter than half the limit, because the stored name's
/// extension must still fit its type; a longer one is no real extension.
fn shorten_keeping_extension(name: &str, max_chars: usize) -> String {
    if name.chars().nth(max_chars).is_none() {
        return name.to_owned();
    }
    let extension = name.rfind('.').map_or("", |dot| &name[dot..]);
    let extension_chars = extension.chars().count();
    if extension_chars > 0 && extension_chars < max_chars / 2 {
        let stem = &name[..name.len() - extension.len()];
        let mut shortened: String = stem.chars().take(max_chars - extension_chars).collect();
        shortened.push_str(extension);
        shortened
    } else {
        name.chars().take(max_chars).collect()
    }
}

/// The extension of a sanitised name, without the dot.
pub(super) fn extension_of(name: &str) -> Option<&str> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then_some(ext)
}

/// How many leading bytes `magic_matches` needs to decide.
pub const MAGIC_PREFIX_LEN: usize = 12;

/// Whether the first bytes of a file fit its type. `head` is the start of the
/// file (at least `MAGIC_PREFIX_LEN` bytes unless the file is shorter).
/// Text is checked elsewhere, over the whole file.
pub fn magic_matches(magic: Magic, head: &[u8]) -> bool {
    match magic {
        Magic::Jpeg => head.starts_with(&[0xFF, 0xD8, 0xFF]),
        Magic::Png => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        Magic::Gif => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        Magic::Webp => riff_of(head, b"WEBP"),
        Magic::Pdf => head.starts_with(b"%PDF-"),
        Magic::Ole => head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]),
        Magic::Zip => head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06"),
        Magic::Rar => head.starts_with(b"Rar!\x1a\x07"),
        Magic::Mp3 => head.starts_with(b"ID3") || matches!(head, [0xFF, second, ..] if second & 0xE0 == 0xE0),
        Magic::Wav => riff_of(head, b"WAVE"),
        Magic::Text => !head.is_empty(),
    }
}

fn riff_of(head: &[u8], form: &[u8; 4]) -> bool {
    head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == form
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::check_files;
    use crate::attach::samples::{Declared, incoming};

    const IMAGE_TYPES: &str = "image/jpeg, image/png, image/gif, image/webp";

    /// Runs `check_files` on `files` and compares with `expected`:
    /// `Ok(())` or the exact error text.
    fn check(kind: FileMessageKind, files: &[Declared], expected: Result<(), &str>) {
        let got = check_files(kind, &incoming(files)).map_err(|e| e.to_string());
        let names: Vec<_> = files.iter().map(|f| (&f.name, &f.mime, f.size)).collect();
        assert_eq!(got.as_ref().map(|_| ()).map_err(String::as_str), expected, "{names:?}");
    }

    fn one(kind: FileMessageKind, file: Declared, expected: Result<(), &str>) {
        check(kind, &[file], expected);
    }

    #[test]
    fn every_allowed_type_passes_with_its_extensions() {
        let cases = [
            ("a.jpg", "image/jpeg"),
            ("a.jpeg", "image/jpeg"),
            ("A.JPG", "IMAGE/JPEG"),
            ("a.png", "image/png"),
            ("a.gif", "image/gif"),
            ("a.webp", "image/webp"),
            ("a.pdf", "application/pdf"),
            ("a.doc", "application/msword"),
            ("a.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            ("a.xls", "application/vnd.ms-excel"),
            ("a.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            ("a.txt", "text/plain"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("a.zip", "application/zip"),
            ("a.zip", "application/x-zip-compressed"),
            ("a.rar", "application/vnd.rar"),
            ("a.rar", "application/x-rar-compressed"),
            ("a.mp3", "audio/mpeg"),
            ("a.mp3", "audio/mp3"),
            ("a.wav", "audio/wav"),
            ("a.wav", "audio/x-wav"),
            ("a.wav", "audio/wave"),
        ];
        for (name, mime) in cases {
            let file = Declared::sample(name, mime).duration(1.5);
            one(FileMessageKind::File, file.clone(), Ok(()));
            let kind = match lookup_mime(mime).map(|t| t.category) {
                Some(Category::Image) => FileMessageKind::Image,
                Some(Category::Voice) => FileMessageKind::Voice,
                _ => continue,
            };
            one(kind, file, Ok(()));
        }
    }

    #[test]
    fn wrong_type_for_the_message_kind_names_the_allowed_list() {
        let pdf = || Declared::sample("doc.pdf", "application/pdf");
        let text = format!("doc.pdf: File type not allowed. Allowed types: {IMAGE_TYPES}");
        one(FileMessageKind::Image, pdf(), Err(&text));
        let voice = "doc.pdf: File type not allowed. Allowed types: \
                     audio/mpeg, audio/mp3, audio/wav, audio/x-wav, audio/wave";
        one(FileMessageKind::Voice, pdf().duration(2.0), Err(voice));
        let all: Vec<_> = FILE_TYPES.iter().map(|t| t.mime).collect();
        let text = format!("x.exe: File type not allowed. Allowed types: {}", all.join(", "));
        one(FileMessageKind::File, Declared::new("x.exe", "application/x-msdownload", b"MZ"), Err(&text));
        let svg = Declared::new("x.svg", "image/svg+xml", b"<svg/>");
        let text = format!("x.svg: File type not allowed. Allowed types: {IMAGE_TYPES}");
        one(FileMessageKind::Image, svg, Err(&text));
    }

    #[test]
    fn extension_must_fit_the_mime_type() {
        let mismatch = |name: &str, mime: &str| {
            let bytes = crate::attach::samples::sample_bytes("png");
            let text = format!("{name}: File extension does not match the file type");
            one(FileMessageKind::File, Declared::new(name, mime, &bytes), Err(&text));
        };
        mismatch("photo.png", "image/jpeg");
        mismatch("photo", "image/png");
        mismatch("photo.", "image/png");
        mismatch("photo.png.exe", "image/png");
        mismatch("report.doc", "application/vnd.openxmlformats-officedocument.wordprocessingml.document");
        mismatch("sheet.xlsx", "application/vnd.ms-excel");
        mismatch("song.wav", "audio/mpeg");
    }

    #[test]
    fn size_is_checked_from_the_base64_length_before_decoding() {
        let mb = 1024 * 1024;
        // Not valid content at all: only the length matters before decoding.
        let sized = |name: &str, mime: &str, decoded: usize| Declared {
            data: "AAAA".repeat(decoded / 3) + ["", "AA==", "AAA="][decoded % 3],
            name: name.to_owned(),
            size: decoded as i64,
            mime: mime.to_owned(),
            duration: Some(1.0),
        };
        one(FileMessageKind::Image, sized("big.png", "image/png", 10 * mb - 1), Ok(()));
        one(
            FileMessageKind::Image,
            sized("big.png", "image/png", 10 * mb + 2),
            Err("big.png: File too large. Maximum size: 10.0MB"),
        );
        one(FileMessageKind::File, sized("big.pdf", "application/pdf", 50 * mb - 1), Ok(()));
        one(
            FileMessageKind::File,
            sized("big.pdf", "application/pdf", 50 * mb + 2),
            Err("big.pdf: File too large. Maximum size: 50.0MB"),
        );
        one(
            FileMessageKind::Voice,
            sized("big.mp3", "audio/mpeg", 50 * mb + 2),
            Err("big.mp3: File too large. Maximum size: 50.0MB"),
        );
        // A lying file_size does not get a large file past the limit.
        let mut lying = sized("big.png", "image/png", 10 * mb + 2);
        lying.size = 10;
        one(FileMessageKind::Image, lying, Err("big.png: File too large. Maximum size: 10.0MB"));
    }

    #[test]
    fn declared_size_must_equal_the_decoded_size() {
        let mut file = Declared::sample("a.png", "image/png");
        file.size += 1;
        one(FileMessageKind::Image, file.clone(), Err("a.png: File size does not match the file data"));
        file.size = -1;
        one(FileMessageKind::Image, file, Err("a.png: File size does not match the file data"));
        for (decoded, data) in [(1, "QQ=="), (2, "QUI="), (3, "QUJD")] {
            let mut file = Declared::sample("a.txt", "text/plain");
            file.data = data.to_owned();
            file.size = decoded;
            one(FileMessageKind::File, file.clone(), Ok(()));
            file.size = decoded + 1;
            one(FileMessageKind::File, file, Err("a.txt: File size does not match the file data"));
        }
    }

    #[test]
    fn data_url_prefix_is_tolerated() {
        let mut file = Declared::sample("a.png", "image/png");
        file.data = format!("data:image/png;base64,{}", file.data);
        one(FileMessageKind::Image, file.clone(), Ok(()));
        file.data = file.data.replacen(";base64", "", 1);
        one(FileMessageKind::Image, file, Err("a.png: Invalid base64 data"));
    }

    #[test]
    fn base64_of_impossible_length_is_invalid() {
        // Bad characters and misplaced padding are found while decoding.
        for data in ["QUJ", "QUJDR", "Q===", "QUJDR==="] {
            let mut file = Declared::sample("a.txt", "text/plain");
            file.data = data.to_owned();
            file.size = 2;
            one(FileMessageKind::File, file, Err("a.txt: Invalid base64 data"));
        }
    }

    #[test]
    fn empty_file_is_refused() {
        one(FileMessageKind::File, Declared::new("a.txt", "text/plain", b""), Err("a.txt: File is empty"));
    }

    #[test]
    fn message_carries_one_to_ten_files() {
        check(FileMessageKind::File, &[], Err("A message can carry 1 to 10 files, not 0"));
        let file = Declared::sample("a.pdf", "application/pdf");
        check(FileMessageKind::File, &vec![file.clone(); 10], Ok(()));
        check(FileMessageKind::File, &vec![file; 11], Err("A message can carry 1 to 10 files, not 11"));
    }

    #[test]
    fn voice_needs_a_positive_finite_duration() {
        let mp3 = || Declared::sample("v.mp3", "audio/mpeg");
        let err = Err("v.mp3: Duration must be a number of seconds greater than 0");
        one(FileMessageKind::Voice, mp3().duration(3.25), Ok(()));
        one(FileMessageKind::Voice, mp3(), err);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            one(FileMessageKind::Voice, mp3().duration(bad), err);
        }
        // An audio file in a `file` message may come without a duration.
        one(FileMessageKind::File, mp3(), Ok(()));
    }

    #[test]
    fn the_first_bad_file_is_the_one_named() {
        let good = Declared::sample("ok.png", "image/png");
        let bad = Declared::sample("bad.pdf", "application/pdf");
        let text = format!("bad.pdf: File type not allowed. Allowed types: {IMAGE_TYPES}");
        check(FileMessageKind::Image, &[good, bad], Err(&text));
    }

    fn sanitised(raw: &str) -> Result<String, String> {
        sanitize_file_name(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn names_are_reduced_to_a_safe_last_component() {
        let cases = [
            ("photo.jpg", "photo.jpg"),
            ("../../etc/passwd.txt", "passwd.txt"),
            ("..\\..\\windows\\win.ini.txt", "win.ini.txt"),
            ("C:\\Users\\me\\My Photo (1).jpg", "My_Photo__1_.jpg"),
            ("фото.png", "____.png"),
            ("a b;c$d.pdf", "a_b_c_d.pdf"),
            (".hidden.txt", ".hidden.txt"),
            ("x-y_z.1.zip", "x-y_z.1.zip"),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitised(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn long_names_are_shortened_to_100_characters_keeping_the_extension() {
        let name = format!("{}.jpeg", "n".repeat(200));
        let got = sanitize_file_name(&name).unwrap();
        assert_eq!(got, format!("{}.jpeg", "n".repeat(95)));
        // Far past the 255 bytes a file system allows in one name.
        let huge = format!("{}.png", "p".repeat(300));
        assert_eq!(sanitize_file_name(&huge).unwrap(), format!("{}.png", "p".repeat(96)));
        let huge = format!("dir/{}.txt", "é".repeat(5000));
        assert_eq!(sanitize_file_name(&huge).unwrap(), format!("{}.txt", "_".repeat(96)));
        let no_ext = sanitize_file_name(&"m".repeat(150)).unwrap();
        assert_eq!(no_ext, "m".repeat(100));
        // An "extension" of half the limit or more is no extension: cut plainly.
        let long_ext = format!("a.{}", "x".repeat(120));
        assert_eq!(sanitize_file_name(&long_ext).unwrap(), format!("a.{}", "x".repeat(98)));
        // 100 multi-byte characters are 200 bytes but 100 characters.
        assert_eq!(sanitize_file_name(&"é".repeat(100)).unwrap(), "_".repeat(100));
        for len in [99, 100, 101] {
            let name = format!("{}.pdf", "d".repeat(len - 4));
            let got = sanitize_file_name(&name).unwrap();
            assert!(got.len() == len.min(100) && got.ends_with("d.pdf"), "{len}: {got}");
        }
    }

    #[test]
    fn shown_names_lose_format_and_control_characters() {
        let cases = [
            ("photo 1.png", "photo 1.png"),
            ("../../etc/report.pdf", "../../etc/report.pdf"),
            ("фото ✓.png", "фото ✓.png"),
            ("evil\u{202E}gpj.exe", "evilgpj.exe"),
            ("invoice\u{202E}fdp.png", "invoicefdp.png"),
            ("a\u{202A}b\u{202B}c\u{202C}d\u{202D}e.txt", "abcde.txt"),
            ("\u{2066}a\u{2067}b\u{2068}c\u{2069}.txt", "abc.txt"),
            ("z\u{200B}e\u{200C}r\u{200D}o\u{200E}\u{200F}.txt", "zero.txt"),
            ("\u{FEFF}bom\u{061C}.txt", "bom.txt"),
            ("soft\u{00AD}hyphen\u{2060}\u{2061}\u{2062}\u{2063}\u{2064}.txt", "softhyphen.txt"),
            ("tag\u{E0001}\u{E0041}\u{E007F}\u{06DD}\u{FFF9}.txt", "tag.txt"),
            ("ctl\0\u{7}\n\u{85}.txt", "ctl.txt"),
            // Nothing visible left: the sanitised name stands in.
            ("\u{202E}\u{200B}", "fallback.png"),
            ("\u{FEFF} \u{202E}", "fallback.png"),
        ];
        for (raw, want) in cases {
            assert_eq!(display_file_name(raw, "fallback.png"), want, "{raw:?}");
        }
        let long = format!("{}\u{202E}.docx", "ж".repeat(400));
        let shown = display_file_name(&long, "x.docx");
        assert_eq!(shown, format!("{}.docx", "ж".repeat(250)));
        assert_eq!(shown.chars().count(), MAX_DISPLAY_NAME_CHARS);
        let spaces_first = format!("{}x", " ".repeat(300));
        assert_eq!(display_file_name(&spaces_first, "x"), "x");
    }

    #[test]
    fn format_characters_are_exactly_category_cf() {
        let cf = [
            '\u{AD}',
            '\u{600}',
            '\u{605}',
            '\u{61C}',
            '\u{6DD}',
            '\u{70F}',
            '\u{890}',
            '\u{8E2}',
            '\u{180E}',
            '\u{200B}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{FFF9}',
            '\u{FFFB}',
            '\u{110BD}',
            '\u{110CD}',
            '\u{13430}',
            '\u{1343F}',
            '\u{1BCA0}',
            '\u{1D173}',
            '\u{1D17A}',
            '\u{E0001}',
            '\u{E0020}',
            '\u{E007F}',
        ];
        for c in cf {
            assert!(is_format_char(c), "U+{:04X}", c as u32);
        }
        // Neighbours and look-alikes that are not Cf: letters, spaces, marks.
        let not_cf = [
            'a',
            ' ',
            '.',
            '\u{AC}',
            '\u{AE}',
            '\u{606}',
            '\u{200A}',
            '\u{2010}',
            '\u{2028}',
            '\u{2029}',
            '\u{2065}',
            '\u{2070}',
            '\u{FEFE}',
            '\u{FFFC}',
            '\u{E0000}',
            '\u{E0080}',
            '\u{E0100}',
            'ж',
            '✓',
        ];
        for c in not_cf {
            assert!(!is_format_char(c), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn unusable_names_are_errors() {
        for raw in [
            "",
            ".",
            "..",
            "...",
            "dir/",
            "dir/..",
            "a\0b.txt",
            "a\nb.txt",
            "tab\t.txt",
            "\u{7f}.txt",
            "\u{85}.txt",
            "   ",
            "a\u{202E}\nb.txt",
            "../x\u{1b}[31m.png",
        ] {
            let got = sanitised(raw);
            assert!(got.is_err(), "{raw:?} -> {got:?}");
            let text = got.unwrap_err();
            assert!(text.ends_with(": Invalid file name"), "{text}");
            assert!(!text.chars().any(char::is_control), "{text:?}");
            assert!(text.len() < 240, "{text}");
        }
        // The error text shows no format characters either.
        let text = sanitised("a\u{202E}\nb.txt").unwrap_err();
        assert_eq!(text, "a??b.txt: Invalid file name");
        // Found by fuzzing: shortening must not leave a name of only dots.
        assert!(sanitised(&format!("{}nn..j.", ".".repeat(150))).is_err());
    }

    #[test]
    fn magic_bytes_of_each_kind() {
        let yes = [
            (Magic::Mp3, &b"\xFF\xFB\x90\x64"[..]),
            (Magic::Mp3, b"\xFF\xF3\x00"),
            (Magic::Zip, b"PK\x05\x06\x00\x00"),
            (Magic::Gif, b"GIF87a"),
            (Magic::Rar, b"Rar!\x1a\x07\x00\xCF"),
        ];
        for (magic, head) in yes {
            assert!(magic_matches(magic, head), "{magic:?} {head:?}");
        }
        let no = [
            (Magic::Jpeg, &b"\x89PNG\r\n\x1a\n"[..]),
            (Magic::Png, b"\xFF\xD8\xFF\xE0"),
            (Magic::Mp3, b"\xFF\xD8\xFF"),
            (Magic::Mp3, b"\xFF"),
            (Magic::Webp, b"RIFF\x00\x00\x00\x00WAVE"),
            (Magic::Wav, b"RIFF\x00\x00\x00\x00WEBP"),
            (Magic::Wav, b"RIFF"),
            (Magic::Pdf, b"%PD"),
            (Magic::Ole, b"PK\x03\x04"),
            (Magic::Gif, b"GIF88a"),
            (Magic::Zip, b"PK\x01\x02"),
        ];
        for (magic, head) in no {
            assert!(!magic_matches(magic, head), "{magic:?} {head:?}");
        }
    }
}
