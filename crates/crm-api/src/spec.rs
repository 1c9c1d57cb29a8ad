//! A store with no database, so the OpenAPI document can be rendered without one.

use crm_core::{
    ApiKey, ApiKeyId, Candidate, Contact, ContactFilter, ContactId, EventCursor, EventPage,
    IdempotencyKey, Lead, LeadFilter, LeadId, LeadWithContacts, NewApiKey, NewContact, NewOperator,
    NewSource, NewSourceKey, Operator, OperatorFilter, OperatorId, OperatorLoad, OperatorPatch,
    OperatorStats, PoolStatus, Registration, Source, SourceDecision, SourceId, SourceKey,
    SourceKeyId, SourcePatch, Store, StoreError, WeightSet, Window,
};
use crm_core::{
    Attempted, Delivery, DeliveryId, DueDelivery, NewWebhook, Webhook, WebhookId, WebhookLease,
    WebhookPatch, WebhookStore,
};

/// Answers every call with [`StoreError::Unavailable`]; only its type matters.
pub(crate) struct NoStore;

fn none<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable(
        "no database: spec rendering only".into(),
    ))
}

impl Store for NoStore {
    async fn create_api_key(&self, _: NewApiKey) -> Result<ApiKey, StoreError> {
        none()
    }
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        none()
    }
    async fn delete_api_key(&self, _: ApiKeyId) -> Result<(), StoreError> {
        none()
    }
    async fn authenticate_api_key(&self, _: &str) -> Result<Option<ApiKey>, StoreError> {
        none()
    }
    async fn source_decisions<'a>(
        &'a self,
        _: SourceId,
        _: Window,
        _: &'a mut (dyn FnMut(SourceDecision) + Send),
    ) -> Result<u64, StoreError> {
        none()
    }
    async fn source_assignments(
        &self,
        _: SourceId,
        _: Window,
    ) -> Result<Vec<(OperatorId, u64)>, StoreError> {
        none()
    }
    async fn candidates(&self, _: &[(OperatorId, i64)]) -> Result<Vec<Candidate>, StoreError> {
        none()
    }
    async fn health(&self) -> Result<(), StoreError> {
        none()
    }
    async fn create_operator(&self, _: NewOperator) -> Result<Operator, StoreError> {
        none()
    }
    async fn list_operators(&self, _: OperatorFilter) -> Result<Vec<Operator>, StoreError> {
        none()
    }
    async fn get_operator(&self, _: OperatorId) -> Result<Operator, StoreError> {
        none()
    }
    async fn update_operator(
        &self,
        _: OperatorId,
        _: OperatorPatch,
    ) -> Result<Operator, StoreError> {
        none()
    }
    async fn delete_operator(&self, _: OperatorId) -> Result<(), StoreError> {
        none()
    }
    async fn create_source(&self, _: NewSource) -> Result<Source, StoreError> {
        none()
    }
    async fn list_sources(&self) -> Result<Vec<Source>, StoreError> {
        none()
    }
    async fn get_source(&self, _: SourceId) -> Result<Source, StoreError> {
        none()
    }
    async fn update_source(&self, _: SourceId, _: SourcePatch) -> Result<Source, StoreError> {
        none()
    }
    async fn delete_source(&self, _: SourceId) -> Result<(), StoreError> {
        none()
    }
    async fn replace_weights(&self, _: SourceId, _: WeightSet) -> Result<Source, StoreError> {
        none()
    }
    async fn list_leads(&self, _: LeadFilter) -> Result<Vec<Lead>, StoreError> {
        none()
    }
    async fn get_lead(&self, _: LeadId) -> Result<LeadWithContacts, StoreError> {
        none()
    }
    async fn register_contact(&self, _: NewContact) -> Result<Contact, StoreError> {
        none()
    }
    async fn list_contacts(&self, _: ContactFilter) -> Result<Vec<Contact>, StoreError> {
        none()
    }
    async fn get_contact(&self, _: ContactId) -> Result<Contact, StoreError> {
        none()
    }
    async fn close_contact(&self, _: ContactId) -> Result<Contact, StoreError> {
        none()
    }
    async fn unassign_contact(&self, _: ContactId) -> Result<Contact, StoreError> {
        none()
    }
    async fn assign_contact(&self, _: ContactId, _: OperatorId) -> Result<Contact, StoreError> {
        none()
    }
    async fn operator_stats(&self) -> Result<Vec<OperatorStats>, StoreError> {
        none()
    }
    async fn operator_loads(&self) -> Result<Vec<OperatorLoad>, StoreError> {
        none()
    }
    async fn contact_decisions(
        &self,
        _: ContactId,
    ) -> Result<Vec<crm_core::DecisionEntry>, StoreError> {
        none()
    }
    async fn queue(
        &self,
        _: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<crm_core::SourceQueue>, StoreError> {
        none()
    }
    async fn drain_queue(&self) -> Result<usize, StoreError> {
        none()
    }
    async fn read_events(
        &self,
        _: EventCursor,
        _: u32,
    ) -> Result<(EventCursor, EventPage), StoreError> {
        none()
    }
    async fn settled_event_head(&self) -> Result<u64, StoreError> {
        none()
    }
    async fn events_between(&self, _: u64, _: u64, _: u32) -> Result<EventPage, StoreError> {
        none()
    }
    async fn prune_events(
        &self,
        _: chrono::DateTime<chrono::Utc>,
        _: u64,
        _: u32,
    ) -> Result<u64, StoreError> {
        none()
    }
    async fn register_contact_once(
        &self,
        _: NewContact,
        _: IdempotencyKey,
    ) -> Result<Registration, StoreError> {
        none()
    }
    async fn create_source_key(&self, _: NewSourceKey) -> Result<SourceKey, StoreError> {
        none()
    }
    async fn list_source_keys(&self, _: SourceId) -> Result<Vec<SourceKey>, StoreError> {
        none()
    }
    async fn delete_source_key(&self, _: SourceId, _: SourceKeyId) -> Result<(), StoreError> {
        none()
    }
    async fn authenticate_source_key(&self, _: &str) -> Result<Option<SourceKey>, StoreError> {
        none()
    }
    fn pool_status(&self) -> PoolStatus {
        PoolStatus::default()
    }
}

