//! Response bodies and response kinds of the API, converted from the core's entities.
//!
//! These are the HTTP contract: field names and shapes follow the original service, and
//! never change because a domain or database type did.

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use poem_openapi::{
    ApiResponse, Enum, Object,
    payload::Json,
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

use crate::error::ApiError;

/// An operator with its current load.
#[derive(Debug, Object)]
pub(crate) struct Operator {
    id: i64,
    name: String,
    is_active: bool,
    /// Most open contacts the operator may hold.
    max_active_contacts: i64,
    /// Most automatic assignments per minute (burst of as many, refilled at that rate);
    /// `null`: no limit.
    #[oai(nullable)]
    max_assignments_per_minute: Option<i64>,
    /// Open contacts assigned to the operator now.
    active_contacts: i64,
    created_at: DateTime<Utc>,
}

/// The few fields of an operator shown inside other entities.
#[derive(Debug, Object)]
pub(crate) struct OperatorSummary {
    id: i64,
    name: String,
    is_active: bool,
}

/// A source with its operators and their weights.
#[derive(Debug, Object)]
pub(crate) struct Source {
    id: i64,
    name: String,
    /// Unique, case-sensitive code clients may use instead of the id.
    code: String,
    created_at: DateTime<Utc>,
    // No doc comment: poem-openapi would wrap the enum's `$ref` in an `allOf` with it,
    // which client generators refuse for an enum (the enum's own doc describes it).
    strategy: Strategy,
    /// Whether a returning lead goes back to the operator of its latest contact from this
    /// source, when that operator could take it.
    sticky_owner: bool,
    /// The operators that take this source's contacts, by operator id.
    operators: Vec<SourceOperator>,
}

/// How a source chooses among its eligible operators: `weighted_random`, a draw with
/// probability weight / sum of the eligible weights (the default); `smooth_weighted`,
/// deterministic, every operator within one contact of its share of the weights. A dry
/// run of a smooth source is exact, and its seed plays no part.
#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum Strategy {
    /// A draw with probability weight / sum of the eligible weights.
    WeightedRandom,
    /// Deterministic: every operator within one contact of its share of the weights.
    SmoothWeighted,
}

impl From<crm_core::Strategy> for Strategy {
    fn from(strategy: crm_core::Strategy) -> Self {
        match strategy {
            crm_core::Strategy::WeightedRandom => Self::WeightedRandom,
            crm_core::Strategy::SmoothWeighted => Self::SmoothWeighted,
        }
    }
}

/// One operator's weight for a source.
#[derive(Debug, Object)]
pub(crate) struct SourceOperator {
    operator_id: i64,
    /// Relative share of the source's contacts.
    weight: i64,
    operator: OperatorSummary,
}

/// An end customer, known by the identifier its channel gave it.
#[derive(Debug, Object)]
pub(crate) struct Lead {
    pub(crate) id: i64,
    /// The channel's identifier, exactly as sent.
    external_id: String,
    created_at: DateTime<Utc>,
}

/// A lead with all its contacts, oldest first.
#[derive(Debug, Object)]
pub(crate) struct LeadDetail {
    id: i64,
    /// The channel's identifier, exactly as sent.
    external_id: String,
    created_at: DateTime<Utc>,
    /// Its contacts across all sources, oldest first.
    contacts: Vec<Contact>,
}

/// Whether a contact still needs work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub(crate) enum ContactStatus {
    /// Counts towards its operator's load.
    Open,
    /// Done.
    Closed,
}

/// One appeal of a lead through a source.
#[derive(Debug, Object)]
pub(crate) struct Contact {
    pub(crate) id: i64,
    lead_id: i64,
    source_id: i64,
    /// The assigned operator; `null` when no operator could take it.
    #[oai(nullable)]
    operator_id: Option<i64>,
    /// The assigned operator; `null` when unassigned.
    operator: Nullable<OperatorSummary>,
    status: ContactStatus,
    /// What the source sent along: any JSON value.
    payload: Value,
    created_at: DateTime<Utc>,
    /// When it was closed; `null` while open.
    #[oai(nullable)]
    closed_at: Option<DateTime<Utc>>,
    /// Only in the answer to the registration that stored it waiting (and its idempotent
    /// replays): how many contacts of its source were waiting ahead of it, counted up to
    /// 100 (100 means at least that many). Absent elsewhere.
    #[oai(skip_serializing_if_is_none)]
    waiting_ahead: Option<u64>,
}

/// An object or `null`, in the form client generators read as "this type or none":
/// `{"nullable": true, "allOf": [{"$ref": …}]}`. (poem-openapi's `#[oai(nullable)]` on a
/// reference adds a second `allOf` member, for which openapi-python-client makes a new
/// type, `ContactOperatorType1`.)
#[derive(Debug)]
pub(crate) struct Nullable<T>(Option<T>);

