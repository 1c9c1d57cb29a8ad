//! HTTP API of mini-crm: poem + poem-openapi over any [`crm_core::Store`].
//!
//! [`app`] builds the whole service — `/api/…`, `/health`, the supervisor's page at `/`,
//! `/docs` (Swagger UI) and `/openapi.json` — so the server binary and the integration tests run the same thing.
//! Every path is served with and without a trailing slash, and every error, including
//! poem's own (unknown path, wrong method, wrong content type, bad parameters) and a panic
//! in a handler, is answered as `application/problem+json`.

mod api;
mod auth;
mod body;
mod closing;
pub mod config;
mod dto;
mod error;
mod events;
mod gate;
mod metrics;
mod page;
pub mod server;
mod spec;
mod webhooks;

use std::sync::Arc;

use crm_core::Store;
use poem::{Endpoint, IntoEndpoint, Response, Route, http::Method};

pub use crate::config::Config;
pub use crate::events::EventSettings;
use crate::metrics::{Metrics, MetricsEndpoint};
pub use crate::webhooks::WebhookSettings;

/// The pages outside the OpenAPI document (Swagger UI and its OAuth receiver, the document
/// itself, the metrics; the supervisor's page has its own list, `page::PATHS`): open to anyone, `GET` and `HEAD` only. One list, read by the
/// router, the authentication and the `Allow` header of a 405.
const PAGES: [&str; 4] = [
    "/docs",
    "/docs/oauth-receiver.html",
    "/openapi.json",
    "/metrics",
];

/// Whether `path` (normalised: merged slashes, no trailing one) is one of the [`PAGES`] or
/// a path of the supervisor's page, which are as open.
fn is_page(path: &str) -> bool {
    PAGES.contains(&path) || page::serves(path)
}

/// The header that carries a request's id, accepted from the client or generated.
pub const REQUEST_ID: &str = "x-request-id";

/// How the app authenticates its callers.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The admin bearer token; `None` leaves `/api` open to anyone who can connect.
    pub admin_token: Option<String>,
}

/// How the waiting queue is reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueSettings {
    /// A contact waiting longer than this counts as stale in `GET /api/queue` and
    /// `/metrics`; it is only flagged, never closed or skipped. `None` flags none.
    pub max_wait: Option<std::time::Duration>,
}

impl QueueSettings {
    /// The moment before which a contact that still waits, waited too long, as of `now`.
    #[must_use]
    pub fn stale_before(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let max_wait = chrono::Duration::from_std(self.max_wait?).ok()?;
        now.checked_sub_signed(max_wait)
    }
}

/// The whole HTTP service over `store`, open to every caller (no admin token).
pub fn app<S: Store>(store: Arc<S>) -> impl Endpoint<Output = Response> + 'static {
    app_with(store, Security::default())
}

/// The whole HTTP service over `store`, with `security`.
pub fn app_with<S: Store>(
    store: Arc<S>,
    security: Security,
) -> impl Endpoint<Output = Response> + 'static {
    app_with_queue(store, security, QueueSettings::default())
}

/// The whole HTTP service over `store`, with `security`, reporting the queue by `queue`.
pub fn app_with_queue<S: Store>(
    store: Arc<S>,
    security: Security,
    queue: QueueSettings,
) -> impl Endpoint<Output = Response> + 'static {
    app_with_events(store, security, queue, EventSettings::default())
}

/// The whole HTTP service over `store`, with `security`, reporting the queue by `queue`,
/// streaming events by `events`.
pub fn app_with_events<S: Store>(
    store: Arc<S>,
    security: Security,
    queue: QueueSettings,
    events: EventSettings,
) -> impl Endpoint<Output = Response> + 'static {
    let admin_token: Option<Arc<str>> = security.admin_token.map(Into::into);
    let auth_store = Arc::clone(&store);
    let metrics = Arc::new(Metrics::new());
    let scrape = MetricsEndpoint {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        queue,
    };
    // The webhook sender runs as long as the app's runtime (the document has none).
    let _sender = webhooks::spawn(
        Arc::clone(&store),
        events.webhooks.clone(),
        events.closing.clone(),
    );
    let api = api::service(store, queue, events);
    let allowed = Arc::new(
        PAGES
            .iter()
            .chain(page::PATHS.iter().map(|(at, _)| at))
            .fold(api::AllowedMethods::of_api::<S>(), |allowed, page| {
                allowed.with(page, &[Method::GET, Method::HEAD])
            }),
    );
    // `get` answers HEAD too, and 405 to any other method (Swagger UI's own endpoints
    // answer every method).
    let pages = page::routes(
        Route::new()
            .nest("/docs", poem::get(api.swagger_ui()))
            .at("/openapi.json", poem::get(api.spec_endpoint()))
            .at("/metrics", poem::get(scrape)),
    );
    gate::Gate {
        api: api.into_endpoint(),
        pages,
        store: auth_store,
        admin_token,
        allowed,
        metrics,
    }
}

/// The OpenAPI document of [`app`], as served at `/openapi.json`.
#[must_use]
pub fn openapi_spec() -> String {
    api::service(
        Arc::new(spec::NoStore),
        QueueSettings::default(),
        EventSettings::default(),
    )
    .spec()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{TimeZone, Utc};

    use super::QueueSettings;

    #[test]
    fn a_contact_is_stale_once_it_waited_longer_than_the_longest_wait() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 6, 3, 0, 0)
            .single()
            .expect("a time");
        let none = QueueSettings { max_wait: None };
        assert_eq!(none.stale_before(now), None);
        let ten_minutes = QueueSettings {
            max_wait: Some(Duration::from_secs(600)),
        };
        assert_eq!(
            ten_minutes.stale_before(now),
            Utc.with_ymd_and_hms(2026, 12, 6, 2, 50, 0).single()
        );
    }
}
