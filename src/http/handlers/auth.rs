//! Register, login (JSON or OAuth2 password form), me, password change and
//! logout. Logins are throttled per client address and per account before
//! any password is hashed, so a flood of guesses costs the server nothing
//! and cannot crowd out a real user's login.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;

use crate::auth::password;
use crate::error::ApiError;
use crate::http::Body;
use crate::http::body;
use crate::http::util::{authenticate, bearer, client_ip, is_form, json, pairs, parse_json, read_body, user_of};
use crate::metrics::Limit;
use crate::model::{User, UserId};
use crate::state::AppState;
use crate::store::writer::{NewUser, Revoke};

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

#[derive(Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// The rules for a new password, on register and on change.
fn check_new_password(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < 8 {
        return Err(ApiError::unprocessable("Password must be at least 8 characters"));
    }
    if password.len() > 1024 {
        return Err(ApiError::unprocessable("Password must be at most 1024 bytes"));
    }
    Ok(())
}

/// An avatar is an `https:` URL of at most 2048 bytes, or nothing: any other
/// scheme (`javascript:`, `data:`, plain `http:`) would be rendered by every
/// client that shows the user.
fn check_avatar_url(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(url) = raw.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()) else { return Ok(None) };
    if url.len() > 2048 {
        return Err(ApiError::unprocessable("avatar_url must be at most 2048 bytes"));
    }
    let host = url.get(..8).filter(|scheme| scheme.eq_ignore_ascii_case("https://")).map(|_| &url[8..]);
    if !host.is_some_and(|h| {
        !h.is_empty() && !h.starts_with('/') && !h.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        return Err(ApiError::unprocessable("avatar_url must be an https:// URL"));
    }
    Ok(Some(url))
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

fn token_answer(state: &AppState, status: StatusCode, user: &User, version: u32) -> Result<Response<Body>, ApiError> {
    let token = state.keys.issue(user.id, version).map_err(|e| ApiError::Internal(e.to_string()))?;
    json(status, &serde_json::json!({"access_token": token, "token_type": "bearer", "user": user}))
}

/// Runs password work on the hashing threads; 429 when they are swamped.
async fn hashing<T: Send + 'static>(state: &AppState, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    state.hasher.run(f).await.map_err(|_| ApiError::TooManyRequests {
        detail: "Too many password checks at once; try again shortly".into(),
        retry_after_secs: 1,
    })
}

pub async fn register(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let ip = client_ip(&req);
    if let Err(wait) = state.limiter.registrations_per_ip.check(ip) {
        if state.metrics.limited(Limit::Registrations) {
            tracing::warn!(%ip, "registration refused: too many from this address");
        }
        return Err(ApiError::rate_limited("Too many registrations from this address", wait));
    }
    let (_, bytes) = read_body(state, req).await?;
    let body: RegisterBody = parse_json(&bytes)?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::unprocessable("name must be 1..100 characters"));
    }
    let email = normalize_email(&body.email)?;
    check_new_password(&body.password)?;
    let avatar_url = check_avatar_url(body.avatar_url)?;
    let password = body.password;
    let password_hash = hashing(state, move || password::hash(&password)).await?.map_err(ApiError::Internal)?;
    let user = state.writer.register(NewUser { name, email, password_hash, avatar_url }).await?;
    state.tokens.set_version(user.id, 0);
    token_answer(state, StatusCode::CREATED, &user, 0)
}

