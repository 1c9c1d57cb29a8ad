//! The port of webhook endpoints and their deliveries: what `/api/webhooks` and the
//! dispatcher that sends events need from storage.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::{
    Attempted, Delivery, DeliveryId, DueDelivery, NewWebhook, StoreError, Webhook, WebhookBacklog,
    WebhookId, WebhookLease, WebhookPatch,
};

/// Webhook endpoints and deliveries; part of every [`crate::Store`].
pub trait WebhookStore: Send + Sync {
    /// Stores an endpoint; it receives the events committed from now on.
    ///
    /// # Errors
    /// Only driver failures.
    fn create_webhook(
        &self,
        new: NewWebhook,
    ) -> impl Future<Output = Result<Webhook, StoreError>> + Send;

    /// Every endpoint, by id.
    ///
    /// # Errors
    /// Only driver failures.
    fn list_webhooks(&self) -> impl Future<Output = Result<Vec<Webhook>, StoreError>> + Send;

    /// One endpoint.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn get_webhook(
        &self,
        id: WebhookId,
    ) -> impl Future<Output = Result<Webhook, StoreError>> + Send;

    /// Changes the given fields.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn update_webhook(
        &self,
        id: WebhookId,
        patch: WebhookPatch,
    ) -> impl Future<Output = Result<Webhook, StoreError>> + Send;

    /// Deletes an endpoint and its deliveries.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn delete_webhook(&self, id: WebhookId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes `secret` the endpoint's secret; the one before still signs until `until`.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when it does not exist.
    fn rotate_webhook_secret(
        &self,
        id: WebhookId,
        secret: String,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Webhook, StoreError>> + Send;

    /// An endpoint's deliveries after `after`, by id, at most `limit`.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when the endpoint does not exist.
    fn webhook_deliveries(
        &self,
        id: WebhookId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Makes a delivery due now.
    ///
    /// # Errors
    /// MUST return [`StoreError::NotFound`] when the endpoint has no such delivery.
    fn retry_delivery(
        &self,
        id: WebhookId,
        delivery: DeliveryId,
    ) -> impl Future<Output = Result<Delivery, StoreError>> + Send;

    /// Takes the endpoint's lease until `until`, so that this process alone sends its new
    /// events; `None` when it is off or another process holds the lease.
    ///
    /// # Errors
    /// Only driver failures.
    fn lease_webhook(
        &self,
        id: WebhookId,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<WebhookLease>, StoreError>> + Send;

    /// Stores the first attempts of a leased batch and moves the endpoint's cursor to
    /// `cursor`, in one unit of work, releasing the lease (the one that ends at `lease`);
    /// `gone` switches it off.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`], having stored nothing, when that lease
    /// was taken over (it ran out).
    fn settle_webhook(
        &self,
        id: WebhookId,
        lease: DateTime<Utc>,
        cursor: u64,
        attempts: Vec<Attempted>,
        gone: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claims up to `limit` of endpoint `id`'s deliveries that are due, until `until`,
    /// each for this process alone, counting the attempt about to be made.
    ///
    /// # Errors
    /// Only driver failures.
    fn claim_due_deliveries(
        &self,
        id: WebhookId,
        until: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<DueDelivery>, StoreError>> + Send;

    /// Stores a claimed delivery's outcome (claimed until `claim`); `gone` switches its
    /// endpoint off.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`], having stored nothing, when the claim was
    /// taken over (it ran out).
    fn record_attempt(
        &self,
        id: DeliveryId,
        claim: DateTime<Utc>,
        attempt: Attempted,
        gone: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Each endpoint that is on, by id, with its deliveries due again and the events not
    /// attempted yet. Read on every metrics scrape: it MUST cost in proportion to the
    /// endpoints and their pending deliveries, never to all deliveries.
    ///
    /// # Errors
    /// Only driver failures.
    fn webhook_backlog(
        &self,
    ) -> impl Future<Output = Result<Vec<WebhookBacklog>, StoreError>> + Send;
}