impl<T> From<Option<T>> for Nullable<T> {
    fn from(value: Option<T>) -> Self {
        Self(value)
    }
}

impl<T: Type> Type for Nullable<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> std::borrow::Cow<'static, str> {
        format!("nullable_{}", T::name()).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            nullable: true,
            all_of: vec![T::schema_ref()],
            ..MetaSchema::ANY
        }))
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_ref()?.as_raw_value()
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        match &self.0 {
            Some(value) => value.raw_element_iter(),
            None => Box::new(std::iter::empty()),
        }
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Nullable<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Option::<T>::parse_from_json(value)
            .map(Self)
            .map_err(ParseError::propagate)
    }
}

impl<T: ToJSON> ToJSON for Nullable<T> {
    fn to_json(&self) -> Option<Value> {
        Some(
            self.0
                .as_ref()
                .and_then(ToJSON::to_json)
                .unwrap_or(Value::Null),
        )
    }
}

/// An operator's load figures.
#[derive(Debug, Object)]
pub(crate) struct OperatorStats {
    operator_id: i64,
    operator_name: String,
    max_active_contacts: i64,
    /// Open contacts now (the same number as the operator's `active_contacts`).
    open_contacts: i64,
    /// Contacts assigned to the operator now, open or closed.
    total_contacts: i64,
    /// Contacts it received in the last hour: drawn at registration or from the queue, or
    /// assigned by hand (each assignment counts, also of a contact later moved on).
    assigned_last_hour: i64,
    /// The same over the last 24 hours.
    assigned_last_day: i64,
    /// Contacts waiting now that were queued while it was at capacity: it had a weight for
    /// their source and no room, so a higher limit would have served them.
    waiting_for_capacity: i64,
}

/// One source's waiting contacts.
#[derive(Debug, Object)]
pub(crate) struct SourceQueue {
    pub(crate) source_id: i64,
    /// How many contacts wait (open, no operator).
    waiting: i64,
    /// The oldest waiting contact, which the next free place goes to.
    oldest_contact_id: i64,
    /// When it arrived.
    oldest_since: DateTime<Utc>,
    /// How long it has waited, in whole seconds, when this answer was made.
    oldest_wait_seconds: i64,
    /// How many have waited longer than the configured longest wait (`CRM_QUEUE_MAX_WAIT`;
    /// 0 when none is set). They are only flagged: they keep their place in the queue.
    stale: i64,
}

impl SourceQueue {
    /// The queue as it stands at `now`.
    pub(crate) fn at(q: crm_core::SourceQueue, now: DateTime<Utc>) -> Self {
        Self {
            source_id: q.source_id.get(),
            waiting: q.waiting,
            oldest_contact_id: q.oldest_id.get(),
            oldest_since: q.oldest_since,
            oldest_wait_seconds: (now - q.oldest_since).num_seconds().max(0),
            stale: q.stale,
        }
    }
}

/// A `201 Created` answer.
#[derive(Debug, ApiResponse)]
pub(crate) enum Created<T: ToJSON> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
}

/// A `204 No Content` answer to a delete.
#[derive(Debug, ApiResponse)]
pub(crate) enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// One page of an id-ordered listing.
#[derive(Debug, ApiResponse)]
pub(crate) enum Listed<T: ToJSON> {
    /// The page, ordered by id.
    #[oai(status = 200)]
    Page(
        Json<Vec<T>>,
        /// `<…&after=LAST_ID>; rel="next"` while the page is full.
        #[oai(header = "Link")]
        Option<String>,
    ),
}

impl<T: ToJSON> Listed<T> {
    /// `items` as the page at `path`, with the `Link` header while the page is full: the
    /// same query with `after` set to the last item's `id`. `params` are the filters as
    /// given, already in their query spelling.
    pub(crate) fn page(
        path: &str,
        params: &[(&str, Option<String>)],
        limit: u32,
        items: Vec<T>,
        id: impl Fn(&T) -> i64,
    ) -> Self {
        let full = items.len() >= limit as usize;
        let link = items.last().filter(|_| full).map(|last| {
            let mut query = String::new();
            for (name, value) in params {
                if let Some(value) = value {
                    query.push_str(name);
                    query.push('=');
                    query.extend(utf8_percent_encode(value, RESERVED));
                    query.push('&');
                }
            }
            let after = id(last);
            format!("<{path}?{query}limit={limit}&after={after}>; rel=\"next\"")
        });
        Self::Page(Json(items), link)
    }
}

