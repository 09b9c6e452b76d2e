//! HS256 tokens: `sub` (user id as a string), `iat`, `exp`, and chatd's own
//! `ver` (the user's token version: a password change bumps it) and `jti`
//! (a random id, so that one token can be revoked). The algorithm is pinned,
//! `exp` is required, `nbf` checked when present, and a token with a `crit`
//! header is refused (chatd understands no critical extension).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Not authenticated")]
    Missing,
    #[error("Invalid token signature")]
    BadSignature,
    #[error("Invalid token algorithm")]
    BadAlgorithm,
    #[error("Token has expired")]
    Expired,
    #[error("Token is not valid yet")]
    NotYetValid,
    #[error("Invalid token")]
    Malformed,
    #[error("User not found")]
    UnknownUser,
    #[error("Token has been revoked")]
    Revoked,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    /// Tokens signed elsewhere (an outer login system) carry no version: 0.
    #[serde(default)]
    ver: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    /// Expiry, Unix seconds.
    pub exp: u64,
    pub version: u32,
    pub id: Option<String>,
}

/// The signing and verifying keys, built once at start.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    files: crate::links::Signer,
}

impl Keys {
    pub fn new(secret: &[u8], ttl: Duration) -> Keys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            files: crate::links::Signer::derive(secret),
        }
    }

    /// The secret from `CHAT_JWT_SECRET`, else the one kept in the data
    /// directory (created on first start with mode 0600).
    pub fn load(configured: Option<&str>, data_dir: &Path, ttl: Duration) -> std::io::Result<Keys> {
        if let Some(secret) = configured {
            return Ok(Keys::new(secret.as_bytes(), ttl));
        }
        let path = data_dir.join("jwt_secret");
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().len() >= 32 => return Ok(Keys::new(text.trim().as_bytes(), ttl)),
            Ok(_) => return Err(std::io::Error::other(format!("{} is too short", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut raw = [0u8; 48];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        write_private(&path, secret.as_bytes())?;
        Ok(Keys::new(secret.as_bytes(), ttl))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key of signed file links, derived from the same secret.
    pub fn file_signer(&self) -> crate::links::Signer {
        self.files.clone()
    }

    /// A token for `user` at token version `version`, valid for the
    /// configured lifetime.
    pub fn issue(&self, user: UserId, version: u32) -> Result<String, AuthError> {
        let iat = unix_now();
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|_| AuthError::Malformed)?;
        let claims = Claims {
            sub: user.to_string(),
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
            ver: version,
            jti: Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| AuthError::Malformed)
    }

    /// What a valid token says; whether its version is current and whether
    /// it was revoked is for the caller (`auth::TokenState`) to check.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = header_of(token).ok_or(AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                    AuthError::BadAlgorithm
                }
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ if header.alg.as_deref() != Some("HS256") => AuthError::BadAlgorithm,
                _ => AuthError::Malformed,
            })?;
        let user = data.claims.sub.parse::<UserId>().map_err(|_| AuthError::Malformed)?;
        Ok(Verified { user, exp: data.claims.exp, version: data.claims.ver, id: data.claims.jti })
    }
}

/// The parts of a token's header chatd looks at before trusting it.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

fn header_of(token: &str) -> Option<RawHeader> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

impl AuthError {
    /// The `detail` text of the 401.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthError::Missing => "Not authenticated",
            AuthError::BadSignature => "Invalid token signature",
            AuthError::BadAlgorithm => "Invalid token algorithm",
            AuthError::Expired => "Token has expired",
            AuthError::NotYetValid => "Token is not valid yet",
            AuthError::Malformed => "Invalid token",
            AuthError::UnknownUser => "User not found",
            AuthError::Revoked => "Token has been revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60))
    }

    fn sign(claims: &serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn issued_tokens_verify() {
        let k = keys();
        let token = k.issue(42, 3).unwrap();
        let verified = k.verify(&token).unwrap();
        assert_eq!((verified.user, verified.version), (42, 3));
        assert_eq!(verified.id.as_deref().map(str::len), Some(22), "16 random bytes, base64url");
        assert_ne!(k.verify(&k.issue(42, 3).unwrap()).unwrap().id, verified.id, "each token its own id");
    }

    #[test]
    fn every_bad_token_says_why() {
        let k = keys();
        let now = unix_now();
        let good = serde_json::json!({"sub": "1", "iat": now, "exp": now + 60});
        let secret = b"0123456789abcdef0123456789abcdef";
        assert_eq!(
            k.verify(&sign(&good, Algorithm::HS256, b"another secret of enough len")),
            Err(AuthError::BadSignature)
        );
        assert_eq!(k.verify(&sign(&good, Algorithm::HS384, secret)), Err(AuthError::BadAlgorithm));
        let expired = serde_json::json!({"sub": "1", "iat": now - 120, "exp": now - 60});
        assert_eq!(k.verify(&sign(&expired, Algorithm::HS256, secret)), Err(AuthError::Expired));
        let no_exp = serde_json::json!({"sub": "1", "iat": now});
        assert_eq!(k.verify(&sign(&no_exp, Algorithm::HS256, secret)), Err(AuthError::Malformed));
        let future = serde_json::json!({"sub": "1", "iat": now, "exp": now + 600, "nbf": now + 300});
        assert_eq!(k.verify(&sign(&future, Algorithm::HS256, secret)), Err(AuthError::NotYetValid));
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!("{}.{}.", engine.encode(br#"{"alg":"none","typ":"JWT"}"#), engine.encode(good.to_string()));
        assert_eq!(k.verify(&none), Err(AuthError::BadAlgorithm));
        assert_eq!(k.verify("garbage"), Err(AuthError::Malformed));
        // A critical extension chatd does not understand makes the token invalid.
        let mut crit = Header::new(Algorithm::HS256);
        crit.crit = Some(vec!["exp".into()]);
        let with_crit = jsonwebtoken::encode(&crit, &good, &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(k.verify(&with_crit), Err(AuthError::Malformed));
        // Tokens from an outer login system (no ver, no jti) are version 0.
        assert_eq!(k.verify(&sign(&good, Algorithm::HS256, secret)).unwrap().version, 0);
    }

    #[test]
    fn the_longest_lifetime_does_not_wrap() {
        let k = Keys::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(crate::config::MAX_TOKEN_TTL_SECS));
        let token = k.issue(1, 0).unwrap();
        assert!(k.verify(&token).unwrap().exp > unix_now());
    }

    #[test]
    fn generated_secret_is_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load(None, dir.path(), Duration::from_secs(60)).unwrap();
        let b = Keys::load(None, dir.path(), Duration::from_secs(60)).unwrap();
        let token = a.issue(7, 0).unwrap();
        assert_eq!(b.verify(&token).unwrap().user, 7);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("jwt_secret")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
