//! `ws::protocol::parse`, the first thing every WebSocket frame meets: a
//! small text `send_message` (the common case, where per-frame overhead
//! counts) and frames carrying 1 MB and 10 MB of base64 in `files_data`
//! (where parsing must stay a borrowing scan of the frame, not a copy).
//! Throughput is in bytes of frame per second.

use std::hint::black_box;

use chatd::ws::protocol::{ClientCommand, parse};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MB: usize = 1024 * 1024;

fn text_frame() -> String {
    r#"{"type":"send_message","data":{"room_id":42,"receiver_id":7,"message_type":"text","content":"Hey, are we still on for lunch tomorrow at noon? I can book the usual place.","local_temp_id":"c0ffee12-3456-4789-abcd-0123456789ab"}}"#.to_owned()
}

/// A `file` message whose one attachment is `len` bytes of base64 text.
fn file_frame(len: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let data: String = (0..len).map(|i| alphabet[(i * 31 + i / 7) % 64] as char).collect();
    format!(
        r#"{{"type":"send_message","data":{{"room_id":42,"receiver_id":7,"message_type":"file","content":"","local_temp_id":"t-1","files_data":[{{"file_data":"{data}","file_name":"report.pdf","file_size":{},"mime_type":"application/pdf"}}]}}}}"#,
        len / 4 * 3
    )
}

fn bench_parse(c: &mut Criterion) {
    let frames = [("text", text_frame()), ("file_1MB", file_frame(MB)), ("file_10MB", file_frame(10 * MB))];
    for (_, frame) in &frames {
        assert!(matches!(parse(frame), Ok(ClientCommand::SendMessage(_))), "bench frame must parse");
    }
    let mut group = c.benchmark_group("parse");
    for (name, frame) in &frames {
        group.throughput(Throughput::Bytes(frame.len() as u64));
        if frame.len() > MB {
            group.sample_size(20);
        }
        group.bench_function(*name, |b| b.iter(|| parse(black_box(frame))));
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
