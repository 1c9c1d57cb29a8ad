//! `/api/keys`: keys that are not a source's. Today only `viewer` keys: they may read
//! everything but keys (`GET`), and call the dry run (`POST /api/sources/{id}/simulate`),
//! for a supervisor's screen or a report; any other request with one is 403.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_core::{ApiKeyId, KeyScope, Name, NewApiKey, Store};
use poem_openapi::{Enum, Object, OpenApi, param::Path, payload::Json};

use super::{ApiTags, path_id::PathId};
use crate::{
    auth::{Credentials, VIEWER_KEY_PREFIX, issue_key},
    body::{Body, Check, Field, NameRule, Optional, ScopeRule, wire_object},
    dto::{Created, Deleted},
    error::{
        ApiError, ApiResult,
        declare::{API, BODY, PATH},
    },
};

/// `/api/keys` endpoints over a store.
pub(crate) struct ApiKeysApi<S>(pub(crate) Arc<S>);

/// A key to issue.
#[derive(Debug, Object)]
struct CreateApiKey {
    /// What the key may do: `viewer` (read everything but keys, and call the dry run).
    scope: Field<String, ScopeRule>,
    /// What the key is for (1..=255 characters once trimmed, no control characters).
    label: Field<String, Optional<NameRule>>,
}

wire_object!(CreateApiKey);

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
enum Scope {
    /// Read everything but keys (`GET`), and call `POST /api/sources/{id}/simulate`.
    Viewer,
}

impl From<KeyScope> for Scope {
    fn from(scope: KeyScope) -> Self {
        match scope {
            KeyScope::Viewer => Self::Viewer,
        }
    }
}

/// An issued key, as listed: the key itself is never shown again.
#[derive(Debug, Object)]
struct ApiKey {
    /// Identifier (for revoking).
    id: i64,
    scope: Scope,
    /// What it is for; `null` when issued without a label.
    #[oai(nullable)]
    label: Option<String>,
    /// Its first characters.
    prefix: String,
    /// When it was issued.
    created_at: DateTime<Utc>,
    /// When it was last used (recorded at most once a minute); `null` if never.
    #[oai(nullable)]
    last_used_at: Option<DateTime<Utc>>,
}

/// A key just issued: `key` is shown this once and stored only as a hash.
#[derive(Debug, Object)]
struct IssuedApiKey {
    /// Identifier (for revoking).
    id: i64,
    scope: Scope,
    /// What it is for; `null` when issued without a label.
    #[oai(nullable)]
    label: Option<String>,
    /// Its first characters.
    prefix: String,
    /// When it was issued.
    created_at: DateTime<Utc>,
    /// The key: send it as `Authorization: Bearer <key>`.
    key: String,
}

impl From<crm_core::ApiKey> for ApiKey {
    fn from(k: crm_core::ApiKey) -> Self {
        Self {
            id: k.id.get(),
            scope: k.scope.into(),
            label: k.label,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[OpenApi(tag = "ApiTags::Keys")]
impl<S: Store> ApiKeysApi<S> {
    /// Issue a viewer key
    ///
    /// The key is shown in this answer only; the server keeps a hash. Only the admin token
    /// may issue, list and revoke keys.
    #[oai(path = "/api/keys", method = "post", operation_id = "create_api_key")]
    async fn create(
        &self,
        body: Body<CreateApiKey>,
        _auth: Credentials,
    ) -> ApiResult<Created<IssuedApiKey>, { API | BODY }> {
        let (scope, label) = body.0.checked()?;
        let issued = issue_key(VIEWER_KEY_PREFIX);
        let key = self
            .0
            .create_api_key(NewApiKey {
                scope,
                label,
                prefix: issued.prefix,
                hash: issued.hash,
            })
            .await?;
        Ok(Created::Created(Json(IssuedApiKey {
            id: key.id.get(),
            scope: key.scope.into(),
            label: key.label,
            prefix: key.prefix,
            created_at: key.created_at,
            key: issued.secret,
        })))
    }

    /// List the viewer keys
    #[oai(path = "/api/keys", method = "get", operation_id = "list_api_keys")]
    async fn list(&self, _auth: Credentials) -> ApiResult<Json<Vec<ApiKey>>, API> {
        let keys = self.0.list_api_keys().await?;
        Ok(Json(keys.into_iter().map(ApiKey::from).collect()))
    }

    /// Revoke a viewer key
    #[oai(
        path = "/api/keys/:id",
        method = "delete",
        operation_id = "revoke_api_key"
    )]
    async fn delete(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Deleted, { API | PATH }> {
        self.0.delete_api_key(ApiKeyId(id.get())).await?;
        Ok(Deleted::Deleted)
    }
}

impl CreateApiKey {
    /// The scope and the label, if given.
    fn checked(self) -> Result<(KeyScope, Option<Name>), ApiError> {
        let mut check = Check::default();
        let scope = check.required("scope", self.scope, |s| KeyScope::parse(&s));
        let label = check.optional("label", self.label, |l| Name::parse(&l));
        check.finish(|| Some((scope?, label)))
    }
}