impl From<crm_core::Operator> for Operator {
    fn from(o: crm_core::Operator) -> Self {
        Self {
            id: o.id.get(),
            name: o.name,
            is_active: o.is_active,
            max_active_contacts: o.max_active_contacts.get(),
            max_assignments_per_minute: o
                .max_assignments_per_minute
                .map(|rate| i64::from(rate.get())),
            active_contacts: o.open_contacts,
            created_at: o.created_at,
        }
    }
}

impl From<crm_core::OperatorSummary> for OperatorSummary {
    fn from(o: crm_core::OperatorSummary) -> Self {
        Self {
            id: o.id.get(),
            name: o.name,
            is_active: o.is_active,
        }
    }
}

impl From<crm_core::Source> for Source {
    fn from(s: crm_core::Source) -> Self {
        Self {
            id: s.id.get(),
            name: s.name,
            code: s.code.as_str().to_owned(),
            created_at: s.created_at,
            strategy: s.rule.strategy.into(),
            sticky_owner: s.rule.sticky_owner,
            operators: s
                .operators
                .into_iter()
                .map(|so| SourceOperator {
                    operator_id: so.operator.id.get(),
                    weight: so.weight.get(),
                    operator: so.operator.into(),
                })
                .collect(),
        }
    }
}

impl From<crm_core::Lead> for Lead {
    fn from(l: crm_core::Lead) -> Self {
        Self {
            id: l.id.get(),
            external_id: l.external_id,
            created_at: l.created_at,
        }
    }
}

impl TryFrom<crm_core::LeadWithContacts> for LeadDetail {
    type Error = ApiError;

    fn try_from(l: crm_core::LeadWithContacts) -> Result<Self, ApiError> {
        Ok(Self {
            id: l.lead.id.get(),
            external_id: l.lead.external_id,
            created_at: l.lead.created_at,
            contacts: contacts(l.contacts)?,
        })
    }
}

impl From<crm_core::ContactStatus> for ContactStatus {
    fn from(s: crm_core::ContactStatus) -> Self {
        match s {
            crm_core::ContactStatus::Open => Self::Open,
            crm_core::ContactStatus::Closed => Self::Closed,
        }
    }
}

impl From<ContactStatus> for crm_core::ContactStatus {
    fn from(s: ContactStatus) -> Self {
        match s {
            ContactStatus::Open => Self::Open,
            ContactStatus::Closed => Self::Closed,
        }
    }
}

impl TryFrom<crm_core::Contact> for Contact {
    type Error = ApiError;

    /// Fails only if stored payload text is not JSON, which the store rules out.
    fn try_from(c: crm_core::Contact) -> Result<Self, ApiError> {
        let payload = c
            .payload
            .to_value()
            .map_err(|err| ApiError::internal("stored payload is not JSON", &err))?;
        Ok(Self {
            id: c.id.get(),
            lead_id: c.lead_id.get(),
            source_id: c.source_id.get(),
            operator_id: c.operator.as_ref().map(|o| o.id.get()),
            operator: Nullable(c.operator.map(Into::into)),
            status: c.status.into(),
            payload,
            created_at: c.created_at,
            closed_at: c.closed_at,
            waiting_ahead: c.waiting_ahead,
        })
    }
}

impl From<crm_core::OperatorStats> for OperatorStats {
    fn from(s: crm_core::OperatorStats) -> Self {
        Self {
            operator_id: s.operator_id.get(),
            operator_name: s.operator_name,
            max_active_contacts: s.max_active_contacts.get(),
            open_contacts: s.open_contacts,
            total_contacts: s.total_contacts,
            assigned_last_hour: s.assigned_last_hour,
            assigned_last_day: s.assigned_last_day,
            waiting_for_capacity: s.waiting_for_capacity,
        }
    }
}

/// Converts a list of contacts.
pub(crate) fn contacts(list: Vec<crm_core::Contact>) -> Result<Vec<Contact>, ApiError> {
    list.into_iter().map(Contact::try_from).collect()
}

/// Converts a list whose items convert infallibly.
pub(crate) fn list<T, U: From<T>>(items: Vec<T>) -> Vec<U> {
    items.into_iter().map(U::from).collect()
}

/// Everything but RFC 3986's unreserved characters is escaped.
const RESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_keeps_the_filters_and_moves_the_cursor() {
        let params = [
            ("status", Some("open".to_owned())),
            ("lead_id", None),
            ("external_id", Some("a b&c".to_owned())),
        ];
        let link =
            |limit| match Listed::page("/api/contacts", &params, limit, vec![7, 41], |id| *id) {
                Listed::Page(_, link) => link,
            };
        assert_eq!(
            link(2).as_deref(),
            Some(
                "</api/contacts?status=open&external_id=a%20b%26c&limit=2&after=41>; rel=\"next\""
            )
        );
        assert_eq!(link(3), None);
    }
}
