//! The problem statuses each operation declares in the OpenAPI document: a handler
//! returns [`ApiResult<T, S>`], whose `S` is a set of [`declare`] flags.

use crm_core::StoreError;
use poem_openapi::{
    ApiResponse,
    registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};

use super::{ApiError, PROBLEM_JSON, ProblemBody};

/// A handler's result: its answer, or a problem with one of the statuses `S` (a set of
/// [`declare`] flags) that the operation declares in the OpenAPI document.
pub(crate) type ApiResult<T, const S: u16> = Result<T, Problem<S>>;

/// An [`ApiError`] from an operation that declares the problem statuses `S`.
#[derive(Debug)]
pub(crate) struct Problem<const S: u16>(ApiError);

/// The problem statuses operations declare, as flags to combine with `|`.
pub(crate) mod declare {
    use super::bit;

    /// Every operation: a bug (500) or a database that does not answer (503).
    pub(crate) const ANY: u16 = bit(500) | bit(503);
    /// Every operation under `/api`: credentials missing (401) or not allowed (403).
    pub(crate) const API: u16 = ANY | bit(401) | bit(403);
    /// An entity named in the path: not found (404), or an id that is no id (422).
    pub(crate) const PATH: u16 = bit(404) | bit(422);
    /// Query parameters or headers that can be invalid (422).
    pub(crate) const QUERY: u16 = bit(422);
    /// A JSON body: malformed (400), too large (413), not JSON (415) or invalid (422).
    pub(crate) const BODY: u16 = bit(400) | bit(413) | bit(415) | bit(422);
    /// A reference in the body to something that does not exist (404).
    pub(crate) const MISSING: u16 = bit(404);
    /// A conflict with the current state (409).
    pub(crate) const CONFLICT: u16 = bit(409);
}

/// The flag of `status`: its bit is its place in [`STATUSES`] (a status not listed there
/// fails the build).
const fn bit(status: u16) -> u16 {
    let mut i = 0;
    while STATUSES[i].0 != status {
        i += 1;
    }
    1 << i
}

/// The statuses an operation can declare, with their descriptions; a [`declare`] flag is
/// a set of them.
pub(super) const STATUSES: [(u16, &str); 10] = [
    (400, "Malformed JSON body"),
    (401, "Missing, unknown or revoked credentials"),
    (403, "The credentials may not do this"),
    (404, "Not found"),
    (409, "Conflict with the current state"),
    (413, "Body larger than 1 MiB"),
    (415, "Body not declared as JSON"),
    (422, "Validation failed"),
    (500, "Internal error"),
    (503, "Overloaded or unavailable; retry later"),
];

impl<const S: u16> From<ApiError> for Problem<S> {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl<const S: u16> From<StoreError> for Problem<S> {
    fn from(err: StoreError) -> Self {
        Self(err.into())
    }
}

impl<const S: u16> From<Problem<S>> for poem::Error {
    fn from(problem: Problem<S>) -> Self {
        problem.0.into()
    }
}

impl<const S: u16> ApiResponse for Problem<S> {
    fn meta() -> MetaResponses {
        let declared = STATUSES
            .iter()
            .enumerate()
            .filter(|(bit, _)| S & 1 << bit != 0);
        let responses = declared
            .map(|(_, &(status, description))| MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: PROBLEM_JSON,
                    schema: ProblemBody::schema_ref(),
                }],
                headers: headers(status),
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        ProblemBody::register(registry);
    }
}

/// The headers a problem with `status` carries.
fn headers(status: u16) -> Vec<MetaHeader> {
    match status {
        401 => vec![MetaHeader {
            name: "WWW-Authenticate".to_owned(),
            description: Some("Always `Bearer`".to_owned()),
            required: true,
            deprecated: false,
            schema: String::schema_ref(),
        }],
        503 => vec![MetaHeader {
            name: "Retry-After".to_owned(),
            description: Some("Seconds to wait, when overloaded".to_owned()),
            required: false,
            deprecated: false,
            schema: u32::schema_ref(),
        }],
        _ => Vec::new(),
    }
}
