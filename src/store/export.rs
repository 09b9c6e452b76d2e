//! A user's export (issue 14): a zip of everything they can see, read in
//! one read transaction (one consistent moment):
//!
//! - `rooms.json`: their rooms, each with its members;
//! - `rooms/<id>.json`: each room's messages, oldest first (newest last),
//!   as the REST API renders them, with `file_path`s relative to the zip
//!   (`/static/chat_files/...` is the entry `static/chat_files/...`);
//! - `static/chat_files/...`: the files (and thumbnails) of those messages.
//!
//! Messages are read a page at a time and written straight into the zip
//! entry; files are copied in chunks. The zip goes to a seekable writer (a
//! temporary file for HTTP): memory stays flat whatever the history.

use std::collections::BTreeSet;
use std::io::{Seek, Write};
use std::path::Path;

use rusqlite::Connection;
use zip::write::SimpleFileOptions;

use super::StoreError;
use super::reads::{self, PageQuery};
use crate::links::Links;
use crate::model::{TempId, UserId};

/// Messages read per page.
const PAGE: u32 = 500;

fn zip_error(e: zip::result::ZipError) -> StoreError {
    StoreError::CommitFailed(format!("cannot write the export: {e}"))
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::CommitFailed(format!("cannot write the export: {e}"))
}

/// Writes `user`'s export into `out`; returns how many messages it holds.
pub fn write<W: Write + Seek>(conn: &Connection, user: UserId, static_dir: &Path, out: W) -> Result<u64, StoreError> {
    let tx = conn.unchecked_transaction()?;
    // Paths inside the zip, not links to this server.
    let links = Links::public("");
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    let mut zip = zip::ZipWriter::new(out);
    let rooms = reads::rooms(&tx, user)?;
    let mut listed = Vec::with_capacity(rooms.len());
    for room in &rooms {
        let mut json = room.json(user, &links);
        let members: Vec<crate::model::User> = reads::member_ids(&tx, room.id)?
            .into_iter()
            .filter_map(|id| reads::user_by_id(&tx, id).ok().flatten())
            .collect();
        json["members"] = serde_json::to_value(members).unwrap_or_default();
        listed.push(json);
    }
    zip.start_file("rooms.json", options).map_err(zip_error)?;
    serde_json::to_writer_pretty(&mut zip, &listed).map_err(|e| io_error(e.into()))?;
    let mut files = BTreeSet::new();
    let mut messages = 0u64;
    for room in &rooms {
        zip.start_file(format!("rooms/{}.json", room.id), options).map_err(zip_error)?;
        zip.write_all(b"[").map_err(io_error)?;
        let mut after = 0;
        let mut first = true;
        loop {
            let Some(page) = reads::messages_page(&tx, user, room.id, PageQuery::After { id: after, limit: PAGE })?
            else {
                break;
            };
            let Some(last) = page.messages.last().map(|(m, _)| m.id) else { break };
            for (message, liked) in &page.messages {
                for file in message.files.iter().flatten() {
                    files.insert(file.file_path.clone());
                    files.extend(file.thumbnail_path.clone());
                }
                zip.write_all(if first { b"\n" } else { b",\n" }).map_err(io_error)?;
                serde_json::to_writer(&mut zip, &message.json(user, *liked, &links, TempId::Hide))
                    .map_err(|e| io_error(e.into()))?;
                first = false;
                messages += 1;
            }
            after = last;
            if !page.has_more {
                break;
            }
        }
        zip.write_all(b"\n]\n").map_err(io_error)?;
    }
    for rel in files {
        let plain = rel.starts_with("chat_files/") && rel.split('/').all(|s| !s.is_empty() && s != "..");
        let Ok(mut source) = std::fs::File::open(static_dir.join(&rel)) else { continue };
        if plain {
            zip.start_file(format!("static/{rel}"), options).map_err(zip_error)?;
            std::io::copy(&mut source, &mut zip).map_err(io_error)?;
        }
    }
    zip.finish().map_err(zip_error)?;
    Ok(messages)
}