pub async fn login(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let ip = client_ip(&req);
    if let Err(wait) = state.limiter.logins_per_ip.check(ip) {
        if state.metrics.limited(Limit::LoginsPerIp) {
            tracing::warn!(%ip, "login refused: too many attempts from this address");
        }
        return Err(ApiError::rate_limited("Too many login attempts from this address", wait));
    }
    let (headers, bytes) = read_body(state, req).await?;
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
    let found = state.reader.credentials_by_email(email).await?;
    if let Some(found) = &found {
        account_not_blocked(state, found.user.id, ip)?;
    }
    let (account, hash) = match found {
        Some(credentials) => (Some((credentials.user, credentials.token_version)), credentials.password_hash),
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
    match account {
        Some((user, version)) if matches => {
            state.limiter.login_failures.succeeded(user.id, ip, std::time::Instant::now());
            state.tokens.set_version(user.id, version);
            token_answer(state, StatusCode::OK, &user, version)
        }
        Some((user, _)) => {
            state.limiter.login_failures.failed(user.id, std::time::Instant::now());
            Err(ApiError::Unauthenticated("Incorrect email or password"))
        }
        None => Err(ApiError::Unauthenticated("Incorrect email or password")),
    }
}

/// 429 while the account backs off after repeated wrong passwords.
fn account_not_blocked(state: &AppState, user: UserId, ip: std::net::IpAddr) -> Result<(), ApiError> {
    state.limiter.login_failures.check(user, ip, std::time::Instant::now()).map_err(|wait| {
        if state.metrics.limited(Limit::LoginFailures) {
            tracing::warn!(user, "login refused: the account is backing off after failed attempts");
        }
        ApiError::rate_limited("Too many failed logins for this account", wait)
    })
}

/// `POST /api/auth/password`: checks the current password, stores the new
/// one, and ends every token issued before (REST at once, open WebSockets
/// with 1008); answers a fresh token.
pub async fn change_password(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let ip = client_ip(&req);
    account_not_blocked(state, user, ip)?;
    let (_, bytes) = read_body(state, req).await?;
    let body: PasswordBody = parse_json(&bytes)?;
    check_new_password(&body.new_password)?;
    let credentials = state.reader.credentials(user).await?;
    let credentials = credentials.ok_or(ApiError::Unauthenticated("User not found"))?;
    let (current, hash) = (body.current_password, credentials.password_hash);
    if !hashing(state, move || password::verify(&current, &hash)).await? {
        state.limiter.login_failures.failed(user, std::time::Instant::now());
        return Err(ApiError::Unauthenticated("Incorrect password"));
    }
    state.limiter.login_failures.succeeded(user, ip, std::time::Instant::now());
    let new = body.new_password;
    let new_hash = hashing(state, move || password::hash(&new)).await?.map_err(ApiError::Internal)?;
    // The writer's commit also tells the hub to close the old WebSockets.
    let version = state.writer.change_password(user, new_hash).await?;
    state.tokens.set_version(user, version);
    tracing::info!(user, "password changed; earlier tokens revoked");
    token_answer(state, StatusCode::OK, &credentials.user, version)
}

/// `POST /api/auth/logout`: this token stops working, on REST and on the
/// WebSockets opened with it; the user's other devices stay logged in. A
/// token without an id (signed by an outer login system) can only be ended
/// with all of the user's tokens.
pub async fn logout(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let verified = authenticate(state, bearer(req.headers())).await?;
    let user = verified.user;
    match verified.id {
        Some(id) => {
            state.writer.revoke_token(user, Revoke::Token { id: id.clone(), expires_at: verified.exp }).await?;
            state.tokens.revoke(id, verified.exp, crate::auth::jwt::unix_now());
        }
        None => {
            let version = state.writer.revoke_token(user, Revoke::All).await?;
            state.tokens.set_version(user, version);
        }
    }
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

pub async fn me(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let user = user_of(state, &req).await?;
    let found = state.reader.user(user).await?;
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

    #[test]
    fn avatars_are_https_or_nothing() {
        use super::check_avatar_url;
        let ok = |u: &str| check_avatar_url(Some(u.into())).unwrap();
        assert_eq!(ok("https://img.example/a.png"), Some("https://img.example/a.png".into()));
        assert_eq!(ok(" HTTPS://x.io/a "), Some("HTTPS://x.io/a".into()));
        assert_eq!(ok("   "), None);
        assert_eq!(check_avatar_url(None).unwrap(), None);
        for bad in [
            "http://x.io/a.png",
            "javascript:alert(1)",
            "data:image/png;base64,AA",
            "https://",
            "https:///x",
            "//x.io/a",
            "https://x.io/a b",
        ] {
            assert!(check_avatar_url(Some(bad.into())).is_err(), "{bad}");
        }
    }
}
