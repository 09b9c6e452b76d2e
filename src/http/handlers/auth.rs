//! Register, login (JSON or OAuth2 password form) and me.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::auth::password;
use crate::error::ApiError;
use crate::http::Body;
use crate::http::util::{is_form, json, pairs, parse_json, read_body, user_of};
use crate::model::User;
use crate::state::AppState;
use crate::store::reads;
use crate::store::writer::NewUser;

#[derive(Deserialize)]
struct RegisterBody {
    name: String,
    email: String,
    password: String,
    #[serde(default)]
    avatar_url: Option<String>,
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

/// Trimmed, lower-cased, and shaped like an address: `local@domain.tld`.
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            }
            None => false,
        };
    if valid { Ok(email) } else { Err(ApiError::unprocessable("Invalid email address")) }
}

fn token_answer(state: &AppState, status: StatusCode, user: &User) -> Result<Response<Body>, ApiError> {
    let token = state.keys.issue(user.id).map_err(|e| ApiError::Internal(e.to_string()))?;
    json(status, &serde_json::json!({"access_token": token, "token_type": "bearer", "user": user}))
}

/// Runs password work on the hashing threads; 429 when they are swamped.
async fn hashing<T: Send + 'static>(state: &AppState, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    state
        .hasher
        .run(f)
        .await
        .map_err(|_| ApiError::TooManyRequests("Too many login attempts at once, try again shortly"))
}

pub async fn register(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (_, bytes) = read_body(req, state.config.max_body_bytes).await?;
    let body: RegisterBody = parse_json(&bytes)?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::unprocessable("name must be 1..100 characters"));
    }
    let email = normalize_email(&body.email)?;
    let length = body.password.chars().count();
    if length < 8 {
        return Err(ApiError::unprocessable("Password must be at least 8 characters"));
    }
    if body.password.len() > 1024 {
        return Err(ApiError::unprocessable("Password must be at most 1024 bytes"));
    }
    let avatar_url = body.avatar_url.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
    if avatar_url.as_ref().is_some_and(|u| u.len() > 2048) {
        return Err(ApiError::unprocessable("avatar_url must be at most 2048 bytes"));
    }
    let password = body.password;
    let password_hash = hashing(state, move || password::hash(&password)).await?.map_err(ApiError::Internal)?;
    let user = state.writer.register(NewUser { name, email, password_hash, avatar_url }).await?;
    state.max_user_id.fetch_max(user.id, std::sync::atomic::Ordering::Relaxed);
    token_answer(state, StatusCode::CREATED, &user)
}

pub async fn login(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (headers, bytes) = read_body(req, state.config.max_body_bytes).await?;
    let body = if is_form(&headers) && !bytes.trim_ascii_start().starts_with(b"{") {
        let mut form = pairs(&bytes);
        match (form.remove("username").or_else(|| form.remove("email")), form.remove("password")) {
            (Some(email), Some(password)) => LoginBody { email, password },
            _ => return Err(ApiError::unprocessable("username and password are required")),
        }
    } else {
        parse_json(&bytes)?
    };
    let email = body.email.trim().to_lowercase();
    let found = state.reader.run(move |c| reads::user_by_email(c, &email)).await?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => {
            let dummy = state
                .dummy_hash
                .get_or_try_init(|| async {
                    hashing(state, || password::hash("not a password anyone has")).await?.map_err(ApiError::Internal)
                })
                .await?;
            (None, dummy.clone())
        }
    };
    let password = body.password;
    let matches = hashing(state, move || password::verify(&password, &hash)).await?;
    match user {
        Some(user) if matches => token_answer(state, StatusCode::OK, &user),
        _ => Err(ApiError::Unauthenticated("Incorrect email or password")),
    }
}

pub async fn me(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let found = state.reader.run(move |c| reads::user_by_id(c, user)).await?;
    json(StatusCode::OK, &found.ok_or(ApiError::Unauthenticated("User not found"))?)
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_are_normalised_or_refused() {
        assert_eq!(normalize_email("  Ann@Example.COM ").unwrap(), "ann@example.com");
        for bad in ["", "ann", "ann@", "@x.io", "a@b", "a b@c.io", "a@b@c.io", "a@.io", "a@io.", "a@x..io"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
