//! The operations of the API, one module per resource, each generic over the store.

mod contacts;
mod health;
mod leads;
mod operators;
mod sources;
mod stats;

use std::sync::Arc;

use crm_core::{Page, Store};
use poem_openapi::{OpenApiService, Tags};

/// Groups of operations in the OpenAPI document.
#[derive(Tags)]
enum ApiTags {
    /// People who take contacts
    Operators,
    /// Bots and channels contacts come through, with their operators' weights
    Sources,
    /// End customers and their contacts
    Leads,
    /// Registering, listing, closing and assigning contacts
    Contacts,
    /// Load figures
    Stats,
    /// Liveness of the service and its database
    Health,
}

/// Every operation of the service, over one store.
pub(crate) type Apis<S> = (
    health::HealthApi<S>,
    operators::OperatorsApi<S>,
    sources::SourcesApi<S>,
    leads::LeadsApi<S>,
    contacts::ContactsApi<S>,
    stats::StatsApi<S>,
);

/// The OpenAPI service of all operations over `store`.
pub(crate) fn service<S: Store>(store: Arc<S>) -> OpenApiService<Apis<S>, ()> {
    let apis = (
        health::HealthApi(Arc::clone(&store)),
        operators::OperatorsApi(Arc::clone(&store)),
        sources::SourcesApi(Arc::clone(&store)),
        leads::LeadsApi(Arc::clone(&store)),
        contacts::ContactsApi(Arc::clone(&store)),
        stats::StatsApi(store),
    );
    OpenApiService::new(apis, "mini-crm", env!("CARGO_PKG_VERSION")).description(
        "Distributes incoming customer contacts among operators by weight, within each \
         operator's limit of open contacts. Errors are RFC 9457 problem details \
         (`application/problem+json`) with a stable `code`.",
    )
}

/// Page size when none is asked for.
fn default_page_limit() -> u32 {
    Page::DEFAULT_LIMIT
}
