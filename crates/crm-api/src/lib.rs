//! HTTP API of mini-crm: poem + poem-openapi over any [`crm_core::Store`].
//!
//! [`app`] builds the whole service — `/api/…`, `/health`, `/docs` (Swagger UI) and
//! `/openapi.json` — so the server binary and the integration tests run the same thing.
//! Every path is served with and without a trailing slash, and every error, including
//! poem's own (unknown path, wrong method, wrong content type, bad parameters) and a panic
//! in a handler, is answered as `application/problem+json`.

mod api;
mod auth;
mod body;
pub mod config;
mod dto;
mod error;
mod metrics;
mod spec;

use std::{any::Any, sync::Arc, time::Instant};

use crm_core::Store;
use poem::{
    Endpoint, EndpointExt, IntoResponse, PathPattern, Request, Response, Route,
    http::{HeaderValue, Method, header::CONTENT_LENGTH},
    middleware::{CatchPanic, NormalizePath, TrailingSlash},
};
use rand::RngExt;
use tracing::Instrument;

pub use crate::config::Config;
use crate::{
    error::{ApiError, ErrorCode, payload_too_large},
    metrics::{Metrics, MetricsEndpoint},
};

/// The header that carries a request's id, accepted from the client or generated.
pub const REQUEST_ID: &str = "x-request-id";

/// How the app authenticates its callers.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The admin bearer token; `None` leaves `/api` open to anyone who can connect.
    pub admin_token: Option<String>,
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
    let admin_token: Option<Arc<str>> = security.admin_token.map(Into::into);
    let auth_store = Arc::clone(&store);
    let metrics = Arc::new(Metrics::new());
    let scrape = MetricsEndpoint {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
    };
    let api = api::service(store);
    let allowed = Arc::new(api::AllowedMethods::of_api::<S>().with("/metrics", &[Method::GET]));
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    Route::new()
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .at("/metrics", scrape)
        .nest("/", api)
        .around(limit_body)
        .around(move |ep, req| {
            auth::authenticate(ep, req, Arc::clone(&auth_store), admin_token.clone())
        })
        .catch_all_error(problem)
        .around(move |ep, req| api::allow_header(ep, req, Arc::clone(&allowed)))
        // Outside authentication: it must judge the path the router will match
        // (`//api/operators/` is routed as `/api/operators`), never the path as sent.
        .with(NormalizePath::new(TrailingSlash::Trim))
        .with(CatchPanic::new().with_handler(panic_problem))
        .data(Arc::clone(&metrics))
        .around(move |ep, req| observe(ep, req, Arc::clone(&metrics)))
}

/// The OpenAPI document of [`app`], as served at `/openapi.json`.
#[must_use]
pub fn openapi_spec() -> String {
    api::service(Arc::new(spec::NoStore)).spec()
}

/// Refuses a body declared larger than the limit before anything reads it; a body that
/// declares no length is cut off while it is read (see `body::MAX_BODY_BYTES`).
async fn limit_body<E: Endpoint>(ep: Arc<E>, req: Request) -> poem::Result<Response> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > body::MAX_BODY_BYTES as u64) {
        return Err(payload_too_large().into());
    }
    Ok(ep.call(req).await?.into_response())
}

/// Turns every error that reached the top into a problem response.
async fn problem(err: poem::Error) -> Response {
    ApiError::from_poem(err).into_response()
}

/// Logs a handler's panic and answers 500.
fn panic_problem(panic: Box<dyn Any + Send>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic");
    tracing::error!(panic = message, "handler panicked");
    ApiError::new(
        ErrorCode::Internal,
        "the server failed to handle the request",
    )
    .into_response()
}

/// One span per request, carrying its id (the client's `X-Request-Id` when it is
/// usable, otherwise a fresh one, echoed back either way); one access log line and the
/// HTTP metrics per answered request.
async fn observe<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    metrics: Arc<Metrics>,
) -> poem::Result<Response> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| usable_request_id(id))
        .map_or_else(new_request_id, str::to_owned);
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %request_id, method = %method, path = %req.uri().path());
    async move {
        let mut resp = ep.call(req).await?.into_response();
        let route = resp
            .data::<PathPattern>()
            .map_or("unmatched", |p| p.0.as_ref())
            .to_owned();
        let took = started.elapsed();
        metrics.http(method.as_str(), &route, resp.status(), took);
        tracing::info!(
            method = %method,
            route = %route,
            status = resp.status().as_u16(),
            latency_ms = took.as_secs_f64() * 1000.0,
            "access"
        );
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, value);
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// 1..=128 visible ASCII characters: anything else could forge log lines.
fn usable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

#[cfg(test)]
mod tests {
    use poem::{endpoint::make_sync, http::StatusCode};

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_answered_as_a_500_problem() {
        let ep = make_sync(|_| -> &'static str { panic!("boom") })
            .with(CatchPanic::new().with_handler(panic_problem));
        let resp = ep.call(Request::default()).await.expect("a response");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.content_type(), Some("application/problem+json"));
        let body = resp.into_body().into_string().await.expect("a body");
        assert!(
            body.contains(r#""code":"internal""#) && !body.contains("boom"),
            "{body}"
        );
    }
}
