//! chatd: a small, fast chat server — direct rooms, text, images, files and
//! voice, presence, typing, read status, edits and deletes — on one SQLite
//! file.
//!
//! The crate map (see `ARCHITECTURE.md` for the data flow and invariants):
//! - `config`: flags and environment → validated `Config`;
//! - `server`: accept loop, connection limit, graceful shutdown;
//! - `http`: router (pure), handlers, the WebSocket upgrade, static files;
//! - `ws`: connection tasks, the frame-budget meter, the pure protocol parser;
//! - `hub`: sharded fan-out of committed events to connection outboxes;
//! - `store`: SQLite (read pool + the single writer thread), migrations;
//! - `attach`: attachment validation and streaming base64 decoding;
//! - `auth`: Argon2id passwords, HS256 tokens, revocation;
//! - `limits`: rate limits, caps and the frame budget (pure bookkeeping);
//! - `pages`: rendered pages of messages shared by a room's members (bounded);
//! - `json`: the message JSON written by hand for the hot frames;
//! - `model`: the API's objects and their JSON; `metrics`: Prometheus text;
//! - `memory`: gives freed heap back to the system after connections close.

pub mod attach;
pub mod auth;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod config_file;
pub mod doctor;
pub mod error;
pub mod http;
pub mod hub;
pub mod json;
pub mod limits;
pub mod links;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod pages;
pub mod server;
pub mod state;
pub mod store;
pub mod thumbnails;
pub mod time;
pub mod ws;
