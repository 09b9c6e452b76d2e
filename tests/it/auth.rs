//! Register, login, me, and every 401 of SPEC section 1.

use base64::Engine;
use hyper::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::TestServer;

fn secret_of(server: &TestServer) -> Vec<u8> {
    std::fs::read_to_string(server.state.config.data_dir.join("jwt_secret")).expect("secret").trim().as_bytes().to_vec()
}

#[tokio::test]
async fn register_login_and_me_return_the_same_user() {
    let s = TestServer::start().await;
    let r = s
        .send_json(Method::POST, "/api/auth/register", None, json!({"name": " Ann ", "email": " Ann@Example.COM ", "password": "password123", "avatar_url": "https://a.io/x.png"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json["token_type"], "bearer");
    let user = &r.json["user"];
    assert_eq!(
        user,
        &json!({"id": 1, "name": "Ann", "email": "ann@example.com", "avatar_url": "https://a.io/x.png", "is_online": false})
    );
    assert!(r.json.get("password_hash").is_none() && !r.text().contains("argon2"));

    let login = s
        .send_json(
            Method::POST,
            "/api/auth/login",
            None,
            json!({"email": "ANN@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(&login.json["user"], user);
    let form = s
        .raw(
            Method::POST,
            "/api/auth/login",
            None,
            Some("application/x-www-form-urlencoded"),
            b"username=ann%40example.com&password=password123".to_vec(),
        )
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text());
    let token = form.json["access_token"].as_str().unwrap();
    let me = s.get("/api/auth/me", token).await;
    assert_eq!(&me.json, user);

    let wrong = s
        .send_json(
            Method::POST,
            "/api/auth/login",
            None,
            json!({"email": "ann@example.com", "password": "password124"}),
        )
        .await;
    assert_eq!((wrong.status, wrong.detail()), (StatusCode::UNAUTHORIZED, "Incorrect email or password"));
    let nobody = s
        .send_json(
            Method::POST,
            "/api/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "password123"}),
        )
        .await;
    assert_eq!((nobody.status, nobody.detail()), (StatusCode::UNAUTHORIZED, "Incorrect email or password"));
    s.stop().await;
}

#[tokio::test]
async fn registration_refuses_duplicates_and_bad_input_without_writing() {
    let s = TestServer::start().await;
    s.user("ann").await;
    let dup = s
        .send_json(
            Method::POST,
            "/api/auth/register",
            None,
            json!({"name": "Ann2", "email": "ANN@test.io", "password": "password123"}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text());
    for body in [
        json!({"name": "x", "email": "not-an-email", "password": "password123"}),
        json!({"name": "x", "email": "x@test.io", "password": "short"}),
        json!({"name": "", "email": "x@test.io", "password": "password123"}),
        json!({"email": "x@test.io", "password": "password123"}),
        json!({"name": 5, "email": "x@test.io", "password": "password123"}),
    ] {
        let r = s.send_json(Method::POST, "/api/auth/register", None, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.text());
        assert!(!r.detail().is_empty());
    }
    let malformed =
        s.raw(Method::POST, "/api/auth/register", None, Some("application/json"), b"{\"name\":".to_vec()).await;
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge =
        s.raw(Method::POST, "/api/auth/register", None, Some("application/json"), vec![b' '; 2 * 1024 * 1024]).await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    let count: i64 = s.sql_i64("SELECT count(*) FROM users").await;
    assert_eq!(count, 1, "failed registrations wrote nothing");
    s.stop().await;
}

#[tokio::test]
async fn every_bad_token_is_a_401_that_says_why() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let secret = secret_of(&s);
    let now = chatd::auth::jwt::unix_now();
    let sign = |claims: serde_json::Value, alg: Algorithm, key: &[u8]| {
        jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap()
    };
    let missing = s.raw(Method::GET, "/api/chat/rooms", None, None, Vec::new()).await;
    assert_eq!((missing.status, missing.detail()), (StatusCode::UNAUTHORIZED, "Not authenticated"));
    assert_eq!(missing.headers["www-authenticate"], "Bearer");

    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        engine.encode(br#"{"alg":"none","typ":"JWT"}"#),
        engine.encode(json!({"sub": ann.id.to_string(), "iat": now, "exp": now + 60}).to_string())
    );
    let cases = [
        (
            sign(
                json!({"sub": ann.id.to_string(), "iat": now, "exp": now + 60}),
                Algorithm::HS256,
                b"some other secret 0123456789",
            ),
            "Invalid token signature",
        ),
        (none, "Invalid token algorithm"),
        (
            sign(json!({"sub": ann.id.to_string(), "iat": now, "exp": now + 60}), Algorithm::HS512, &secret),
            "Invalid token algorithm",
        ),
        (
            sign(json!({"sub": ann.id.to_string(), "iat": now - 100, "exp": now - 10}), Algorithm::HS256, &secret),
            "Token has expired",
        ),
        (sign(json!({"sub": "999", "iat": now, "exp": now + 60}), Algorithm::HS256, &secret), "User not found"),
        (sign(json!({"sub": "abc", "iat": now, "exp": now + 60}), Algorithm::HS256, &secret), "Invalid token"),
        ("not.a.token".to_owned(), "Invalid token"),
    ];
    for (token, why) in cases {
        let r = s.get("/api/chat/rooms", &token).await;
        assert_eq!((r.status, r.detail()), (StatusCode::UNAUTHORIZED, why), "{token}");
    }
    // A token minted elsewhere with the same secret is accepted.
    let outside = sign(json!({"sub": ann.id.to_string(), "iat": now, "exp": now + 60}), Algorithm::HS256, &secret);
    assert_eq!(s.get("/api/auth/me", &outside).await.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn tokens_survive_a_restart_with_the_generated_secret() {
    let s = TestServer::start().await;
    let ann = s.user("ann").await;
    let config = s.state.config.clone();
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, config).await;
    assert_eq!(s.get("/api/auth/me", &ann.token).await.status, StatusCode::OK);
    s.stop().await;
}
