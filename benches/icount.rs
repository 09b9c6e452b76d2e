//! Instruction-count harness for the hot paths, driven by `.ci/icount.sh`
//! under `valgrind --tool=callgrind`. Wall-clock benches drift on a shared
//! VM; instructions executed do not. `icount <path> <iterations>` builds its
//! fixed inputs, then runs that one path `iterations` times; the script runs
//! it twice with different iteration counts and divides the difference, so
//! process start, setup and first-call effects cancel out.
//!
//! Everything here must be deterministic: fixed inputs, no threads, no
//! runtime, no randomness. The only clock read is the expiry of signed file
//! links, whose digit count (and so instruction count) is the same all day.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use chatd::http::router::route;
use chatd::links::{Links, Signer};
use chatd::model::{Event, FileMeta, Message, MessageJson, MessageType, Reaction, ReplyTo, TempId, User};
use chatd::ws::protocol::{ClientCommand, parse};
use hyper::Method;

/// One measured path.
struct HotPath {
    /// Its name in `benches/icount.baseline`.
    name: &'static str,
    /// What one iteration does.
    what: &'static str,
    /// Sets up its inputs, then runs it that many times.
    run: fn(u64),
}

const PATHS: [HotPath; 4] = [
    HotPath {
        name: "parse_send_message",
        what: "ws::protocol::parse of one text send_message frame",
        run: parse_send_message,
    },
    HotPath {
        name: "render_new_message",
        what: "Event::render of a text new_message for one viewer",
        run: render_new_message,
    },
    HotPath { name: "route_mix_25", what: "http::router::route over 25 request lines", run: route_mix_25 },
    HotPath { name: "serialize_page_50", what: "a REST page of 50 messages to JSON bytes", run: serialize_page_50 },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["--list"] => {
            for path in PATHS {
                println!("{}\t{}", path.name, path.what);
            }
            ExitCode::SUCCESS
        }
        // `cargo bench` runs every bench with `--bench`: a smoke run of each
        // path, since the counts only mean something under callgrind.
        [] | ["--bench", ..] => {
            for path in PATHS {
                (path.run)(10);
                println!("icount {}: ok (counts come from .ci/icount.sh)", path.name);
            }
            ExitCode::SUCCESS
        }
        [name, iterations] => {
            let Some(path) = PATHS.iter().find(|path| path.name == name) else {
                eprintln!("icount: no path named {name:?}; --list shows them");
                return ExitCode::FAILURE;
            };
            let Ok(iterations) = iterations.parse::<u64>() else {
                eprintln!("icount: iterations must be a whole number, not {iterations:?}");
                return ExitCode::FAILURE;
            };
            (path.run)(iterations);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: icount --list | icount <path> <iterations>");
            ExitCode::FAILURE
        }
    }
}

const BASE_URL: &str = "https://chat.example.com";
const NOW_MS: i64 = 1_704_110_400_000;

/// The text frame of `benches/protocol.rs`: the common case.
fn parse_send_message(iterations: u64) {
    let frame = r#"{"type":"send_message","data":{"room_id":42,"receiver_id":7,"message_type":"text","content":"Hey, are we still on for lunch tomorrow at noon? I can book the usual place.","local_temp_id":"c0ffee12-3456-4789-abcd-0123456789ab"}}"#;
    assert!(matches!(parse(frame), Ok(ClientCommand::SendMessage(_))), "the frame must parse");
    for _ in 0..iterations {
        black_box(parse(black_box(frame)).ok());
    }
}

/// What a hub shard does once per viewer of a stored `new_message`.
fn render_new_message(iterations: u64) {
    let links = signed_links();
    let event = Event::NewMessage(message(0));
    assert_eq!(event.viewer_class(7), Some(0), "new_message is rendered once per viewer class");
    for _ in 0..iterations {
        black_box(black_box(&event).render(black_box(7), &links, Some(1_234_567)));
    }
}

