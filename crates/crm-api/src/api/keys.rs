//! `/api/sources/{id}/keys`: ingest keys that let a bot register contacts for one source.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_core::{Name, NewSourceKey, SourceId, SourceKeyId, Store};
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};

use super::{ApiTags, path_id::PathId};
use crate::{
    auth::{Credentials, KEY_PREFIX, issue_key},
    body::{Body, Check, Field, NameRule, Optional, wire_object},
    dto::{Created, Deleted},
    error::{
        ApiError, ApiResult,
        declare::{API, BODY, PATH},
    },
};

/// Key endpoints over a store.
pub(crate) struct KeysApi<S>(pub(crate) Arc<S>);

/// A key to issue.
#[derive(Debug, Object)]
struct CreateKey {
    /// What the key is for (1..=255 characters once trimmed, no control characters).
    label: Field<String, Optional<NameRule>>,
}

wire_object!(CreateKey);

/// An issued key, as listed: the key itself is never shown again.
#[derive(Debug, Object)]
struct SourceKey {
    /// Identifier (for revoking).
    id: i64,
    /// The source it may register contacts for.
    source_id: i64,
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
struct IssuedKey {
    /// Identifier (for revoking).
    id: i64,
    /// The source it may register contacts for.
    source_id: i64,
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

impl From<crm_core::SourceKey> for SourceKey {
    fn from(k: crm_core::SourceKey) -> Self {
        Self {
            id: k.id.get(),
            source_id: k.source_id.get(),
            label: k.label,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

#[OpenApi(tag = "ApiTags::Sources")]
impl<S: Store> KeysApi<S> {
    /// Issue an ingest key for a source
    ///
    /// The key may only register contacts (`POST /api/contacts`) for this source. It is
    /// shown in this answer only; the server keeps a hash.
    #[oai(
        path = "/api/sources/:id/keys",
        method = "post",
        operation_id = "create_source_key"
    )]
    async fn create(
        &self,
        id: Path<PathId>,
        body: Body<CreateKey>,
        _auth: Credentials,
    ) -> ApiResult<Created<IssuedKey>, { API | PATH | BODY }> {
        let issued = issue_key(KEY_PREFIX);
        let key = self
            .0
            .create_source_key(NewSourceKey {
                source_id: SourceId(id.get()),
                label: body.0.label()?,
                prefix: issued.prefix,
                hash: issued.hash,
            })
            .await?;
        Ok(Created::Created(Json(IssuedKey {
            id: key.id.get(),
            source_id: key.source_id.get(),
            label: key.label,
            prefix: key.prefix,
            created_at: key.created_at,
            key: issued.secret,
        })))
    }

    /// List a source's ingest keys
    #[oai(
        path = "/api/sources/:id/keys",
        method = "get",
        operation_id = "list_source_keys"
    )]
    async fn list(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Vec<SourceKey>>, { API | PATH }> {
        let keys = self.0.list_source_keys(SourceId(id.get())).await?;
        Ok(Json(keys.into_iter().map(SourceKey::from).collect()))
    }

    /// Revoke an ingest key
    #[oai(
        path = "/api/sources/:id/keys/:key_id",
        method = "delete",
        operation_id = "revoke_source_key"
    )]
    async fn delete(
        &self,
        id: Path<PathId>,
        key_id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Deleted, { API | PATH }> {
        self.0
            .delete_source_key(SourceId(id.get()), SourceKeyId(key_id.get()))
            .await?;
        Ok(Deleted::Deleted)
    }
}

impl CreateKey {
    /// The label, if given.
    fn label(self) -> Result<Option<Name>, ApiError> {
        let mut check = Check::default();
        let label = check.optional("label", self.label, |l| Name::parse(&l));
        check.finish(|| Some(label))
    }
}
