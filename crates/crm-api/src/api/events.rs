//! `GET /api/events`: every committed change as Server-Sent Events, resumable with
//! `Last-Event-ID` (see `crate::events` for the hub behind it, and docs/events.md).

use std::{collections::BTreeSet, io, sync::Arc};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use crm_core::{EventType, Store};
use futures_util::stream::{self, BoxStream, StreamExt};
use poem::{Body, IntoResponse, Response, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Query},
    payload::{EventStream, Payload},
    registry::{MetaResponses, MetaSchemaRef, Registry},
};
use serde_json::Value;
use tokio::sync::mpsc;

use super::ApiTags;
use crate::{
    auth::{Credentials, Principal},
    error::{
        ApiError, ApiResult, FieldError,
        declare::{API, QUERY},
    },
    events::Hub,
};

/// The event stream over a store.
pub(crate) struct EventsApi<S>(pub(crate) Arc<Hub<S>>);

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
        principal: Data<&Principal>,
    ) -> ApiResult<SseBody, { API | QUERY }> {
        let types = types.0.as_deref().map(parse_types).transpose()?;
        let key = match *principal.0 {
            Principal::Viewer { key_id } => Some(key_id),
            _ => None,
        };
        Ok(SseBody(self.0.stream(last_event_id.0, types, key)))
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

/// The stream's response: the messages the hub rendered once, written as they come, many
/// per write. poem-openapi's `EventStream` describes it in the document (the same status,
/// content type and schema); its body, which formats every message again for every
/// stream, cost the server 2.3 µs per event and stream (docs/benchmarks.md, "Events").
struct SseBody(mpsc::Receiver<Bytes>);

/// What poem-openapi would answer for a stream of [`EventEnvelope`]s: the document's view.
type Described = EventStream<BoxStream<'static, EventEnvelope>>;

impl Payload for SseBody {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn schema_ref() -> MetaSchemaRef {
        Described::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Described as Payload>::register(registry);
    }
}

impl ApiResponse for SseBody {
    fn meta() -> MetaResponses {
        Described::meta()
    }

    fn register(registry: &mut Registry) {
        <Described as ApiResponse>::register(registry);
    }
}

impl IntoResponse for SseBody {
    fn into_response(self) -> Response {
        let mut messages = self.0;
        let stream = stream::poll_fn(move |cx| messages.poll_recv(cx)).map(Ok::<_, io::Error>);
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .header("Cache-Control", "no-cache")
            .header("X-Accel-Buffering", "no")
            .body(Body::from_bytes_stream(stream))
    }
}
