//! What a port may answer instead of a result: [`StoreError`], with the entity a
//! `NotFound` is about and a way to print an error with all its causes.

use std::fmt::Write as _;

use thiserror::Error;

use crate::OperatorId;

/// A boxed error from an adapter's driver, kept for logs and never shown to clients.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which kind of entity a [`StoreError::NotFound`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// An operator.
    Operator,
    /// A source.
    Source,
    /// A lead.
    Lead,
    /// A contact.
    Contact,
    /// A key of `/api/keys`.
    Key,
    /// A webhook endpoint.
    Webhook,
    /// A webhook delivery.
    Delivery,
}

impl Entity {
    /// Lower-case name for messages.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Source => "source",
            Self::Lead => "lead",
            Self::Contact => "contact",
            Self::Key => "key",
            Self::Webhook => "webhook",
            Self::Delivery => "delivery",
        }
    }
}

/// An error followed by its sources (`store is unavailable: database or disk is full`),
/// for logs: a [`StoreError`]'s own text leaves its cause out.
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

/// What can go wrong in a store operation. The first group are the client's doing and
/// carry no driver detail; the last three are the service's.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The entity named by the request does not exist.
    #[error("{} not found", .0.as_str())]
    NotFound(Entity),
    /// Another source already has this code.
    #[error("source code is already taken")]
    SourceCodeTaken,
    /// The operator still has contacts, so deleting it would lose their history.
    #[error("operator has contacts")]
    OperatorHasContacts,
    /// The source still has contacts, so deleting it would lose them.
    #[error("source has contacts")]
    SourceHasContacts,
    /// The contact is closed and cannot be assigned.
    #[error("contact is closed")]
    ContactClosed,
    /// The operator is inactive and cannot take a contact.
    #[error("operator is inactive")]
    OperatorInactive,
    /// The operator's open contacts have reached its limit.
    #[error("operator is at capacity")]
    OperatorAtCapacity,
    /// An operator named in the request body does not exist.
    #[error("operator {operator_id} does not exist")]
    UnknownOperator {
        /// Position in a list of operators, when the body had one.
        index: Option<usize>,
        /// The id that was not found.
        operator_id: OperatorId,
    },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// Too much work is queued; the caller may retry later.
    #[error("store is overloaded")]
    Overloaded,
    /// The database does not answer.
    #[error("store is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a broken invariant.
    #[error("internal store error")]
    Internal(#[source] BoxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_names_every_source_in_order() {
        let io = std::io::Error::other("database or disk is full");
        let err = StoreError::Unavailable(Box::new(io));
        assert_eq!(
            error_chain(&err),
            "store is unavailable: database or disk is full"
        );
        assert_eq!(
            error_chain(&StoreError::Overloaded),
            StoreError::Overloaded.to_string()
        );
    }
}
