//! Backup and restore (issue 14): `chatd backup` copies a consistent
//! snapshot and its files while the server keeps writing; `chatd restore`
//! into a fresh directory gives a server with every message (and file)
//! acknowledged before the backup began.

use std::collections::HashSet;
use std::process::Command;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::attachments::{file, sample};
use crate::support::TestServer;

fn chatd(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--static-dir")
        .arg(dir.join("static"))
        .output()
        .expect("run chatd")
}

#[tokio::test]
async fn a_backup_under_write_load_restores_every_acknowledged_message() {
    let s = TestServer::start().await;
    let (ann, bob, room) = s.pair("ann", "bob").await;
    let mut a = s.ws(&ann).await;
    // Messages, every fifth with an image, each acknowledged by its echo.
    let png = sample("png");
    let mut acked: Vec<(i64, bool)> = Vec::new();
    let send = |i: usize| {
        let temp = format!("m{i}");
        let data = if i.is_multiple_of(5) {
            json!({"room_id": room, "message_type": "image", "content": format!("pic {i}"), "local_temp_id": temp, "files_data": [file("p.png", &png, "image/png")]})
        } else {
            json!({"room_id": room, "message_type": "text", "content": format!("text {i}"), "local_temp_id": temp})
        };
        (json!({"type": "send_message", "data": data}), temp)
    };
    for i in 0..60 {
        let (frame, temp) = send(i);
        a.send(frame).await;
        let echo = a.expect_where("new_message", |v| v["data"]["local_temp_id"] == temp.as_str()).await;
        acked.push((echo["data"]["id"].as_i64().expect("id"), i.is_multiple_of(5)));
    }
    // The backup starts now; writes go on while it runs.
    let dest = tempfile::tempdir().expect("dest");
    let backup_dir = dest.path().join("backup");
    let (dir, backup_path) = (s.dir.path().to_owned(), backup_dir.to_string_lossy().into_owned());
    let backup = tokio::task::spawn_blocking(move || chatd(&["backup", &backup_path], &dir));
    let mut i = 60;
    while !backup.is_finished() && i < 400 {
        let (frame, temp) = send(i);
        a.send(frame).await;
        a.expect_where("new_message", |v| v["data"]["local_temp_id"] == temp.as_str()).await;
        i += 1;
    }
    let out = backup.await.expect("backup ran");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("backed up to") && said.contains(" MB, ") && said.contains(" s"), "{said}");
    a.close().await;
    s.stop().await;

    // Restore into a fresh directory and serve it.
    let fresh = tempfile::tempdir().expect("fresh");
    let out = chatd(&["restore", &backup_dir.to_string_lossy()], fresh.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = chatd(&["restore", &backup_dir.to_string_lossy()], fresh.path());
    assert!(!again.status.success(), "never over an existing database");
    let config = chatd::config::Config::for_tests(fresh.path());
    let r = TestServer::start_in(fresh, config).await;
    // Bob's token from before still works: the secret came along.
    let mut seen: HashSet<i64> = HashSet::new();
    let mut files = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            Some(id) => format!("/api/chat/rooms/{room}/messages?before_id={id}&limit=100"),
            None => format!("/api/chat/rooms/{room}/messages?before_id=9223372036854775807&limit=100"),
        };
        let page = r.get(&path, &bob.token).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let messages = page.json["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            seen.insert(m["id"].as_i64().expect("id"));
            if let Some(url) = m["files_data"][0]["file_path"].as_str() {
                files.push((m["id"].as_i64().expect("id"), url.to_owned()));
            }
        }
        if page.json["has_more"] != true || messages.is_empty() {
            break;
        }
        before = messages.first().and_then(|m| m["id"].as_i64());
    }
    for (id, with_file) in &acked {
        assert!(seen.contains(id), "message {id}, acknowledged before the backup, is restored");
        if *with_file {
            let (_, url) = files.iter().find(|(m, _)| m == id).expect("its file is listed");
            let local = url.strip_prefix(&format!("http://{}", r.addr)).unwrap_or(url);
            let got = r.raw(Method::GET, local, None, None, Vec::new()).await;
            assert_eq!((got.status, got.body.to_vec() == png), (StatusCode::OK, true), "{url}");
        }
    }
    // Every restored file message has its file.
    for (_, url) in &files {
        let local = url.strip_prefix(&format!("http://{}", r.addr)).unwrap_or(url);
        assert_eq!(r.raw(Method::GET, local, None, None, Vec::new()).await.status, StatusCode::OK, "{url}");
    }
    r.stop().await;
}
