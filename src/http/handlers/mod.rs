//! Handlers, one file per area. Each is `async fn(&AppState, Request, ids)
//! -> Result<Response, ApiError>`: parse, authenticate, call the store, render.

pub mod auth;
pub mod events;
pub mod messages;
pub mod misc;
pub mod rooms;
pub mod uploads;
