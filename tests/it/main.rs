//! Integration tests: the real server on a loopback port, real HTTP and
//! WebSocket clients, real SQLite files and real files on disk.

mod abuse;
mod attachments;
mod auth;
mod backup;
mod durability;
mod export;
mod file_links;
mod forwarding;
mod groups;
mod logs;
mod messages;
mod metrics;
mod openapi;
mod page_cache;
mod reactions;
mod replies;
mod retention;
mod rooms;
mod scheduled;
mod search;
mod static_files;
mod stream;
mod support;
mod thumbnails;
mod uploads;
mod ws;
