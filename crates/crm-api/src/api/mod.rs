//! The operations of the API, one module per resource, each generic over the store.

mod api_keys;
mod contacts;
mod decisions;
mod events;
mod health;
mod insight;
mod keys;
mod leads;
mod operators;
mod path_id;
mod queue;
mod sources;
mod stats;
mod webhooks;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use crm_core::{Page, Store};
use poem::http::{HeaderValue, Method};
use poem_openapi::{OpenApi, OpenApiService, Tags};

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
    /// Contacts waiting for an operator
    Queue,
    /// Load figures
    Stats,
    /// Viewer keys: read-only access for screens and reports
    Keys,
    /// Every committed change, as a resumable stream
    Events,
    /// Endpoints that receive events, signed
    Webhooks,
    /// Liveness of the service and its database
    Health,
}

/// Every operation of the service, over one store.
pub(crate) type Apis<S> = (
    health::HealthApi<S>,
    operators::OperatorsApi<S>,
    sources::SourcesApi<S>,
    insight::InsightApi<S>,
    leads::LeadsApi<S>,
    contacts::ContactsApi<S>,
    decisions::DecisionsApi<S>,
    queue::QueueApi<S>,
    keys::KeysApi<S>,
    api_keys::ApiKeysApi<S>,
    stats::StatsApi<S>,
    events::EventsApi<S>,
    webhooks::WebhooksApi<S>,
);

/// The OpenAPI service of all operations over `store`.
pub(crate) fn service<S: Store>(
    store: Arc<S>,
    queue: crate::QueueSettings,
    events: crate::EventSettings,
) -> OpenApiService<Apis<S>, ()> {
    let webhook_settings = events.webhooks.clone();
    let hub = Arc::new(crate::events::Hub::new(Arc::clone(&store), events));
    let apis = (
        health::HealthApi(Arc::clone(&store)),
        operators::OperatorsApi(Arc::clone(&store)),
        sources::SourcesApi(Arc::clone(&store)),
        insight::InsightApi::new(Arc::clone(&store)),
        leads::LeadsApi(Arc::clone(&store)),
        contacts::ContactsApi(Arc::clone(&store)),
        decisions::DecisionsApi(Arc::clone(&store)),
        queue::QueueApi(Arc::clone(&store), queue),
        keys::KeysApi(Arc::clone(&store)),
        api_keys::ApiKeysApi(Arc::clone(&store)),
        stats::StatsApi(Arc::clone(&store)),
        events::EventsApi(hub),
        webhooks::WebhooksApi(store, webhook_settings),
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

/// One page of a list the store returns whole (the queue, a contact's history): the items
/// whose `key` is above `after`, at most `limit` of them, in the order given.
fn page_after<T>(items: Vec<T>, key: impl Fn(&T) -> i64, after: Option<i64>, limit: u32) -> Vec<T> {
    items
        .into_iter()
        .filter(|item| after.is_none_or(|after| key(item) > after))
        .take(limit as usize)
        .collect()
}

/// The methods each path answers, for the `Allow` header every 405 must carry (RFC 9110).
pub(crate) struct AllowedMethods {
    /// Each path template split into segments (`None` for a `{variable}`), with its header.
    routes: Vec<(Vec<Option<String>>, HeaderValue)>,
}

impl AllowedMethods {
    /// The operations of the API over `S`, as in its OpenAPI document. poem answers
    /// `HEAD` wherever there is a `GET`, so those list it too.
    pub(crate) fn of_api<S: Store>() -> Self {
        let mut by_path: BTreeMap<String, Vec<Method>> = BTreeMap::new();
        for api in <Apis<S> as OpenApi>::meta() {
            for path in api.paths {
                let methods = by_path.entry(path.path).or_default();
                methods.extend(path.operations.into_iter().map(|o| o.method));
                if methods.contains(&Method::GET) {
                    methods.push(Method::HEAD);
                }
            }
        }
        by_path
            .iter()
            .fold(Self { routes: Vec::new() }, |allowed, (path, methods)| {
                allowed.with(path, methods)
            })
    }

    /// Adds a path `template` (`/api/operators/{id}`) that answers `methods`.
    pub(crate) fn with(mut self, template: &str, methods: &[Method]) -> Self {
        let segments = segments(template)
            .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
            .collect();
        let ranked: BTreeSet<usize> = methods
            .iter()
            .filter_map(|m| METHOD_ORDER.iter().position(|o| *o == m.as_str()))
            .collect();
        let list: Vec<&str> = ranked.into_iter().map(|i| METHOD_ORDER[i]).collect();
        if let Ok(value) = HeaderValue::from_str(&list.join(", ")) {
            self.routes.push((segments, value));
        }
        self
    }

    /// The `Allow` value of the path a request named, if it is one of ours.
    pub(crate) fn header(&self, path: &str) -> Option<&HeaderValue> {
        let requested: Vec<&str> = segments(path).collect();
        self.routes.iter().find_map(|(template, value)| {
            let matches = template.len() == requested.len()
                && template
                    .iter()
                    .zip(&requested)
                    .all(|(t, r)| t.as_deref().is_none_or(|t| t == *r));
            matches.then_some(value)
        })
    }
}

/// The order methods are listed in.
const METHOD_ORDER: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// The non-empty segments of a path (so a trailing slash does not count).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::NoStore;

    #[test]
    fn allow_lists_the_methods_of_the_matching_path() {
        let allowed =
            AllowedMethods::of_api::<NoStore>().with("/metrics", &[Method::GET, Method::HEAD]);
        let header = |path| allowed.header(path).and_then(|v| v.to_str().ok());
        assert_eq!(header("/api/operators"), Some("GET, HEAD, POST"));
        assert_eq!(
            header("/api/operators/7/"),
            Some("GET, HEAD, PATCH, DELETE")
        );
        assert_eq!(header("/api/contacts/x/assign"), Some("POST"));
        assert_eq!(header("/api/sources/1/operators"), Some("PUT"));
        assert_eq!(header("/metrics"), Some("GET, HEAD"));
        assert_eq!(header("/api/nothing"), None);
    }
}
