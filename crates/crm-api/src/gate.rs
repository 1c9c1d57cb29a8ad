//! Everything every request passes through before and after its route, as one endpoint.
//!
//! In order, outermost first: the request's span and id, its metrics and access log line;
//! catching a panic as a 500 problem; normalising the path (merged slashes, no trailing
//! one) so that everything after it sees the path the router matches; the `Allow`
//! header of a 405; turning every error into a problem response; authentication; the
//! body limit; then the routes.
//!
//! These were once seven poem middlewares (`around` closures, `NormalizePath`,
//! `CatchPanic`, `catch_all_error`, `data`). Each layer wraps the future of the one inside
//! it, and poem moves the whole nest of futures several times per request: one endpoint
//! with one future does the same work in about a fifth fewer instructions per
//! registration (docs/benchmarks.md, "Changes and their effect").

use std::{any::Any, panic::AssertUnwindSafe, str::FromStr, sync::Arc, time::Instant};

use crm_core::Store;
use futures_util::FutureExt;
use poem::{
    Endpoint, IntoResponse, PathPattern, Request, Response,
    http::{
        HeaderValue, StatusCode, Uri,
        header::{ALLOW, CONTENT_LENGTH},
        uri::PathAndQuery,
    },
};
use rand::RngExt;
use tracing::Instrument;

use crate::{
    REQUEST_ID,
    api::AllowedMethods,
    auth, body,
    error::{ApiError, ErrorCode, payload_too_large},
    metrics::Metrics,
};

/// The routes of the service behind everything each request passes through.
pub(crate) struct Gate<A, P, S> {
    /// The operations (`/api/…`, `/health`): the OpenAPI service's own router.
    pub(crate) api: A,
    /// The paths outside the OpenAPI document: `/docs`, `/openapi.json`, `/metrics`.
    pub(crate) pages: P,
    /// Where source keys are looked up.
    pub(crate) store: Arc<S>,
    /// The admin token; `None` leaves the API open.
    pub(crate) admin_token: Option<Arc<str>>,
    /// The methods of each path, for the `Allow` header of a 405.
    pub(crate) allowed: Arc<AllowedMethods>,
    /// The HTTP metrics, also handed to the operations as request data.
    pub(crate) metrics: Arc<Metrics>,
}

impl<A: Endpoint, P: Endpoint, S: Store> Endpoint for Gate<A, P, S> {
    type Output = Response;

    /// One span per request, carrying its id (the client's `X-Request-Id` when it is
    /// usable, otherwise a fresh one, echoed back either way); one access log line and
    /// the HTTP metrics per answered request, a panic included.
    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let started = Instant::now();
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| usable_request_id(id))
            .map_or_else(new_request_id, str::to_owned);
        let method = req.method().clone();
        let span = tracing::info_span!("request", id = %request_id, method = %method, path = %req.uri().path());
        req.extensions_mut().insert(Arc::clone(&self.metrics));
        let mut resp = AssertUnwindSafe(self.guarded(req))
            .catch_unwind()
            .instrument(span.clone())
            .await
            .unwrap_or_else(|panic| span.in_scope(|| panic_problem(panic)));
        let route = resp
            .data::<PathPattern>()
            .map_or("unmatched", |p| p.0.as_ref());
        let took = started.elapsed();
        self.metrics.http(&method, route, resp.status(), took);
        span.in_scope(|| {
            tracing::info!(
                method = %method,
                route = %route,
                status = resp.status().as_u16(),
                latency_ms = took.as_secs_f64() * 1000.0,
                "access"
            );
        });
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, value);
        }
        Ok(resp)
    }
}

impl<A: Endpoint, P: Endpoint, S: Store> Gate<A, P, S> {
    /// The request with its path normalised, answered by the routes or as a problem.
    async fn guarded(&self, mut req: Request) -> Response {
        normalize_path(&mut req);
        let uri = req.uri().clone();
        let mut resp = match self.admitted(req).await {
            Ok(resp) => resp,
            Err(err) => {
                // The route an error came from, for its metrics (a 422 of a registration
                // is counted under `/api/contacts`, only an unknown path as `unmatched`).
                let route = err.data::<PathPattern>().cloned();
                let mut resp = ApiError::from_poem(err).into_response();
                if let Some(route) = route {
                    resp.set_data(route);
                }
                resp
            }
        };
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && let Some(value) = self.allowed.header(uri.path())
        {
            resp.headers_mut().insert(ALLOW, value.clone());
        }
        resp
    }

