//! File links (SPEC section 11). A stored file's URL carries an expiry and
//! an HMAC over its path and that expiry, with a key derived from the
//! server secret; the static server serves `chat_files/` only with a valid,
//! unexpired signature. Links are signed whenever a Message is rendered, so
//! only someone who can see the message gets one: a member removed from a
//! room, or a deleted message, gets no new link, and old ones die at their
//! expiry. `exp` is rounded up to a whole hour so that renders within the
//! hour give the same URL, which browsers then cache.
//!
//! `CHAT_FILE_LINKS=public` keeps Part I's unsigned links.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Renders file URLs: the server's base URL, and the key when links are signed.
pub struct Links {
    base_url: String,
    signer: Option<Signer>,
    ttl_secs: u64,
}

/// The key of file links, derived from the server secret so that a leaked
/// link key says nothing about the token key.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    pub fn derive(server_secret: &[u8]) -> Signer {
        let mut mac = HmacSha256::new_from_slice(server_secret).expect(ANY_KEY);
        mac.update(b"chatd file links v1");
        Signer { key: mac.finalize().into_bytes().into() }
    }

    fn mac(&self, rel_path: &str, exp: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect(ANY_KEY);
        mac.update(rel_path.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The signature of `rel_path` (as stored: `chat_files/<folder>/<name>`) until `exp`.
    pub fn sign(&self, rel_path: &str, exp: u64) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(rel_path, exp).finalize().into_bytes())
    }

    /// Whether `sig` signs `rel_path` until `exp`, and `exp` has not passed.
    /// The comparison is constant-time.
    pub fn verify(&self, rel_path: &str, exp: u64, sig: &str, now: u64) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else { return false };
        exp >= now && self.mac(rel_path, exp).verify_slice(&bytes).is_ok()
    }
}

/// HMAC takes keys of any length: `new_from_slice` cannot fail for it.
const ANY_KEY: &str = "HMAC accepts keys of any length";

impl Links {
    pub fn new(base_url: &str, signer: Option<Signer>, ttl_secs: u64) -> Links {
        Links { base_url: base_url.trim_end_matches('/').to_owned(), signer, ttl_secs: ttl_secs.max(1) }
    }

    /// Unsigned links (Part I), for tools and tests that render no files.
    pub fn public(base_url: &str) -> Links {
        Links::new(base_url, None, 86_400)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn signed(&self) -> bool {
        self.signer.is_some()
    }

    /// The URL of a stored file for a rendering now: valid at least the
    /// configured lifetime, `exp` rounded up to the hour.
    pub fn file_url(&self, rel_path: &str) -> String {
        self.url(rel_path, self.expiry_now())
    }

    /// The `exp` of a link rendered now. Renderings with the same expiry
    /// hold the same links, so a cached one is exact while it lasts.
    pub fn expiry_now(&self) -> u64 {
        (unix_now() + self.ttl_secs).div_ceil(3600) * 3600
    }

    /// A link for someone outside, valid `ttl_secs` from now: (url, exp).
    pub fn share_url(&self, rel_path: &str, ttl_secs: u64) -> (String, u64) {
        let exp = unix_now() + ttl_secs;
        (self.url(rel_path, exp), exp)
    }

    fn url(&self, rel_path: &str, exp: u64) -> String {
        match &self.signer {
            None => format!("{}/static/{rel_path}", self.base_url),
            Some(signer) => {
                format!("{}/static/{rel_path}?exp={exp}&sig={}", self.base_url, signer.sign(rel_path, exp))
            }
        }
    }

    /// Whether a request for `rel_path` with query `exp`/`sig` may be
    /// served (always, when links are public).
    pub fn allows(&self, rel_path: &str, exp: Option<&str>, sig: Option<&str>) -> bool {
        let Some(signer) = &self.signer else { return true };
        let (Some(exp), Some(sig)) = (exp.and_then(|e| e.parse::<u64>().ok()), sig) else { return false };
        signer.verify(rel_path, exp, sig, unix_now())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "chat_files/images/user_1_20240101_120000_0_a b.png";

    #[test]
    fn a_link_opens_its_own_file_until_it_expires() {
        let links = Links::new("http://h:1/", Some(Signer::derive(b"a server secret of enough length!")), 86_400);
        let url = links.file_url(PATH);
        let query = url.split_once('?').map(|(_, q)| q).expect("signed");
        let param = |name: &str| {
            query.split('&').find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('='))).expect(name)
        };
        let (exp, sig) = (param("exp"), param("sig"));
        assert!(url.starts_with("http://h:1/static/chat_files/images/"));
        let exp_secs: u64 = exp.parse().expect("number");
        assert_eq!(exp_secs % 3600, 0, "rounded to the hour");
        assert!(exp_secs >= unix_now() + 86_400);
        assert_eq!(links.file_url(PATH), url, "the same URL within the hour");
        assert!(links.allows(PATH, Some(exp), Some(sig)));
        assert!(!links.allows("chat_files/images/other.png", Some(exp), Some(sig)), "another file");
        assert!(!links.allows(PATH, Some(&(exp_secs + 3600).to_string()), Some(sig)), "a longer life");
        assert!(!links.allows(PATH, Some(exp), Some("AAAA")), "a wrong signature");
        assert!(!links.allows(PATH, None, Some(sig)));
        assert!(!links.allows(PATH, Some(exp), None));
        let other = Links::new("http://h:1", Some(Signer::derive(b"another server secret, also long")), 86_400);
        assert!(!other.allows(PATH, Some(exp), Some(sig)), "another server's key");
        // Expired: signed for a moment already past.
        let signer = Signer::derive(b"a server secret of enough length!");
        let past = unix_now() - 1;
        assert!(!links.allows(PATH, Some(&past.to_string()), Some(&signer.sign(PATH, past))));
        let (share, until) = links.share_url(PATH, 60);
        assert!(share.contains(&format!("exp={until}&")));
    }

    #[test]
    fn public_links_are_plain_paths() {
        let links = Links::public("http://h:1");
        assert_eq!(links.file_url(PATH), format!("http://h:1/static/{PATH}"));
        assert!(links.allows(PATH, None, None));
    }
}
