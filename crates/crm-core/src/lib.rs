//! The domain of mini-crm, free of I/O: entities, validated values, the distribution rule,
//! the ports storage implements and the registration use case written against them.
//!
//! This crate knows nothing of SQL, HTTP or an async runtime, so other Rust services can
//! embed it. The rule takes its randomness as an argument; a seeded generator such as
//! `rand_chacha::ChaCha8Rng` makes a run reproducible:
//!
//! ```
//! use crm_core::{Candidate, Exclusion, OperatorId, choose};
//! use rand::SeedableRng;
//! # use rand_chacha::ChaCha8Rng;
//!
//! let candidates = [
//!     Candidate { operator_id: OperatorId(1), weight: 10, is_active: true, open_contacts: 0, max_active_contacts: 5, rate_limited: false },
//!     Candidate { operator_id: OperatorId(2), weight: 30, is_active: true, open_contacts: 3, max_active_contacts: 3, rate_limited: false },
//!     Candidate { operator_id: OperatorId(3), weight: 20, is_active: false, open_contacts: 0, max_active_contacts: 5, rate_limited: false },
//! ];
//! let mut rng = ChaCha8Rng::seed_from_u64(7);
//! let decision = choose(&candidates, &mut rng);
//!
//! // Operator 2 is full and 3 is off, so 1 is the only one left.
//! assert_eq!(decision.chosen, Some(OperatorId(1)));
//! assert_eq!(decision.candidates[1].excluded, Some(Exclusion::AtCapacity));
//! assert_eq!(decision.candidates[2].excluded, Some(Exclusion::Inactive));
//! ```
//!
//! [`pick`] is the same draw without the verdicts, and allocates nothing: for callers that
//! draw many times and keep only who was chosen.
//!
//! Storage adapters implement [`RegistrationTx`] (one registration's unit of work) and
//! [`Store`] (everything the HTTP layer needs); [`register_contact`] is the one place the
//! registration steps are written.

mod distribution;
mod error;
mod events;
mod fairness;
mod history;
mod ids;
mod insight;
mod model;
mod pacing;
mod ports;
mod queue;
mod record;
mod register;
mod simulate;
mod smooth;
mod sticky;
mod strategy;
mod values;
mod webhooks;

pub use distribution::{
    Candidate, Decision, Exclusion, Pick, Verdict, choose, choose_avoiding, exclusion, pick, queued,
};
pub use error::{BoxError, Entity, StoreError, error_chain};
pub use events::{
    ContactState, Event, EventCursor, EventPage, EventType, NewEvent, OperatorFields, SourceFields,
    UnknownEventType,
};
pub use fairness::{Distribution, FLAG_Z, Fairness, Share, distribution};
pub use history::{DecisionEntry, DecisionPath};
pub use ids::{
    ApiKeyId, ContactId, DeliveryId, LeadId, OperatorId, SourceId, SourceKeyId, WebhookId,
};
pub use insight::{
    SimulatedOperator, Simulation, SimulationRequest, SourceDecision, Window, WindowError,
    simulate, source_distribution,
};
pub use model::{
    ApiKey, Contact, ContactFilter, ContactStatus, KeyScope, Lead, LeadFilter, LeadWithContacts,
    NewApiKey, NewContact, NewOperator, NewSource, NewSourceKey, Operator, OperatorFilter,
    OperatorLoad, OperatorPatch, OperatorStats, OperatorSummary, Page, RepeatedOperator, Source,
    SourceKey, SourceOperator, SourcePatch, SourceQueue, SourceRef, WeightEntry, WeightSet,
};
pub use pacing::{AssignmentsPerMinute, Pace, next_eligible, rate_limited};
pub use ports::{
    Inserted, KeyClaim, KeyedRegistrationTx, PoolStatus, Prepared, RegistrationTx, Store,
    WebhookStore,
};
pub use queue::DrainOrder;
pub use register::{Registered, Registration, register_contact, register_contact_once};
pub use simulate::{DrainPreview, predict, predict_smooth, preview_drain, preview_drain_smooth};
pub use smooth::smooth_pick;
pub use sticky::{OwnerSkipped, Sticky, sticky_owner};
pub use strategy::{Credit, SourceRule, SourceState, StickyNote, Strategy, decide};
pub use values::{
    ExternalLeadId, IdempotencyKey, MaxActiveContacts, Name, Payload, SourceCode, ValueError,
    Weight, is_control, reject_controls,
};
pub use webhooks::{
    Attempt, Attempted, Delivery, DeliveryState, DueDelivery, NewWebhook, RetrySchedule,
    UrlRefused, Webhook, WebhookBacklog, WebhookLease, WebhookPatch, WebhookSecrets, WebhookUrl,
    is_internal, subscribed,
};
