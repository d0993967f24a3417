//! Who may open which document, and how: JWT verification, document grants, revocation.
//!
//! A token is a JWT signed with HS256 (shared secret) or EdDSA / ES256 (public key). Claims:
//!
//! ```json
//! { "sub": "user-42", "name": "Ada", "docs": ["notes/plan", "team-a/*"], "access": "rw",
//!   "exp": 1767225600, "iat": 1767222000, "jti": "token-id-1" }
//! ```
//!
//! - `docs`: exact document names, or prefixes ending in `*` (`"*"` alone grants every
//!   document);
//! - `access`: `"rw"` (read and write) or `"ro"` (read only);
//! - `exp` is required; `sub`, `name`, `iat`, `jti` are optional but revocation by user needs
//!   `sub` and revocation by token needs `jti`;
//! - `nbf`, when present, is checked with the same leeway as `exp`;
//! - `aud`: with `--jwt-audience` it is required and must contain that value; without it, it
//!   is not checked (identity providers commonly set one, and refusing every token carrying an
//!   audience would refuse theirs; a deployment whose key also signs tokens for other services
//!   should set `--jwt-audience`).
//!
//! A header listing critical extensions (`crit`) is refused: Tandem implements none, and RFC
//! 7515 (4.1.11) requires refusing a token whose critical extensions are not understood.
//! Times (`exp`, `iat`) past the year 9999 are refused as out of range.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, errors::ErrorKind};
use serde::Deserialize;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// Latest time a token claim may name (9999-12-31T23:59:59Z): later ones are refused rather
/// than overflowing `SystemTime` or the connection's expiry timer.
const MAX_CLAIM_SECS: u64 = 253_402_300_799;

/// What a token lets a connection do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Access {
    /// Read and write.
    #[serde(rename = "rw")]
    ReadWrite,
    /// Read only: updates are ignored (and counted).
    #[serde(rename = "ro")]
    ReadOnly,
}

/// The verified identity and rights of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// User id (`sub`), stored as the author of this connection's updates.
    pub user: Option<String>,
    /// Display name (`name`).
    pub name: Option<String>,
    /// Read-write or read-only.
    pub access: Access,
    /// When the token stops being accepted: `exp` plus the clock-skew leeway (`None` in open
    /// mode). A live connection is closed with 4401 then.
    pub expires_at: Option<SystemTime>,
    /// Token id (`jti`), for revocation.
    pub token_id: Option<String>,
    /// Issued-at (`iat`), to tell tokens issued before a user revocation.
    pub issued_at: Option<SystemTime>,
}

impl Grant {
    /// The grant of every connection in open mode: anonymous, read-write, no expiry.
    pub fn open() -> Grant {
        Grant {
            user: None,
            name: None,
            access: Access::ReadWrite,
            expires_at: None,
            token_id: None,
            issued_at: None,
        }
    }
}

/// Why a connection is refused. Reasons are short and never echo the token or secrets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token in `?token=` or `Sec-WebSocket-Protocol`.
    #[error("missing token")]
    Missing,
    /// Not a JWT, or its claims are not Tandem's.
    #[error("malformed token")]
    Malformed,
    /// The signature does not verify with the configured key.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` is missing or does not name this server (`--jwt-audience`).
    #[error("token audience does not match")]
    WrongAudience,
    /// The header lists critical extensions (`crit`), none of which Tandem implements.
    #[error("token has critical header extensions that are not supported")]
    UnsupportedCritical,
    /// `exp` or `iat` lies beyond the year 9999.
    #[error("token time claim out of range")]
    TimeOutOfRange,
    /// The token does not grant this document.
    #[error("token does not grant this document")]
    WrongDocument,
    /// The token or its user was revoked.
    #[error("token revoked")]
    Revoked,
}

impl AuthError {
    /// 403 when the token is valid but does not grant the document; 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::WrongDocument => 403,
            _ => 401,
        }
    }

    /// A metric label.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::UnsupportedCritical => "critical_header",
            AuthError::TimeOutOfRange => "time_out_of_range",
            AuthError::WrongDocument => "wrong_document",
            AuthError::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    docs: Vec<String>,
    access: Access,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
}

/// Whether `pattern` grants every document under `prefix`: only a prefix grant (`p*`) whose
/// prefix `p` starts `prefix` does (an exact name never covers a whole prefix).
pub(crate) fn covers_prefix(pattern: &str, prefix: &str) -> bool {
    pattern
        .strip_suffix('*')
        .is_some_and(|p| prefix.starts_with(p))
}

/// Whether `pattern` (an exact name, or a prefix ending in `*`) grants document `doc`.
pub(crate) fn grants(pattern: &str, doc: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => doc.starts_with(prefix),
        None => pattern == doc,
    }
}