    /// The routes' answer to an authenticated request whose body is within the limit.
    /// A body declared larger than the limit is refused before anything reads it; one
    /// that declares no length is cut off while it is read (see `body::MAX_BODY_BYTES`).
    async fn admitted(&self, mut req: Request) -> poem::Result<Response> {
        auth::authenticate(&mut req, self.store.as_ref(), self.admin_token.as_deref()).await?;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > body::MAX_BODY_BYTES as u64) {
            return Err(payload_too_large().into());
        }
        // Two routers side by side rather than the API nested at `/` in one: a nest
        // rebuilds the URI and the route's name on every request.
        if crate::is_page(req.uri().path()) {
            Ok(self.pages.call(req).await?.into_response())
        } else {
            Ok(self.api.call(req).await?.into_response())
        }
    }
}

/// Rewrites the path as the router matches it: runs of slashes merged into one, trailing
/// slashes trimmed (`//api//operators/` is `/api/operators`), the query kept.
fn normalize_path(req: &mut Request) {
    let Some(path) = normalized(req.uri().path()) else {
        return;
    };
    let path_and_query = match req.uri().query() {
        Some(query) => PathAndQuery::from_str(&format!("{path}?{query}")),
        None => PathAndQuery::from_str(&path),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = path_and_query.ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// `path` normalised, or `None` when it already is.
fn normalized(path: &str) -> Option<String> {
    let trailing = path.len() > 1 && path.ends_with('/');
    if !trailing && !path.contains("//") {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for c in path.trim_end_matches('/').chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    (out != path).then_some(out)
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

/// 1..=128 characters of `[A-Za-z0-9._-]`. The id is written into every log line of
/// the request unquoted, so anything else (a quote, a brace, `=`, a space) could end its
/// field and forge others, in text or in JSON logs; such an id is replaced by a fresh one.
fn usable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// 128 random bits as 32 lowercase hex digits, encoded into a fixed buffer: through
/// `format!("{:032x}")` or `hex::encode` (which collects `char`s) it cost 400–900
/// instructions per request (docs/benchmarks.md).
fn new_request_id() -> String {
    let mut digits = [0u8; 32];
    hex::encode_to_slice(rand::rng().random::<[u8; 16]>(), &mut digits)
        .expect("32 digits for 16 bytes");
    String::from_utf8(digits.to_vec()).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use poem::{
        EndpointExt,
        endpoint::make_sync,
        http::Method,
        middleware::{NormalizePath, TrailingSlash},
    };
    use proptest::prelude::*;

    use super::*;
    use crate::spec::NoStore;

    /// The gate over `ep`, which answers for the operations and the pages alike.
    fn gate<E: Endpoint>(ep: E) -> Gate<Arc<E>, Arc<E>, NoStore> {
        let ep = Arc::new(ep);
        Gate {
            api: Arc::clone(&ep),
            pages: ep,
            store: Arc::new(NoStore),
            admin_token: None,
            allowed: Arc::new(AllowedMethods::of_api::<NoStore>()),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// A page shadows any operation at its path (the gate asks `is_page` first), where
    /// one router would have refused the duplicate at start: none may share a path.
    #[test]
    fn no_operation_lives_under_a_page() {
        use poem_openapi::OpenApi;
        let paths: Vec<String> = <crate::api::Apis<NoStore> as OpenApi>::meta()
            .into_iter()
            .flat_map(|api| api.paths)
            .map(|path| path.path)
            .collect();
        assert!(paths.iter().any(|p| p == "/api/contacts"), "{paths:?}");
        for path in paths {
            assert!(
                !crate::is_page(&path),
                "{path} is both an operation and a page"
            );
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_as_a_500_problem() {
        let ep = gate(make_sync(|_| -> &'static str { panic!("boom") }));
        let resp = ep.call(Request::default()).await.expect("a response");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.content_type(), Some("application/problem+json"));
        assert!(resp.headers().contains_key(REQUEST_ID));
        let body = resp.into_body().into_string().await.expect("a body");
        assert!(
            body.contains(r#""code":"internal""#) && !body.contains("boom"),
            "{body}"
        );
    }

    /// What the routes see of a request sent to `uri`, through `ep`.
    async fn seen(ep: &impl Endpoint<Output = Response>, uri: &str) -> String {
        let req = Request::builder()
            .uri(Uri::from_str(uri).expect("a uri"))
            .finish();
        let resp = ep.call(req).await.expect("a response");
        resp.into_body().into_string().await.expect("a body")
    }

    fn echo_uri() -> impl Endpoint<Output = String> {
        make_sync(|req: Request| req.uri().to_string())
    }

    /// The whole app with a token set, over a store that answers nothing (built once: it
    /// takes milliseconds).
    static SECURED: std::sync::LazyLock<poem::endpoint::BoxEndpoint<'static, Response>> =
        std::sync::LazyLock::new(|| {
            crate::app_with(
                Arc::new(NoStore),
                crate::Security {
                    admin_token: Some("t0ken-for-the-property".into()),
                },
            )
            .boxed()
        });

    proptest! {
        /// The path the routes see is the one poem's `NormalizePath` (which this replaced)
        /// would have given them, for any mix of slashes, segments and query.
        #[test]
        fn paths_are_normalised_as_poem_normalises_them(
            path in "/[/a-z0-9.%-]{0,24}",
            query in proptest::option::of("[a-z0-9=&/]{0,12}"),
        ) {
            let uri = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
            let (ours, poems) = rt.block_on(async {
                let ours = seen(&gate(echo_uri()), &uri).await;
                let poems = seen(
                    &echo_uri().with(NormalizePath::new(TrailingSlash::Trim)).map_to_response(),
                    &uri,
                )
                .await;
                (ours, poems)
            });
            prop_assert_eq!(ours, poems);
        }

        /// With a token set, a request without one is refused (401) whatever its method
        /// and however its path is spelled (runs of slashes, trailing ones, dot and
        /// encoded segments), unless the path the router sees is one of the open pages.
        /// The oracle is written from the rule, not from `normalized`.
        #[test]
        fn no_spelling_of_a_guarded_path_is_served_without_a_token(
            segments in proptest::collection::vec(
                prop_oneof![
                    Just("api"), Just("operators"), Just("sources"), Just("contacts"),
                    Just("leads"), Just("stats"), Just("keys"), Just("1"), Just("docs"),
                    Just("health"), Just("metrics"), Just("openapi.json"), Just("."),
                    Just(".."), Just("%2F"), Just("%2e%2e"), Just("API"),
                ],
                0..5,
            ),
            separators in proptest::collection::vec(1usize..=3, 5),
            trailing in 0usize..=2,
            method in prop_oneof![
                Just(Method::GET), Just(Method::POST), Just(Method::PUT),
                Just(Method::PATCH), Just(Method::DELETE), Just(Method::HEAD),
                Just(Method::OPTIONS),
            ],
        ) {
            let mut path = String::new();
            for (segment, slashes) in segments.iter().zip(&separators) {
                path.push_str(&"/".repeat(*slashes));
                path.push_str(segment);
            }
            path.push_str(&"/".repeat(trailing));
            if path.is_empty() {
                path.push('/');
            }
            let routed: Vec<&str> = segments.clone();
            // `[]` is `/`, the supervisor's page.
            let open = matches!(
                routed.as_slice(),
                [] | ["health"] | ["metrics"] | ["openapi.json"] | ["docs", ..]
            );
            let app = &*SECURED;
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
            let status = rt.block_on(async {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(Uri::from_str(&path).expect("a uri"))
                    .content_type("application/json")
                    .body(r#"{"name":"Mallory"}"#);
                app.call(req).await.expect("a response").status()
            });
            if !open {
                prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {}", method, path);
            }
        }
    }
}
