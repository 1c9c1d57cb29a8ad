//! Entities as the service reads them back, and the commands that create or change them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    ApiKeyId, AssignmentsPerMinute, ContactId, ExternalLeadId, LeadId, MaxActiveContacts, Name,
    OperatorId, Payload, SourceCode, SourceId, SourceKeyId, SourceRule, Strategy, Weight,
};

/// A human who handles contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// Identifier.
    pub id: OperatorId,
    /// Display name.
    pub name: String,
    /// Inactive operators receive no automatic or manual assignments.
    pub is_active: bool,
    /// Most open contacts the operator may hold.
    pub max_active_contacts: MaxActiveContacts,
    /// Most automatic assignments per minute (a bucket of that burst, see [`crate::Pace`]);
    /// `None`: unpaced.
    pub max_assignments_per_minute: Option<AssignmentsPerMinute>,
    /// The operator's load: how many open contacts are assigned to it now.
    pub open_contacts: i64,
    /// When the operator was created.
    pub created_at: DateTime<Utc>,
}

/// The few fields of an operator shown inside other entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSummary {
    /// Identifier.
    pub id: OperatorId,
    /// Display name.
    pub name: String,
    /// Whether it takes contacts.
    pub is_active: bool,
}

/// A bot or channel that sends contacts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Identifier.
    pub id: SourceId,
    /// Display name.
    pub name: String,
    /// Unique, case-sensitive code clients may use instead of the id.
    pub code: SourceCode,
    /// When the source was created.
    pub created_at: DateTime<Utc>,
    /// How it chooses among its operators, and whether returning leads keep theirs.
    pub rule: SourceRule,
    /// The operators that take this source's contacts, with their weights, by operator id.
    pub operators: Vec<SourceOperator>,
}

/// One operator's weight for a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOperator {
    /// The operator.
    pub operator: OperatorSummary,
    /// Its relative share of the source's contacts.
    pub weight: Weight,
    /// Its smooth credit for the source (the smooth rule's state; 0 after a weights
    /// change, and for a source that never ran in smooth mode).
    pub credit: i64,
}

/// An end customer, known by the identifier its channel gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    /// Identifier.
    pub id: LeadId,
    /// The channel's identifier, exactly as sent.
    pub external_id: String,
    /// When the lead first wrote.
    pub created_at: DateTime<Utc>,
}

/// Whether a contact still needs work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactStatus {
    /// Counts towards its operator's load.
    Open,
    /// Done; no longer counts.
    Closed,
}

impl ContactStatus {
    /// The stored and serialised spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    /// Parses the stored spelling.
    #[must_use]
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// One appeal of a lead through a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Identifier.
    pub id: ContactId,
    /// Who wrote.
    pub lead_id: LeadId,
    /// Through which source.
    pub source_id: SourceId,
    /// The assigned operator, if any.
    pub operator: Option<OperatorSummary>,
    /// Open or closed.
    pub status: ContactStatus,
    /// What the source sent along, as compact JSON.
    pub payload: Payload,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it was closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// Only in the answer of the registration that stored it waiting (and in replays of that
    /// answer): how many contacts of its source were waiting ahead of it then, up to
    /// [`crate::Prepared::MAX_AHEAD`]. `None` in every other read: a later position is
    /// `GET /api/queue`'s to tell.
    pub waiting_ahead: Option<u64>,
}

/// A lead with all its contacts, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadWithContacts {
    /// The lead.
    pub lead: Lead,
    /// Its contacts across all sources.
    pub contacts: Vec<Contact>,
}

/// An operator's load figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStats {
    /// The operator.
    pub operator_id: OperatorId,
    /// Its name.
    pub operator_name: String,
    /// Its limit.
    pub max_active_contacts: MaxActiveContacts,
    /// Its open contacts (the load counter).
    pub open_contacts: i64,
    /// Contacts assigned to it now, any status.
    pub total_contacts: i64,
    /// Contacts it received (drawn at registration or in a drain, or by hand) in the hour
    /// up to now (its end included).
    pub assigned_last_hour: i64,
    /// The same over the 24 hours before now.
    pub assigned_last_day: i64,
    /// Contacts waiting now that were queued while it was at capacity (it had a weight
    /// for their source and no room).
    pub waiting_for_capacity: i64,
}

/// An operator's load as its counters keep it: what monitoring reads on every scrape,
/// without counting contacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorLoad {
    /// The operator.
    pub operator_id: OperatorId,
    /// Its limit.
    pub max_active_contacts: MaxActiveContacts,
    /// Its open contacts (the load counter).
    pub open_contacts: i64,
}

/// One source's waiting queue: its open contacts without an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceQueue {
    /// The source.
    pub source_id: SourceId,
    /// How many contacts wait.
    pub waiting: i64,
    /// The oldest waiting contact, served first.
    pub oldest_id: ContactId,
    /// When it arrived.
    pub oldest_since: DateTime<Utc>,
    /// How many arrived before the moment asked about (those waiting longer than the
    /// configured longest wait); 0 when none was asked about.
    pub stale: i64,
}

/// An ingest key of a source, as listed (the key itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceKey {
    /// Identifier.
    pub id: SourceKeyId,
    /// The source it may register contacts for.
    pub source_id: SourceId,
    /// What the key is for, as its creator described it.
    pub label: Option<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was last used (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// What a key of `/api/keys` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// Read everything but keys, and call the dry run (`POST /api/sources/{id}/simulate`).
    Viewer,
}

