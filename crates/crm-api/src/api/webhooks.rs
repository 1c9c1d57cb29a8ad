//! `/api/webhooks`: endpoints that receive every event of the types they chose, signed the
//! Standard Webhooks way, with their deliveries (see `crate::webhooks` for the sending,
//! and docs/events.md). Only the admin token may use them.

use std::{collections::BTreeSet, sync::Arc};

use chrono::{DateTime, Utc};
use crm_core::{
    DeliveryId, DeliveryState, EventType, NewWebhook, Store, ValueError, WebhookId, WebhookPatch,
    WebhookUrl,
};
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{ApiTags, default_page_limit, page_after, path_id::PathId};
use crate::{
    auth::Credentials,
    body::{Body, Check, DefaultTrue, Field, Optional, Plain, wire_object},
    dto::{Created, Deleted, Listed},
    error::{
        ApiError, ApiResult,
        declare::{API, BODY, PATH, QUERY},
    },
    webhooks::{WebhookSettings, new_secret},
};

/// `/api/webhooks` over a store.
pub(crate) struct WebhooksApi<S>(pub(crate) Arc<S>, pub(crate) WebhookSettings);

/// The event types, as a body gives them: each must be a type's name.
type TypesField<R> = Field<Vec<Field<String>>, R>;

/// An endpoint to create.
#[derive(Debug, Object)]
struct CreateWebhook {
    /// Where to send: an `http` or `https` URL, not a loopback or private address (unless
    /// the server allows those, `CRM_WEBHOOK_ALLOW_PRIVATE`).
    url: Field<String>,
    /// The event types to send (docs/events.md); left out or `null`: every type.
    event_types: TypesField<Optional<Plain>>,
    /// Whether to send; `true` when left out.
    enabled: Field<bool, DefaultTrue>,
}

/// A change of an endpoint: fields left out stay as they are.
#[derive(Debug, Object)]
struct UpdateWebhook {
    /// A new URL.
    url: Field<String, Optional<Plain>>,
    /// New event types; `null`: every type.
    event_types: TypesField<Optional<Plain>>,
    /// Switch it on or off; on also clears `disabled_reason`.
    enabled: Field<bool, Optional<Plain>>,
}

wire_object!(CreateWebhook, UpdateWebhook);

/// An endpoint; its secret is shown only when created or rotated.
#[derive(Debug, Object)]
struct Webhook {
    /// Identifier.
    id: i64,
    /// Where events are sent.
    url: String,
    /// The types it receives; `null`: every type.
    #[oai(nullable)]
    event_types: Option<Vec<String>>,
    /// Whether events are sent to it.
    enabled: bool,
    /// Why the service switched it off: `gone` when it answered 410. `null` otherwise.
    #[oai(nullable)]
    disabled_reason: Option<String>,
    /// Until when the secret before the last rotation still signs deliveries (each then
    /// carries two signatures); `null` when only one secret is live.
    #[oai(nullable)]
    previous_secret_valid_until: Option<DateTime<Utc>>,
    /// When it was created.
    created_at: DateTime<Utc>,
}

