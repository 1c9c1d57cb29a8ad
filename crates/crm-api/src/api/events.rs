//! `GET /api/events`: every committed change as Server-Sent Events, resumable with
//! `Last-Event-ID` (see `crate::events` for the hub behind it, and docs/events.md).

use std::{borrow::Cow, collections::BTreeSet, sync::Arc};

use chrono::{DateTime, Utc};
use crm_core::{EventType, Store};
use futures_util::stream::{self, BoxStream, StreamExt};
use poem::web::sse::Event as SseEvent;
use poem_openapi::{
    Object, OpenApi,
    param::{Header, Query},
    payload::EventStream,
    registry::{MetaSchemaRef, Registry},
    types::{ToJSON, Type},
};
use serde_json::Value;

use super::ApiTags;
use crate::{
    auth::Credentials,
    error::{
        ApiError, ApiResult, FieldError,
        declare::{API, QUERY},
    },
    events::{Hub, Item},
};

/// The event stream over a store.
pub(crate) struct EventsApi<S>(pub(crate) Arc<Hub<S>>);

/// The stream: one message per event.
type Events = EventStream<BoxStream<'static, StreamItem>>;

#[OpenApi(tag = "ApiTags::Events")]
impl<S: Store> EventsApi<S> {
    /// Every committed change, as it commits, in one global order, as Server-Sent Events:
    /// `id:` the event's sequence number, `event:` its type, `data:` its envelope. A
    /// client that reconnects with `Last-Event-ID` gets every later event, in order,
    /// without gap or duplicate; without it, the stream starts with the next event.
    /// Resuming from before what retention kept starts with an `event: reset` (read the
    /// state again; its `id:` is where the stream goes on). A comment line every 15 s
    /// keeps idle connections open; `retry:` is sent once, first. Event types and their
    /// data: docs/events.md.
    #[oai(path = "/api/events", method = "get", operation_id = "stream_events")]
    async fn stream(
        &self,
        /// The last sequence number the client received: the stream resumes after it.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<u64>>,
        /// Only these types, comma-separated (e.g. `contact.created,contact.closed`).
        types: Query<Option<String>>,
        _auth: Credentials,
    ) -> ApiResult<Events, { API | QUERY }> {
        let types = types.0.as_deref().map(parse_types).transpose()?;
        let mut items = self.0.stream(last_event_id.0, types);
        let items = stream::poll_fn(move |cx| items.poll_recv(cx)).map(StreamItem);
        Ok(EventStream::new(items.boxed())
            .keep_alive(self.0.settings.heartbeat)
            .to_event(StreamItem::into_sse))
    }
}

fn parse_types(list: &str) -> Result<BTreeSet<EventType>, ApiError> {
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            name.parse::<EventType>().map_err(|err| {
                ApiError::validation(vec![FieldError {
                    field: "types".into(),
                    message: format!(
                        "{err}; the types are {}",
                        EventType::ALL.map(EventType::as_str).join(", ")
                    ),
                }])
            })
        })
        .collect()
}

/// An event as the stream sends it (`data:` of each message; the webhooks send the same).
#[derive(Debug, Object)]
#[oai(rename = "Event")]
#[allow(
    dead_code,
    reason = "the schema of the stream's messages, rendered by crm_core"
)]
struct EventEnvelope {
    /// The event's stable id, `evt_<seq>`: the receiver's idempotency key.
    id: String,
    /// Its place in the global order (the stream's `id:`).
    seq: u64,
    /// What happened, e.g. `contact.created`.
    #[oai(rename = "type")]
    kind: String,
    /// When the change was written.
    timestamp: DateTime<Utc>,
    /// The change: for `contact.*` the contact's id, source, operator, status and the
    /// decision that led there; for operators and sources their fields after the change.
    data: Value,
}

/// One message of the stream, documented as an [`EventEnvelope`].
struct StreamItem(Item);

impl StreamItem {
    fn into_sse(self) -> SseEvent {
        match self.0 {
            Item::Retry(delay) => {
                SseEvent::retry(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
            Item::Reset(at) => SseEvent::message(format!("{{\"pruned_through\":{at}}}"))
                .id(at.to_string())
                .event_type("reset"),
            Item::Event(frame) => SseEvent::message(frame.envelope.clone())
                .id(frame.seq.to_string())
                .event_type(frame.kind.as_str()),
        }
    }
}

impl Type for StreamItem {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        EventEnvelope::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        EventEnvelope::schema_ref()
    }

    fn register(registry: &mut Registry) {
        EventEnvelope::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl ToJSON for StreamItem {
    /// Only for completeness: the stream renders messages with [`StreamItem::into_sse`].
    fn to_json(&self) -> Option<Value> {
        match &self.0 {
            Item::Event(frame) => serde_json::from_str(&frame.envelope).ok(),
            Item::Reset(at) => Some(serde_json::json!({ "pruned_through": at })),
            Item::Retry(_) => None,
        }
    }
}