impl WebhookStore for NoStore {
    async fn create_webhook(&self, _: NewWebhook) -> Result<Webhook, StoreError> {
        none()
    }
    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        none()
    }
    async fn get_webhook(&self, _: WebhookId) -> Result<Webhook, StoreError> {
        none()
    }
    async fn update_webhook(&self, _: WebhookId, _: WebhookPatch) -> Result<Webhook, StoreError> {
        none()
    }
    async fn delete_webhook(&self, _: WebhookId) -> Result<(), StoreError> {
        none()
    }
    async fn rotate_webhook_secret(
        &self,
        _: WebhookId,
        _: String,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<Webhook, StoreError> {
        none()
    }
    async fn webhook_deliveries(
        &self,
        _: WebhookId,
        _: Option<DeliveryId>,
        _: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        none()
    }
    async fn retry_delivery(&self, _: WebhookId, _: DeliveryId) -> Result<Delivery, StoreError> {
        none()
    }
    async fn lease_webhook(
        &self,
        _: WebhookId,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<WebhookLease>, StoreError> {
        none()
    }
    async fn settle_webhook(
        &self,
        _: WebhookId,
        _: chrono::DateTime<chrono::Utc>,
        _: u64,
        _: Vec<Attempted>,
        _: bool,
    ) -> Result<(), StoreError> {
        none()
    }
    async fn claim_due_deliveries(
        &self,
        _: WebhookId,
        _: chrono::DateTime<chrono::Utc>,
        _: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        none()
    }
    async fn record_attempt(
        &self,
        _: DeliveryId,
        _: chrono::DateTime<chrono::Utc>,
        _: Attempted,
        _: bool,
    ) -> Result<(), StoreError> {
        none()
    }
    async fn webhook_backlog(&self) -> Result<Vec<crm_core::WebhookBacklog>, StoreError> {
        none()
    }
}