/// An endpoint with its new secret, shown this once.
#[derive(Debug, Object)]
struct WebhookWithSecret {
    #[oai(flatten)]
    webhook: Webhook,
    /// `whsec_` and the key, base64: what a Standard Webhooks verifier takes.
    secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
enum State {
    /// Due again at `next_attempt_at`.
    Pending,
    /// Answered 2xx.
    Succeeded,
    /// Given up: the schedule ran out, or the endpoint answered 410.
    Failed,
}

/// One event's delivery to the endpoint.
#[derive(Debug, Object)]
struct Delivery {
    /// Identifier (for a retry).
    id: i64,
    /// The event's id: the `webhook-id` header of every attempt.
    event_id: String,
    /// The event's sequence number.
    event_seq: u64,
    state: State,
    /// Attempts made.
    attempts: u32,
    /// When it is due again; `null` unless pending.
    #[oai(nullable)]
    next_attempt_at: Option<DateTime<Utc>>,
    /// When it was last attempted.
    #[oai(nullable)]
    last_attempt_at: Option<DateTime<Utc>>,
    /// The last answer's status; `null` when none came.
    #[oai(nullable)]
    last_status: Option<u16>,
    /// What went wrong last; `null` after a success.
    #[oai(nullable)]
    last_error: Option<String>,
}

impl From<crm_core::Webhook> for Webhook {
    fn from(w: crm_core::Webhook) -> Self {
        Self {
            id: w.id.get(),
            url: w.url.as_str().to_owned(),
            event_types: w
                .event_types
                .map(|t| t.into_iter().map(|k| k.as_str().to_owned()).collect()),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            previous_secret_valid_until: w.previous_secret_until.filter(|t| *t > Utc::now()),
            created_at: w.created_at,
        }
    }
}

impl From<crm_core::Delivery> for Delivery {
    fn from(d: crm_core::Delivery) -> Self {
        Self {
            id: d.id.get(),
            event_id: format!("evt_{}", d.event_seq),
            event_seq: d.event_seq,
            state: match d.state {
                DeliveryState::Pending => State::Pending,
                DeliveryState::Succeeded => State::Succeeded,
                DeliveryState::Failed => State::Failed,
            },
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_attempt_at: d.last_attempt_at,
            last_status: d.last_status,
            last_error: d.last_error,
        }
    }
}

#[OpenApi(tag = "ApiTags::Webhooks")]
impl<S: Store> WebhooksApi<S> {
    /// Create a webhook endpoint
    ///
    /// It receives the events committed from now on. The secret is shown in this answer
    /// only.
    #[oai(
        path = "/api/webhooks",
        method = "post",
        operation_id = "create_webhook"
    )]
    async fn create(
        &self,
        body: Body<CreateWebhook>,
        _auth: Credentials,
    ) -> ApiResult<Created<WebhookWithSecret>, { API | BODY }> {
        let (url, event_types, enabled) = body.0.checked(self.1.allow_private)?;
        let secret = new_secret();
        let webhook = self
            .0
            .create_webhook(NewWebhook {
                url,
                event_types,
                enabled,
                secret: secret.clone(),
            })
            .await?;
        Ok(Created::Created(Json(WebhookWithSecret {
            webhook: webhook.into(),
            secret,
        })))
    }

    /// List the webhook endpoints
    #[oai(path = "/api/webhooks", method = "get", operation_id = "list_webhooks")]
    async fn list(
        &self,
        /// Page size.
        #[oai(
            default = "default_page_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Only endpoints with a larger id: the last `id` of the previous page.
        after: Query<Option<i64>>,
        _auth: Credentials,
    ) -> ApiResult<Listed<Webhook>, { API | QUERY }> {
        let all = self.0.list_webhooks().await?;
        let page: Vec<Webhook> = page_after(all, |w| w.id.get(), after.0, limit.0)
            .into_iter()
            .map(Webhook::from)
            .collect();
        Ok(Listed::page("/api/webhooks", &[], limit.0, page, |w| w.id))
    }

    /// Read a webhook endpoint
    #[oai(
        path = "/api/webhooks/:id",
        method = "get",
        operation_id = "get_webhook"
    )]
    async fn get(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Webhook>, { API | PATH }> {
        Ok(Json(self.0.get_webhook(WebhookId(id.get())).await?.into()))
    }

    /// Change a webhook endpoint
    #[oai(
        path = "/api/webhooks/:id",
        method = "patch",
        operation_id = "update_webhook"
    )]
    async fn update(
        &self,
        id: Path<PathId>,
        body: Body<UpdateWebhook>,
        _auth: Credentials,
    ) -> ApiResult<Json<Webhook>, { API | PATH | BODY }> {
        let patch = body.0.checked(self.1.allow_private)?;
        Ok(Json(
            self.0
                .update_webhook(WebhookId(id.get()), patch)
                .await?
                .into(),
        ))
    }

    /// Delete a webhook endpoint and its deliveries
    #[oai(
        path = "/api/webhooks/:id",
        method = "delete",
        operation_id = "delete_webhook"
    )]
    async fn delete(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Deleted, { API | PATH }> {
        self.0.delete_webhook(WebhookId(id.get())).await?;
        Ok(Deleted::Deleted)
    }

    /// Rotate a webhook endpoint's secret
    ///
    /// The new secret is shown in this answer only. For the next 24 hours every delivery
    /// is signed with both secrets (two signatures in `webhook-signature`), so the receiver
    /// can switch over without losing one.
    #[oai(
        path = "/api/webhooks/:id/rotate-secret",
        method = "post",
        operation_id = "rotate_webhook_secret"
    )]
    async fn rotate(
        &self,
        id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<WebhookWithSecret>, { API | PATH }> {
        let secret = new_secret();
        let until = Utc::now() + chrono::Duration::hours(24);
        let webhook = self
            .0
            .rotate_webhook_secret(WebhookId(id.get()), secret.clone(), until)
            .await?;
        Ok(Json(WebhookWithSecret {
            webhook: webhook.into(),
            secret,
        }))
    }

    /// A webhook endpoint's deliveries
    ///
    /// One per event attempted, by id, with its attempts and last outcome; they are
    /// pruned with their events.
    #[oai(
        path = "/api/webhooks/:id/deliveries",
        method = "get",
        operation_id = "list_webhook_deliveries"
    )]
    async fn deliveries(
        &self,
        id: Path<PathId>,
        /// Page size.
        #[oai(
            default = "default_page_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Only deliveries with a larger id: the last `id` of the previous page.
        after: Query<Option<i64>>,
        _auth: Credentials,
    ) -> ApiResult<Listed<Delivery>, { API | PATH | QUERY }> {
        let webhook = WebhookId(id.get());
        let after = after.0.map(DeliveryId);
        let page: Vec<Delivery> = self
            .0
            .webhook_deliveries(webhook, after, limit.0)
            .await?
            .into_iter()
            .map(Delivery::from)
            .collect();
        let path = format!("/api/webhooks/{}/deliveries", id.get());
        Ok(Listed::page(&path, &[], limit.0, page, |d| d.id))
    }

    /// Deliver again
    ///
    /// Makes the delivery due now, whatever its state; it keeps its `webhook-id`.
    #[oai(
        path = "/api/webhooks/:id/deliveries/:delivery_id/retry",
        method = "post",
        operation_id = "retry_webhook_delivery"
    )]
    async fn retry(
        &self,
        id: Path<PathId>,
        delivery_id: Path<PathId>,
        _auth: Credentials,
    ) -> ApiResult<Json<Delivery>, { API | PATH }> {
        let delivery = self
            .0
            .retry_delivery(WebhookId(id.get()), DeliveryId(delivery_id.get()))
            .await?;
        Ok(Json(delivery.into()))
    }
}

