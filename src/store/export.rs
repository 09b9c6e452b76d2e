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
//!
//! The zip itself is written by `Zip`, which knows no database: this file
//! reads SQLite for it, `store::pg::search` PostgreSQL, and both stores
//! write the same bytes for the same data.

use std::collections::BTreeSet;
use std::io::{Seek, Write};
use std::path::Path;

use rusqlite::Connection;
use zip::write::SimpleFileOptions;

use super::StoreError;
use super::reads::{self, PageQuery};
use crate::links::Links;
use crate::model::{Message, Room, RoomId, TempId, User, UserId};

/// Messages read per page.
pub const PAGE: u32 = 500;

fn zip_error(e: zip::result::ZipError) -> StoreError {
    StoreError::CommitFailed(format!("cannot write the export: {e}"))
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::CommitFailed(format!("cannot write the export: {e}"))
}

/// Writes `user`'s export into `out`; returns how many messages it holds.
pub fn write<W: Write + Seek>(conn: &Connection, user: UserId, static_dir: &Path, out: W) -> Result<u64, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let mut zip = Zip::new(out, user);
    let rooms = reads::rooms(&tx, user)?;
    let mut listed = Vec::with_capacity(rooms.len());
    for room in &rooms {
        let members: Vec<User> = reads::member_ids(&tx, room.id)?
            .into_iter()
            .filter_map(|id| reads::user_by_id(&tx, id).ok().flatten())
            .collect();
        listed.push(zip.room_json(room, members));
    }
    zip.rooms(&listed)?;
    for room in &rooms {
        zip.start_room(room.id)?;
        let mut after = 0;
        loop {
            let Some(page) = reads::messages_page(&tx, user, room.id, PageQuery::After { id: after, limit: PAGE })?
            else {
                break;
            };
            let Some(last) = page.messages.last().map(|(m, _)| m.id) else { break };
            for (message, liked) in &page.messages {
                zip.message(message, *liked)?;
            }
            after = last;
            if !page.has_more {
                break;
            }
        }
        zip.end_room()?;
    }
    Ok(zip.finish(static_dir)?.1)
}

/// The export's zip as it is written: entries in the order `write` makes
/// them (`rooms.json`, then each room's messages, then the files they
/// name), whatever store the rows come from.
pub struct Zip<W: Write + Seek> {
    zip: zip::ZipWriter<W>,
    options: SimpleFileOptions,
    /// Paths inside the zip, not links to this server.
    links: Links,
    user: UserId,
    /// The files (and thumbnails) the written messages name.
    files: BTreeSet<String>,
    messages: u64,
    /// Whether the open room entry has no message yet.
    first: bool,
}

impl<W: Write + Seek> Zip<W> {
    pub fn new(out: W, user: UserId) -> Zip<W> {
        Zip {
            zip: zip::ZipWriter::new(out),
            options: SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true),
            links: Links::public(""),
            user,
            files: BTreeSet::new(),
            messages: 0,
            first: true,
        }
    }

    /// A room as `rooms.json` lists it: as the API shows it, with its members.
    pub fn room_json(&self, room: &Room, members: Vec<User>) -> serde_json::Value {
        let mut json = room.json(self.user, &self.links);
        json["members"] = serde_json::to_value(members).unwrap_or_default();
        json
    }

    /// The `rooms.json` entry.
    pub fn rooms(&mut self, listed: &[serde_json::Value]) -> Result<(), StoreError> {
        self.zip.start_file("rooms.json", self.options).map_err(zip_error)?;
        serde_json::to_writer_pretty(&mut self.zip, listed).map_err(|e| io_error(e.into()))
    }

    /// Opens `rooms/<id>.json`; its messages follow, oldest first.
    pub fn start_room(&mut self, id: RoomId) -> Result<(), StoreError> {
        self.zip.start_file(format!("rooms/{id}.json"), self.options).map_err(zip_error)?;
        self.zip.write_all(b"[").map_err(io_error)?;
        self.first = true;
        Ok(())
    }

    /// One message of the open room, and a note of its files.
    pub fn message(&mut self, message: &Message, liked: bool) -> Result<(), StoreError> {
        for file in message.files.iter().flatten() {
            self.files.insert(file.file_path.clone());
            self.files.extend(file.thumbnail_path.clone());
        }
        self.zip.write_all(if self.first { b"\n" } else { b",\n" }).map_err(io_error)?;
        serde_json::to_writer(&mut self.zip, &message.json(self.user, liked, &self.links, TempId::Hide))
            .map_err(|e| io_error(e.into()))?;
        self.first = false;
        self.messages += 1;
        Ok(())
    }

    pub fn end_room(&mut self) -> Result<(), StoreError> {
        self.zip.write_all(b"\n]\n").map_err(io_error)
    }

    /// Copies the noted files under `static/` (only plain paths under
    /// `chat_files/`; a file missing from disk is left out), finishes the
    /// zip, and answers the writer and how many messages it holds.
    pub fn finish(mut self, static_dir: &Path) -> Result<(W, u64), StoreError> {
        for rel in std::mem::take(&mut self.files) {
            let plain = rel.starts_with("chat_files/") && rel.split('/').all(|s| !s.is_empty() && s != "..");
            let Ok(mut source) = std::fs::File::open(static_dir.join(&rel)) else { continue };
            if plain {
                self.zip.start_file(format!("static/{rel}"), self.options).map_err(zip_error)?;
                std::io::copy(&mut source, &mut self.zip).map_err(io_error)?;
            }
        }
        let out = self.zip.finish().map_err(zip_error)?;
        Ok((out, self.messages))
    }
}
