//! Rendering a message to its JSON frame: `Event::render` for `new_message`
//! (what the hub does once per viewer for every message) and
//! `Message::json` + `serde_json::to_string` (what REST pages do 50 times per
//! request), for a text message and a message with 10 files. DESIGN.md
//! measured serialisation halving REST throughput; this is that cost.

use std::hint::black_box;

use chatd::links::{Links, Signer};
use chatd::model::{Event, FileMeta, Message, MessageType, TempId, User};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BASE_URL: &str = "https://chat.example.com";
const NOW_MS: i64 = 1_704_110_400_000;

fn user(id: i64, name: &str) -> User {
    User {
        id,
        name: name.to_owned(),
        email: format!("{}@example.com", name.to_lowercase()),
        avatar_url: Some(format!("{BASE_URL}/static/avatars/{id}.png")),
        is_online: true,
    }
}

fn message(files: usize) -> Message {
    let files = (files > 0).then(|| {
        (0..files)
            .map(|i| FileMeta {
                file_name: format!("holiday_photo_{i:02}.jpg"),
                file_path: format!("chat_files/images/user_3_{NOW_MS}_{i:08x}.jpg"),
                file_size: 734_003 + i as u64,
                mime_type: "image/jpeg".to_owned(),
                duration: None,
                thumbnail_path: Some(format!("chat_files/thumbnails/user_3_{NOW_MS}_{i:08x}.jpg.jpg")),
            })
            .collect()
    });
    Message {
        id: 912_345,
        room_id: 42,
        sender: std::sync::Arc::new(user(3, "Alice")),
        receiver: Some(std::sync::Arc::new(user(7, "Bob"))),
        message_type: if files.is_some() { MessageType::Image } else { MessageType::Text },
        content: "Hey, are we still on for lunch tomorrow at noon? I can book the \"usual\" place.".to_owned(),
        files,
        duration: None,
        local_temp_id: Some("c0ffee12-3456-4789-abcd-0123456789ab".to_owned()),
        created_at: NOW_MS,
        edited_at: None,
        is_read: false,
        read_count: 0,
        is_deleted: false,
        like_count: 0,
        reply_to: None,
        reactions: Vec::new(),
        forwarded_from: None,
    }
}

fn bench_serialize(c: &mut Criterion) {
    // Signed file links, as a server renders them by default.
    let links = Links::new(BASE_URL, Some(Signer::derive(b"a benchmark secret of enough length")), 86_400);
    let mut group = c.benchmark_group("serialize");
    for (name, files) in [("text", 0), ("10_files", 10)] {
        let event = Event::NewMessage(message(files));
        let frame = event.render(7, &links, Some(1_234_567));
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("render_new_message/{name}"), |b| {
            b.iter(|| black_box(&event).render(black_box(7), &links, Some(1_234_567)))
        });
        let Event::NewMessage(m) = &event else { unreachable!() };
        group.bench_function(format!("message_json/{name}"), |b| {
            b.iter(|| serde_json::to_string(&black_box(m).json(black_box(7), false, &links, TempId::Hide)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_serialize);
criterion_main!(benches);