/// The event types of `field`, each item named by its index when it is no type.
#[allow(clippy::option_option)]
fn event_types<R>(check: &mut Check, field: TypesField<R>) -> Option<Option<BTreeSet<EventType>>> {
    match field {
        Field::Missing => None,
        Field::Null => Some(None),
        Field::Given(items) => {
            let mut types = BTreeSet::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Field::Given(name) => match name.parse::<EventType>() {
                        Ok(kind) => {
                            types.insert(kind);
                        }
                        Err(err) => check.fail(format!("event_types[{i}]"), err.to_string()),
                    },
                    _ => check.fail(format!("event_types[{i}]"), "must be a string"),
                }
            }
            Some(Some(types))
        }
        _ => {
            check.fail("event_types", "must be an array");
            None
        }
    }
}

fn url(allow_private: bool) -> impl FnOnce(String) -> Result<WebhookUrl, ValueError> {
    move |raw| Ok(WebhookUrl::parse(&raw, allow_private)?)
}

impl CreateWebhook {
    fn checked(
        self,
        allow_private: bool,
    ) -> Result<(WebhookUrl, Option<BTreeSet<EventType>>, bool), ApiError> {
        let mut check = Check::default();
        let url = check.required("url", self.url, url(allow_private));
        let types = event_types(&mut check, self.event_types).flatten();
        let enabled = check.optional("enabled", self.enabled, Ok).unwrap_or(true);
        check.finish(|| Some((url?, types, enabled)))
    }
}

impl UpdateWebhook {
    fn checked(self, allow_private: bool) -> Result<WebhookPatch, ApiError> {
        let mut check = Check::default();
        let url = check.optional("url", self.url, url(allow_private));
        let event_types = event_types(&mut check, self.event_types);
        let enabled = check.optional("enabled", self.enabled, Ok);
        check.finish(|| {
            Some(WebhookPatch {
                url,
                event_types,
                enabled,
            })
        })
    }
}