/// Revoked token ids and users, kept in memory (and in storage by the caller).
#[derive(Debug, Default)]
pub struct Revocations {
    tokens: HashMap<String, SystemTime>,
    /// User id → when it was revoked: tokens issued before then are refused.
    users: HashMap<String, SystemTime>,
}

impl Revocations {
    /// Revokes token id `jti`.
    pub fn revoke_token(&mut self, jti: &str, at: SystemTime) {
        self.tokens.insert(jti.to_string(), at);
    }

    /// Revokes every token of `user` issued before `at` (and tokens without `iat`).
    pub fn revoke_user(&mut self, user: &str, at: SystemTime) {
        self.users.insert(user.to_string(), at);
    }

    /// Lifts a revocation; returns whether there was one.
    pub fn lift(&mut self, token_id: Option<&str>, user: Option<&str>) -> bool {
        let a = token_id.is_some_and(|t| self.tokens.remove(t).is_some());
        let b = user.is_some_and(|u| self.users.remove(u).is_some());
        a || b
    }

    /// Whether `grant` is revoked.
    pub fn is_revoked(&self, grant: &Grant) -> bool {
        if grant
            .token_id
            .as_deref()
            .is_some_and(|t| self.tokens.contains_key(t))
        {
            return true;
        }
        let Some(revoked_at) = grant.user.as_deref().and_then(|u| self.users.get(u)) else {
            return false;
        };
        grant.issued_at.is_none_or(|iat| iat <= *revoked_at)
    }
}

/// Verifies tokens for `token` mode; `None` keys means open mode.
pub struct Authenticator {
    keys: Option<Vec<(DecodingKey, Validation)>>,
    /// Revoked tokens and users.
    pub revocations: RwLock<Revocations>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &if self.keys.is_some() { "token" } else { "open" })
            .finish_non_exhaustive()
    }
}

fn validation(alg: Algorithm, audience: Option<&str>) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    match audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            v.set_required_spec_claims(&["exp", "aud"]);
        }
        None => {
            v.validate_aud = false;
            v.set_required_spec_claims(&["exp"]);
        }
    }
    v
}