/// The mix of `benches/router.rs`: hits, 404s, 405s and bad ids.
fn route_mix_25(iterations: u64) {
    let requests = [
        (Method::GET, "/api/chat/rooms/12/messages"),
        (Method::GET, "/api/chat/rooms"),
        (Method::POST, "/api/chat/rooms"),
        (Method::GET, "/api/chat/rooms/12"),
        (Method::POST, "/api/chat/rooms/12/read"),
        (Method::PUT, "/api/chat/messages/734"),
        (Method::DELETE, "/api/chat/messages/734"),
        (Method::POST, "/api/chat/messages/734/like"),
        (Method::GET, "/api/chat/unread-count"),
        (Method::GET, "/api/chat/online-users"),
        (Method::GET, "/api/chat/search-users"),
        (Method::GET, "/api/auth/me"),
        (Method::POST, "/api/auth/login"),
        (Method::GET, "/api/chat/ws"),
        (Method::GET, "/static/chat_files/images/user_3_1704110400000_a1b2c3.png"),
        (Method::HEAD, "/static/app.js"),
        (Method::GET, "/healthz"),
        (Method::GET, "/"),
        (Method::GET, "/favicon.ico"),
        (Method::GET, "/api/chat/rooms/12/members"),
        (Method::GET, "/wp-admin/install.php"),
        (Method::GET, "/api/auth/login"),
        (Method::DELETE, "/api/chat/rooms"),
        (Method::GET, "/api/chat/rooms/abc/messages"),
        (Method::PUT, "/api/chat/messages/-4"),
    ];
    for _ in 0..iterations {
        for (method, path) in &requests {
            black_box(route(black_box(method), black_box(path)));
        }
    }
}

/// `GET /rooms/{id}/messages`'s response body, from rows already read: a
/// direct room's page of 50, every tenth message a photo (signed links to
/// the file and its thumbnail), some with reactions, one a reply.
fn serialize_page_50(iterations: u64) {
    let links = signed_links();
    let alice = Arc::new(user(3, "Alice"));
    let bob = Arc::new(user(7, "Bob"));
    let messages: Vec<(Message, bool)> = (0..50)
        .map(|i| {
            let mut m = message(if i % 10 == 9 { 1 } else { 0 });
            m.id = 912_300 + i;
            m.created_at = NOW_MS + i * 61_000;
            m.local_temp_id = None;
            m.is_read = i < 45;
            m.read_count = i64::from(i < 45);
            if i % 2 == 1 {
                (m.sender, m.receiver) = (bob.clone(), Some(alice.clone()));
            } else {
                (m.sender, m.receiver) = (alice.clone(), Some(bob.clone()));
            }
            m.content.truncate(30 + (i as usize * 7) % 45);
            if i % 7 == 0 {
                m.reactions = vec![Reaction { emoji: "👍".to_owned(), users: vec![3, 7] }];
                m.like_count = 1;
            }
            if i == 20 {
                m.reply_to = Some(ReplyTo {
                    id: 912_310,
                    sender_id: 3,
                    sender_name: "Alice".to_owned(),
                    message_type: "text",
                    preview: "Hey, are we still on for lunch".to_owned(),
                    is_deleted: false,
                });
            }
            (m, i % 7 == 0)
        })
        .collect();
    let viewer = 7;
    for _ in 0..iterations {
        let page = PageJson {
            messages: messages.iter().map(|(m, liked)| m.json(viewer, *liked, &links, TempId::Hide)).collect(),
            total: 1_234,
            has_more: true,
            page: Some(1),
            per_page: 50,
            total_pages: Some(25),
        };
        black_box(serde_json::to_vec(black_box(&page)).ok());
    }
}

/// The page object of `http/handlers/messages.rs` (private there), field
/// for field: the messages are the cost, the numbers are noise.
#[derive(serde::Serialize)]
struct PageJson<'a> {
    messages: Vec<MessageJson<'a>>,
    total: i64,
    has_more: bool,
    page: Option<u32>,
    per_page: u32,
    total_pages: Option<i64>,
}

/// Signed file links, as a server renders them by default.
fn signed_links() -> Links {
    Links::new(BASE_URL, Some(Signer::derive(b"a benchmark secret of enough length")), 86_400)
}

fn user(id: i64, name: &str) -> User {
    User {
        id,
        name: name.to_owned(),
        email: format!("{}@example.com", name.to_lowercase()),
        avatar_url: Some(format!("{BASE_URL}/static/avatars/{id}.png")),
        is_online: true,
    }
}

/// The message of `benches/serialize.rs`, with `files` photos.
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
        sender: Arc::new(user(3, "Alice")),
        receiver: Some(Arc::new(user(7, "Bob"))),
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