impl KeyScope {
    /// The scope named `name`.
    ///
    /// # Errors
    /// [`ValueError::NotOneOf`] for any other name.
    pub fn parse(name: &str) -> Result<Self, crate::ValueError> {
        match name {
            "viewer" => Ok(Self::Viewer),
            _ => Err(crate::ValueError::NotOneOf { expected: "viewer" }),
        }
    }

    /// Its name in requests, answers and storage.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
        }
    }
}

/// An issued key of `/api/keys`, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Identifier.
    pub id: ApiKeyId,
    /// What it may do.
    pub scope: KeyScope,
    /// What the key is for, as its creator described it.
    pub label: Option<String>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was last used (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key of `/api/keys` to store: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// What it may do.
    pub scope: KeyScope,
    /// Optional description.
    pub label: Option<Name>,
    /// The key's first characters.
    pub prefix: String,
    /// A hash of the key (hex SHA-256).
    pub hash: String,
}

/// A key to store: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSourceKey {
    /// The source.
    pub source_id: SourceId,
    /// Optional description.
    pub label: Option<Name>,
    /// The key's first characters.
    pub prefix: String,
    /// A hash of the key (hex SHA-256).
    pub hash: String,
}

/// A new operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperator {
    /// Display name.
    pub name: Name,
    /// Whether it takes contacts.
    pub is_active: bool,
    /// Its limit.
    pub max_active_contacts: MaxActiveContacts,
    /// Its pace; `None`: unpaced.
    pub max_assignments_per_minute: Option<AssignmentsPerMinute>,
}

/// A partial update of an operator: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorPatch {
    /// New name.
    pub name: Option<Name>,
    /// New activity flag.
    pub is_active: Option<bool>,
    /// New limit. Lowering it below the current load assigns nothing new until the load
    /// drops; it does not take contacts away.
    pub max_active_contacts: Option<MaxActiveContacts>,
    /// New pace: `Some(None)` removes it; `None` leaves it as it is.
    #[allow(clippy::option_option)]
    pub max_assignments_per_minute: Option<Option<AssignmentsPerMinute>>,
}

/// A new source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSource {
    /// Display name.
    pub name: Name,
    /// Unique code.
    pub code: SourceCode,
    /// Its strategy and stickiness.
    pub rule: SourceRule,
}

/// A partial update of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePatch {
    /// New name.
    pub name: Option<Name>,
    /// New code; must stay unique.
    pub code: Option<SourceCode>,
    /// New strategy (the smooth state is kept: it is reset by a weights change only).
    pub strategy: Option<Strategy>,
    /// Whether returning leads keep their operator, from now on.
    pub sticky_owner: Option<bool>,
}

/// One entry of a source's weight set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightEntry {
    /// The operator.
    pub operator_id: OperatorId,
    /// Its weight.
    pub weight: Weight,
}

/// A source's complete weight set, without repeated operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSet(Vec<WeightEntry>);

/// An operator appears twice in a weight set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("operator {operator_id} is listed more than once")]
pub struct RepeatedOperator {
    /// Position of the repetition in the list.
    pub index: usize,
    /// The repeated operator.
    pub operator_id: OperatorId,
}

impl WeightSet {
    /// Checks that no operator is listed twice.
    ///
    /// # Errors
    /// [`RepeatedOperator`] at the first repetition.
    pub fn new(entries: Vec<WeightEntry>) -> Result<Self, RepeatedOperator> {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            if !seen.insert(entry.operator_id) {
                return Err(RepeatedOperator {
                    index,
                    operator_id: entry.operator_id,
                });
            }
        }
        Ok(Self(entries))
    }

    /// The entries in the order given.
    #[must_use]
    pub fn entries(&self) -> &[WeightEntry] {
        &self.0
    }

    /// Whether these are exactly the `(operator, weight)` pairs of `current`, in any order:
    /// a replacement that changes nothing, and so keeps a smooth source's state.
    #[must_use]
    pub fn is_same_as(&self, current: &[(OperatorId, i64)]) -> bool {
        let mut wanted: Vec<(OperatorId, i64)> = self
            .0
            .iter()
            .map(|entry| (entry.operator_id, entry.weight.get()))
            .collect();
        let mut current = current.to_vec();
        wanted.sort_unstable();
        current.sort_unstable();
        wanted == current
    }
}

/// Where a contact came from: a source by id or by code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// By id.
    Id(SourceId),
    /// By code.
    Code(SourceCode),
}

/// A contact to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    /// Who wrote.
    pub external_lead_id: ExternalLeadId,
    /// Through which source.
    pub source: SourceRef,
    /// What the source sent along.
    pub payload: Payload,
}

/// Filters of the operator listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorFilter {
    /// Only active (or only inactive) operators.
    pub is_active: Option<bool>,
}

/// A page request of an id-ordered listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only items with a larger id.
    pub after: Option<i64>,
    /// At most this many items (1..=1000).
    pub limit: u32,
}

impl Page {
    /// Largest page.
    pub const MAX_LIMIT: u32 = 1000;
    /// Page size when none is asked for.
    pub const DEFAULT_LIMIT: u32 = 100;
}

/// Filters of the contact listing; all given ones must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactFilter {
    /// Only contacts with this status.
    pub status: Option<ContactStatus>,
    /// Only contacts of this operator.
    pub operator_id: Option<OperatorId>,
    /// Only contacts from this source.
    pub source_id: Option<SourceId>,
    /// Only contacts of this lead.
    pub lead_id: Option<LeadId>,
    /// Only contacts with no operator.
    pub unassigned: bool,
    /// Which page.
    pub page: Page,
}

/// Filters of the lead listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadFilter {
    /// Only the lead with this external id.
    pub external_id: Option<String>,
    /// Which page.
    pub page: Page,
}