/// A claim in seconds since the epoch as a time; `None` past [`MAX_CLAIM_SECS`].
fn claim_time(secs: u64) -> Option<SystemTime> {
    if secs > MAX_CLAIM_SECS {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

impl Authenticator {
    /// Open mode: everyone may read and write everything.
    pub fn open() -> Authenticator {
        Authenticator {
            keys: None,
            revocations: RwLock::default(),
        }
    }

    /// Token mode with an HS256 secret and/or a PEM public key (Ed25519 or P-256); with
    /// `audience`, tokens must carry it in `aud`.
    pub fn token(
        secret: Option<&[u8]>,
        public_key_pem: Option<&[u8]>,
        audience: Option<&str>,
    ) -> Result<Self, String> {
        if audience.is_some_and(|a| a.trim().is_empty()) {
            return Err("the JWT audience must not be empty".into());
        }
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            if secret.len() < 32 {
                return Err("the JWT secret must be at least 32 bytes".into());
            }
            keys.push((
                DecodingKey::from_secret(secret),
                validation(Algorithm::HS256, audience),
            ));
        }
        if let Some(pem) = public_key_pem {
            if let Ok(key) = DecodingKey::from_ed_pem(pem) {
                keys.push((key, validation(Algorithm::EdDSA, audience)));
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                keys.push((key, validation(Algorithm::ES256, audience)));
            } else {
                return Err("the JWT public key is neither an Ed25519 nor a P-256 PEM key".into());
            }
        }
        if keys.is_empty() {
            return Err("token mode needs --jwt-secret or --jwt-public-key-file".into());
        }
        Ok(Authenticator {
            keys: Some(keys),
            revocations: RwLock::default(),
        })
    }

    /// Whether tokens are required.
    pub fn is_open(&self) -> bool {
        self.keys.is_none()
    }

    /// Verifies `token` for document `doc`.
    pub fn authorize(&self, token: Option<&str>, doc: &str) -> Result<Grant, AuthError> {
        self.authorize_where(token, |pattern| grants(pattern, doc))
    }

    /// Verifies `token` for every document whose name starts with `prefix` (a change feed of
    /// a prefix): one of its grants must be a prefix grant covering `prefix`.
    pub fn authorize_prefix(&self, token: Option<&str>, prefix: &str) -> Result<Grant, AuthError> {
        self.authorize_where(token, |pattern| covers_prefix(pattern, prefix))
    }

    /// Verifies `token`; `allowed` decides whether one of its `docs` patterns is enough.
    fn authorize_where(
        &self,
        token: Option<&str>,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<Grant, AuthError> {
        let Some(keys) = &self.keys else {
            return Ok(Grant::open());
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::UnsupportedCritical);
        }
        let mut last = AuthError::BadSignature;
        for (key, validation) in keys {
            if !validation.algorithms.contains(&header.alg) {
                continue;
            }
            match decode::<Claims>(token, key, validation) {
                Ok(data) => return self.grant(data.claims, &allowed),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        ErrorKind::InvalidAudience => return Err(AuthError::WrongAudience),
                        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                            return Err(AuthError::WrongAudience);
                        }
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::Json(_)
                        | ErrorKind::InvalidClaimFormat(_)
                        | ErrorKind::MissingRequiredClaim(_)
                        | ErrorKind::InvalidToken
                        | ErrorKind::Base64(_)
                        | ErrorKind::Utf8(_) => AuthError::Malformed,
                        _ => AuthError::BadSignature,
                    }
                }
            }
        }
        Err(last)
    }

    fn grant(&self, claims: Claims, allowed: &impl Fn(&str) -> bool) -> Result<Grant, AuthError> {
        if !claims.docs.iter().any(|p| allowed(p)) {
            return Err(AuthError::WrongDocument);
        }
        // The leeway that let the token in also applies to the live connection, and a token
        // the connection timer would close at once is refused here instead: it used to get a
        // 101 (and the room's state vector and awareness) before an immediate 4401, and
        // clients reconnecting with it looped through that for the whole leeway.
        let expires_at =
            claim_time(claims.exp.saturating_add(LEEWAY_SECS)).ok_or(AuthError::TimeOutOfRange)?;
        if expires_at <= SystemTime::now() {
            return Err(AuthError::Expired);
        }
        let issued_at = match claims.iat {
            Some(iat) => Some(claim_time(iat).ok_or(AuthError::TimeOutOfRange)?),
            None => None,
        };
        let grant = Grant {
            user: claims.sub,
            name: claims.name,
            access: claims.access,
            expires_at: Some(expires_at),
            token_id: claims.jti,
            issued_at,
        };
        let revoked = self
            .revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_revoked(&grant);
        if revoked {
            return Err(AuthError::Revoked);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    fn auth() -> Authenticator {
        Authenticator::token(Some(SECRET), None, None).expect("auth")
    }

    #[test]
    fn patterns() {
        assert!(grants("a", "a"));
        assert!(!grants("a", "ab"));
        assert!(grants("team/*", "team/x"));
        assert!(!grants("team/*", "other"));
        assert!(grants("*", "anything"));
    }

    #[test]
    fn prefix_coverage() {
        assert!(covers_prefix("team/*", "team/"));
        assert!(covers_prefix("team/*", "team/plans/"));
        assert!(covers_prefix("*", ""));
        assert!(!covers_prefix("team/*", "te"));
        assert!(!covers_prefix("team/a", "team/a"));
    }

    #[test]
    fn valid_token_grants_its_documents() {
        let t = token(
            json!({"sub": "u1", "name": "Ada", "docs": ["notes", "team/*"], "access": "ro", "exp": now() + 60, "jti": "t1"}),
            SECRET,
        );
        let g = auth().authorize(Some(&t), "team/plan").expect("granted");
        assert_eq!(g.user.as_deref(), Some("u1"));
        assert_eq!(g.access, Access::ReadOnly);
        assert_eq!(
            auth().authorize(Some(&t), "other"),
            Err(AuthError::WrongDocument)
        );
    }

    #[test]
    fn refusals() {
        let a = auth();
        assert_eq!(a.authorize(None, "d"), Err(AuthError::Missing));
        assert_eq!(a.authorize(Some("garbage"), "d"), Err(AuthError::Malformed));
        let claims = json!({"docs": ["d"], "access": "rw", "exp": now() + 60});
        let bad = token(claims.clone(), b"another-secret-another-secret-xx");
        assert_eq!(a.authorize(Some(&bad), "d"), Err(AuthError::BadSignature));
        let expired = token(
            json!({"docs": ["d"], "access": "rw", "exp": now() - 600}),
            SECRET,
        );
        assert_eq!(a.authorize(Some(&expired), "d"), Err(AuthError::Expired));
        let no_docs = token(json!({"access": "rw", "exp": now() + 60}), SECRET);
        assert_eq!(a.authorize(Some(&no_docs), "d"), Err(AuthError::Malformed));
        assert!(a.authorize(Some(&token(claims, SECRET)), "d").is_ok());
    }

    #[test]
    fn revocation_by_token_and_by_user() {
        let a = auth();
        let t = token(
            json!({"sub": "u1", "docs": ["d"], "access": "rw", "exp": now() + 60, "iat": now() - 10, "jti": "t1"}),
            SECRET,
        );
        a.revocations
            .write()
            .expect("lock")
            .revoke_token("t1", SystemTime::now());
        assert_eq!(a.authorize(Some(&t), "d"), Err(AuthError::Revoked));
        a.revocations.write().expect("lock").lift(Some("t1"), None);
        assert!(a.authorize(Some(&t), "d").is_ok());
        a.revocations
            .write()
            .expect("lock")
            .revoke_user("u1", SystemTime::now());
        assert_eq!(a.authorize(Some(&t), "d"), Err(AuthError::Revoked));
        // A token issued after the user revocation is accepted again.
        let fresh = token(
            json!({"sub": "u1", "docs": ["d"], "access": "rw", "exp": now() + 60, "iat": now() + 5}),
            SECRET,
        );
        assert!(a.authorize(Some(&fresh), "d").is_ok());
    }

    #[test]
    fn open_mode_grants_everything() {
        assert_eq!(
            Authenticator::open().authorize(None, "x"),
            Ok(Grant::open())
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Authenticator::token(Some(b"short"), None, None).is_err());
        assert!(Authenticator::token(None, None, None).is_err());
        assert!(Authenticator::token(None, Some(b"not a pem"), None).is_err());
        assert!(Authenticator::token(Some(SECRET), None, Some(" ")).is_err());
    }

    fn token_with_header(header: Header, claims: serde_json::Value) -> String {
        encode(&header, &claims, &EncodingKey::from_secret(SECRET)).expect("encode")
    }

    #[test]
    fn not_before_is_checked_with_the_leeway() {
        let a = auth();
        let later = token(
            json!({"docs": ["d"], "access": "rw", "exp": now() + 600, "nbf": now() + 60}),
            SECRET,
        );
        assert_eq!(a.authorize(Some(&later), "d"), Err(AuthError::NotYetValid));
        let skewed = token(
            json!({"docs": ["d"], "access": "rw", "exp": now() + 600, "nbf": now() + 2}),
            SECRET,
        );
        assert!(a.authorize(Some(&skewed), "d").is_ok());
        let bad = token(
            json!({"docs": ["d"], "access": "rw", "exp": now() + 600, "nbf": "soon"}),
            SECRET,
        );
        assert_eq!(a.authorize(Some(&bad), "d"), Err(AuthError::Malformed));
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-ext".into()]);
        header.extras.insert("exp-ext", true);
        let t = token_with_header(
            header,
            json!({"docs": ["d"], "access": "rw", "exp": now() + 60}),
        );
        assert_eq!(
            auth().authorize(Some(&t), "d"),
            Err(AuthError::UnsupportedCritical)
        );
    }

    #[test]
    fn audience() {
        let claims = |aud: serde_json::Value| {
            token(
                json!({"docs": ["d"], "access": "rw", "exp": now() + 60, "aud": aud}),
                SECRET,
            )
        };
        let none = token(
            json!({"docs": ["d"], "access": "rw", "exp": now() + 60}),
            SECRET,
        );
        // Without --jwt-audience, aud is not checked.
        assert!(auth().authorize(Some(&claims(json!("other"))), "d").is_ok());
        assert!(
            auth()
                .authorize(Some(&claims(json!(["a", "b"]))), "d")
                .is_ok()
        );
        let strict = Authenticator::token(Some(SECRET), None, Some("tandem")).expect("auth");
        assert!(
            strict
                .authorize(Some(&claims(json!("tandem"))), "d")
                .is_ok()
        );
        assert!(
            strict
                .authorize(Some(&claims(json!(["x", "tandem"]))), "d")
                .is_ok()
        );
        assert_eq!(
            strict.authorize(Some(&claims(json!("other"))), "d"),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            strict.authorize(Some(&none), "d"),
            Err(AuthError::WrongAudience)
        );
    }

    #[test]
    fn huge_times_are_refused_not_a_panic() {
        let a = auth();
        for (exp, iat) in [
            (u64::MAX, None),
            (u64::MAX - 3, None),
            (MAX_CLAIM_SECS, None),
            (now() + 60, Some(u64::MAX)),
        ] {
            let mut claims = json!({"docs": ["d"], "access": "rw", "exp": exp});
            if let Some(iat) = iat {
                claims["iat"] = json!(iat);
            }
            assert_eq!(
                a.authorize(Some(&token(claims, SECRET)), "d"),
                Err(AuthError::TimeOutOfRange),
                "exp {exp} iat {iat:?}"
            );
        }
        let far = token(
            json!({"docs": ["d"], "access": "rw", "exp": MAX_CLAIM_SECS - 10}),
            SECRET,
        );
        assert!(a.authorize(Some(&far), "d").is_ok());
    }
}
