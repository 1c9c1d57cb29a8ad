//! Who is calling, and what they may do.
//!
//! With `CRM_ADMIN_TOKEN` set, every request (every `/api` path, and any path not known
//! to be open) needs `Authorization: Bearer <token>`:
//! the admin token may do everything; a source's ingest key (`crm_sk_…`, issued by
//! `POST /api/sources/{id}/keys`) may only register contacts for its own source; a viewer
//! key (`crm_vk_…`, issued by `POST /api/keys`) may read everything but keys and webhooks,
//! and call the dry run (`POST /api/sources/{id}/simulate`), which writes nothing. Without
//! a token the API is open (the server then listens on loopback only, see `main`).
//! `/health`, `/docs`, `/openapi.json` and `/metrics` are always open.
//!
//! Enforcement is one step in front of every route ([`authenticate`], called by `crate::gate`), so a new
//! operation cannot forget it; the operations only declare the scheme for the OpenAPI
//! document ([`Credentials`]) and the registration checks the key's source.

use crm_core::{ApiKeyId, SourceId, SourceKeyId, Store};
use poem::{
    Request,
    http::Method,
    web::headers::{Authorization, HeaderMapExt, authorization::Bearer},
};
use poem_openapi::SecurityScheme;
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ErrorCode};

/// The prefix of every source key, so a leaked key is recognisable (and scannable).
pub(crate) const KEY_PREFIX: &str = "crm_sk_";

/// The prefix of every viewer key.
pub(crate) const VIEWER_KEY_PREFIX: &str = "crm_vk_";

/// How many characters of a key after its prefix are kept to tell keys apart.
const SHOWN_CHARS: usize = 6;

/// The caller of a request, as [`authenticate`] established it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal {
    /// Authentication is off: everyone may do everything (one shared identity).
    Open,
    /// The admin token.
    Admin,
    /// A source's ingest key.
    SourceKey {
        /// The source it may register contacts for.
        source_id: SourceId,
        /// The key, as this caller's identity.
        key_id: SourceKeyId,
    },
    /// A viewer key.
    Viewer {
        /// The key, as this caller's identity.
        key_id: ApiKeyId,
    },
}

impl Principal {
    /// The identity idempotency keys are scoped by.
    pub(crate) fn identity(self) -> String {
        match self {
            Self::Open => "anonymous".to_owned(),
            Self::Admin => "admin".to_owned(),
            Self::SourceKey { key_id, .. } => format!("source-key:{key_id}"),
            Self::Viewer { key_id } => format!("viewer-key:{key_id}"),
        }
    }
}

/// The bearer credential, declared for the OpenAPI document so Swagger's "Authorize"
/// works: the admin token or a source key.
#[derive(SecurityScheme)]
#[oai(
    ty = "bearer",
    rename = "bearer",
    bearer_format = "admin token, crm_sk_… source key or crm_vk_… viewer key"
)]
pub(crate) struct BearerToken(#[allow(dead_code)] poem_openapi::auth::Bearer);

/// What an operation declares: a bearer credential, or none while authentication is off.
/// The decision is made by [`authenticate`]; this only documents it.
#[derive(SecurityScheme)]
#[allow(dead_code)]
pub(crate) enum Credentials {
    /// `Authorization: Bearer …`.
    Bearer(BearerToken),
    /// No credential (only accepted while the server runs without `CRM_ADMIN_TOKEN`).
    #[oai(fallback)]
    Anonymous,
}

/// A freshly issued key: shown once, stored only as its hash.
pub(crate) struct IssuedKey {
    /// The key itself.
    pub(crate) secret: String,
    /// Its first characters.
    pub(crate) prefix: String,
    /// Its hash, as stored.
    pub(crate) hash: String,
}

/// A new key: `prefix` ([`KEY_PREFIX`] or [`VIEWER_KEY_PREFIX`]) and 256 random bits.
pub(crate) fn issue_key(prefix: &str) -> IssuedKey {
    let bytes: [u8; 32] = rand::rng().random();
    let secret = format!("{prefix}{}", hex::encode(bytes));
    IssuedKey {
        prefix: secret[..prefix.len() + SHOWN_CHARS].to_owned(),
        hash: hash_key(&secret),
        secret,
    }
}

/// The stored form of a key. Keys are random and long, so a fast hash is enough: there
/// is nothing to brute-force that is cheaper than guessing the key.
pub(crate) fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets in time independent of where they differ (their SHA-256 digests
/// have equal length, so the length of the secret does not leak either).
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    bool::from(a[..].ct_eq(&b[..]))
}

/// The paths anyone may read while authentication is on (as the router sees them:
/// merged slashes, no trailing one).
fn is_open(path: &str) -> bool {
    path == "/health" || crate::is_page(path)
}

/// Authenticates every request but those to the open paths, and stores the
/// [`Principal`] in the request for the operations.
///
/// It sees the path after normalisation (the router's view, see `crate::gate`), and
/// it guards everything it does not know to be open, so a path that some layer rewrites
/// or a route added later cannot slip past it.
pub(crate) async fn authenticate<S: Store>(
    req: &mut Request,
    store: &S,
    admin_token: Option<&str>,
) -> Result<(), ApiError> {
    let path = req.uri().path();
    let guarded = !is_open(path);
    let principal = match (admin_token, guarded) {
        (None, _) | (_, false) => Principal::Open,
        (Some(token), true) => {
            let principal = identify(req, token, store).await?;
            match principal {
                Principal::SourceKey { .. }
                    if !(req.method() == Method::POST && path == "/api/contacts") =>
                {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        "a source key may only register contacts",
                    ));
                }
                Principal::Viewer { .. } if !viewer_may(req.method(), path) => {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        "a viewer key may only read (not keys or webhooks) and call the dry run",
                    ));
                }
                _ => {}
            }
            principal
        }
    };
    req.extensions_mut().insert(principal);
    Ok(())
}

