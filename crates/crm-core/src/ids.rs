//! Typed identifiers: an operator id cannot be passed where a source id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw database value.
            #[must_use]
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifies an [`Operator`](crate::Operator).
    OperatorId
);
id_type!(
    /// Identifies a [`Source`](crate::Source).
    SourceId
);
id_type!(
    /// Identifies a [`Lead`](crate::Lead).
    LeadId
);
id_type!(
    /// Identifies a [`Contact`](crate::Contact).
    ContactId
);
id_type!(
    /// Identifies a source's ingest key.
    SourceKeyId
);
id_type!(
    /// Identifies a key of `/api/keys` (a viewer key).
    ApiKeyId
);
id_type!(
    /// Identifies a webhook endpoint.
    WebhookId
);
id_type!(
    /// Identifies one event's delivery to one webhook endpoint.
    DeliveryId
);
