//! [`WebhookStore`] for [`DbStore`]: writes through the backend's writer, reads from the
//! read pool, times from the store's clock.

use chrono::{DateTime, Utc};
use crm_core::{
    Attempted, Delivery, DeliveryId, DueDelivery, NewWebhook, Store, StoreError, Webhook,
    WebhookId, WebhookLease, WebhookPatch, WebhookStore,
};

use crate::DbStore;

impl WebhookStore for DbStore {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook, StoreError> {
        let cursor = self.settled_event_head().await?;
        let id = either!(self, |db| db
            .write(async move |conn| super::create(conn, &new, cursor).await)
            .await)?;
        super::one(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        super::list(self.reader()).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_webhook(&self, id: WebhookId) -> Result<Webhook, StoreError> {
        super::one(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_webhook(
        &self,
        id: WebhookId,
        patch: WebhookPatch,
    ) -> Result<Webhook, StoreError> {
        either!(self, |db| db
            .write(async move |conn| super::update(conn, id, &patch).await)
            .await)?;
        super::one(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_webhook(&self, id: WebhookId) -> Result<(), StoreError> {
        either!(self, |db| db
            .write(async move |conn| super::delete(conn, id).await)
            .await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rotate_webhook_secret(
        &self,
        id: WebhookId,
        secret: String,
        until: DateTime<Utc>,
    ) -> Result<Webhook, StoreError> {
        either!(self, |db| db
            .write(async move |conn| super::rotate(conn, id, &secret, until).await)
            .await)?;
        super::one(self.reader(), id).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn webhook_deliveries(
        &self,
        id: WebhookId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        super::deliveries(self.reader(), id, after, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn retry_delivery(
        &self,
        id: WebhookId,
        delivery: DeliveryId,
    ) -> Result<Delivery, StoreError> {
        either!(self, |db| db
            .write(async move |conn| super::retry(conn, id, delivery).await)
            .await)?;
        super::one_delivery(self.reader(), id, delivery).await
    }

    async fn lease_webhook(
        &self,
        id: WebhookId,
        until: DateTime<Utc>,
    ) -> Result<Option<WebhookLease>, StoreError> {
        let now = self.now();
        either!(self, |db| db
            .write(async move |conn| super::lease(conn, id, now, until).await)
            .await)
    }

    async fn settle_webhook(
        &self,
        id: WebhookId,
        lease: DateTime<Utc>,
        cursor: u64,
        attempts: Vec<Attempted>,
        gone: bool,
    ) -> Result<(), StoreError> {
        either!(self, |db| db
            .write(async move |conn| {
                super::settle(conn, id, lease, cursor, &attempts, gone).await
            })
            .await)
    }

    async fn claim_due_deliveries(
        &self,
        id: WebhookId,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let now = self.now();
        either!(self, |db| db
            .write(async move |conn| super::claim_due(conn, id, now, until, limit).await)
            .await)
    }

    async fn record_attempt(
        &self,
        id: DeliveryId,
        claim: DateTime<Utc>,
        attempt: Attempted,
        gone: bool,
    ) -> Result<(), StoreError> {
        either!(self, |db| db
            .write(async move |conn| super::record(conn, id, claim, &attempt, gone).await)
            .await)
    }

    async fn webhook_backlog(&self) -> Result<Vec<crm_core::WebhookBacklog>, StoreError> {
        super::backlog(self.reader()).await
    }
}