/// What a viewer key may do: read everything but keys and webhooks, and call the dry run,
/// which writes nothing.
fn viewer_may(method: &Method, path: &str) -> bool {
    let secret = path == "/api/keys"
        || path.starts_with("/api/keys/")
        || path.starts_with("/api/webhooks")
        || source_subpath(path).is_some_and(|rest| rest == "keys" || rest.starts_with("keys/"));
    let read = *method == Method::GET || *method == Method::HEAD;
    (read && !secret) || (*method == Method::POST && source_subpath(path) == Some("simulate"))
}

/// What follows `/api/sources/{id}/` in `path`, if it is a source's sub-path.
fn source_subpath(path: &str) -> Option<&str> {
    let (id, rest) = path.strip_prefix("/api/sources/")?.split_once('/')?;
    (!id.is_empty()).then_some(rest)
}

async fn identify<S: Store>(req: &Request, admin: &str, store: &S) -> Result<Principal, ApiError> {
    // The scheme is case-insensitive (RFC 9110, 11.1): `headers` compares it so.
    let credentials = req
        .headers()
        .typed_get::<Authorization<Bearer>>()
        .ok_or_else(|| unauthorized("missing bearer credentials"))?;
    let token = credentials.token().trim();
    if same_secret(token, admin) {
        return Ok(Principal::Admin);
    }
    if token.starts_with(KEY_PREFIX)
        && let Some(key) = store.authenticate_source_key(&hash_key(token)).await?
    {
        return Ok(Principal::SourceKey {
            source_id: key.source_id,
            key_id: key.id,
        });
    }
    if token.starts_with(VIEWER_KEY_PREFIX)
        && let Some(key) = store.authenticate_api_key(&hash_key(token)).await?
    {
        return Ok(Principal::Viewer { key_id: key.id });
    }
    Err(unauthorized("unknown or revoked credentials"))
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_random_prefixed_and_stored_as_hashes() {
        let a = issue_key(KEY_PREFIX);
        let b = issue_key(KEY_PREFIX);
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.secret.len(), KEY_PREFIX.len() + 64);
        assert!(a.secret.starts_with(&a.prefix));
        assert_eq!(a.hash, hash_key(&a.secret));
        assert!(!a.hash.contains(&a.secret[KEY_PREFIX.len()..]));
    }

    #[test]
    fn viewers_read_all_but_keys_and_call_only_the_dry_run() {
        for path in [
            "/api/operators",
            "/api/sources/1",
            "/api/sources/1/distribution",
            "/metrics",
        ] {
            assert!(viewer_may(&Method::GET, path), "{path}");
        }
        for path in [
            "/api/keys",
            "/api/keys/3",
            "/api/sources/1/keys",
            "/api/sources/1/keys/2",
            "/api/webhooks",
            "/api/webhooks/1/deliveries",
        ] {
            assert!(!viewer_may(&Method::GET, path), "{path}");
        }
        assert!(viewer_may(&Method::POST, "/api/sources/1/simulate"));
        for (method, path) in [
            (Method::POST, "/api/sources/1/operators"),
            (Method::POST, "/api/sources//simulate"),
            (Method::POST, "/api/contacts"),
            (Method::PUT, "/api/sources/1/operators"),
            (Method::PATCH, "/api/operators/1"),
            (Method::DELETE, "/api/keys/1"),
            (Method::POST, "/api/keys"),
        ] {
            assert!(!viewer_may(&method, path), "{method} {path}");
        }
    }

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3cres"));
        assert!(!same_secret("", "s3cret"));
    }
}
