//! Attachment throughput, in bytes of base64 input per second: the pure
//! pre-decoding checks (`check_files`), the chunked decoder alone (into a
//! sink), and `store_files` end to end (decode, write, fsync, link) into a
//! temporary dir, for 1 MB and 10 MB files. DESIGN.md's prototype did about
//! 870 MB/s for the decode-and-write path; these numbers say whether the
//! chunked design keeps that and how much fsync costs on top.

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chatd::attach::decode::{DecodeBuffer, decode_into};
use chatd::attach::validate::Magic;
use chatd::attach::{FileMessageKind, IncomingFile, check_files, remove_stored, store_files};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MB: usize = 1024 * 1024;
const NOW_MS: i64 = 1_704_110_400_000;

/// A PDF-looking payload of `len` bytes, as base64.
fn pdf_base64(len: usize) -> String {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..len - bytes.len()).map(|i| (i * 31 % 251) as u8));
    STANDARD.encode(bytes)
}

fn incoming(data: &str, len: usize) -> IncomingFile<'_> {
    IncomingFile {
        file_data: data,
        file_name: "report.pdf",
        file_size: len as i64,
        mime_type: "application/pdf",
        duration: None,
    }
}

fn bench_attach(c: &mut Criterion) {
    let payloads: Vec<(usize, String)> = [MB, 10 * MB].into_iter().map(|len| (len, pdf_base64(len))).collect();

    let mut group = c.benchmark_group("check_files");
    for (len, data) in &payloads {
        group.throughput(Throughput::Bytes(data.len() as u64));
        let files = [incoming(data, *len)];
        group.bench_function(format!("{}MB", len / MB), |b| {
            b.iter(|| check_files(FileMessageKind::File, black_box(&files)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode_to_sink");
    let mut buffer = DecodeBuffer::new();
    for (len, data) in &payloads {
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(format!("{}MB", len / MB), |b| {
            b.iter(|| decode_into(black_box(data), Magic::Pdf, &mut std::io::sink(), &mut buffer))
        });
    }
    group.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    chatd::attach::prepare_dirs(dir.path()).expect("chat_files dirs");
    let mut group = c.benchmark_group("store_files");
    group.sample_size(20);
    for (len, data) in &payloads {
        group.throughput(Throughput::Bytes(data.len() as u64));
        let files = [incoming(data, *len)];
        group.bench_function(format!("{}MB", len / MB), |b| {
            b.iter(|| {
                let stored = store_files(dir.path(), 1, NOW_MS, FileMessageKind::File, &files).expect("valid file");
                remove_stored(dir.path(), &[stored[0].rel_path.as_str()]);
            })
        });
    }
    group.finish();
}

/// Thumbnail time per image size (SPEC section 11): a photo-like JPEG and
/// a PNG at 0.5, 2 and 12 megapixels, decoded, shrunk to 320 px and written
/// as JPEG (the file removed between iterations so each one makes it).
fn bench_thumbnails(c: &mut Criterion) {
    use chatd::attach::thumbnail::{make_thumbnail, thumbnail_rel_path};
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("chat_files/images");
    std::fs::create_dir_all(&images).expect("images dir");
    let mut group = c.benchmark_group("thumbnail");
    group.sample_size(10);
    for (megapixels, width, height) in [("0.5MP", 816, 612), ("2MP", 1632, 1224), ("12MP", 4000, 3000)] {
        for (format, ext) in [(image::ImageFormat::Jpeg, "jpg"), (image::ImageFormat::Png, "png")] {
            // Smooth gradients with some noise: closer to a photo than flat colour.
            let img = image::RgbImage::from_fn(width, height, |x, y| {
                let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 32;
                image::Rgb([(x * 255 / width) as u8 ^ n as u8, (y * 255 / height) as u8, ((x + y) % 256) as u8])
            });
            let name = format!("photo_{megapixels}.{ext}");
            let rel = format!("chat_files/images/{name}");
            img.save_with_format(images.join(&name), format).expect("encode");
            let thumb = dir.path().join(thumbnail_rel_path(&rel).expect("an image"));
            group.bench_function(format!("{ext}/{megapixels}"), |b| {
                b.iter_batched(
                    || {
                        let _ = std::fs::remove_file(&thumb);
                    },
                    |()| make_thumbnail(dir.path(), &rel).expect("thumbnail"),
                    criterion::BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_attach, bench_thumbnails);
criterion_main!(benches);
