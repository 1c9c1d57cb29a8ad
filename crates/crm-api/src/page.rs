//! The supervisor's page: static files embedded in the binary (`crates/crm-api/page/`),
//! served by poem's `EmbeddedFileEndpoint` at `/`, `/dashboard` and `/assets/…`.
//!
//! The page is plain HTML, CSS and JavaScript modules with no build step; it talks to the
//! public API only, with the credential the supervisor signs in with (docs/dashboard.md).
//! Every answer carries a content security policy that allows nothing but this origin:
//! no inline script, no frame around it, no request elsewhere.

use poem::{
    EndpointExt, Route,
    endpoint::EmbeddedFileEndpoint,
    http::header::{
        CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
        X_FRAME_OPTIONS,
    },
    middleware::SetHeader,
};

/// The page's files; in debug builds too (`debug-embed`), so a test binary serves what a
/// release serves.
#[derive(rust_embed::RustEmbed)]
#[folder = "page/"]
struct Files;

/// The page's document.
const INDEX: &str = "index.html";

/// The paths the page is served at, each with the file it serves: open to anyone (the page
/// asks for a credential itself), `GET` and `HEAD` only.
pub(crate) const PATHS: [(&str, &str); 9] = [
    ("/", INDEX),
    ("/dashboard", INDEX),
    ("/assets/app.css", "assets/app.css"),
    ("/assets/app.js", "assets/app.js"),
    ("/assets/api.js", "assets/api.js"),
    ("/assets/dom.js", "assets/dom.js"),
    ("/assets/views.js", "assets/views.js"),
    ("/assets/drawer.js", "assets/drawer.js"),
    ("/assets/icon.svg", "assets/icon.svg"),
];

/// Whether `path` (normalised) is one of the page's [`PATHS`].
pub(crate) fn serves(path: &str) -> bool {
    PATHS.iter().any(|(at, _)| *at == path)
}

/// `route` with the page's paths added, each answer with the headers that keep the page to
/// this origin.
pub(crate) fn routes(route: Route) -> Route {
    PATHS.iter().fold(route, |route, (at, file)| {
        route.at(
            *at,
            poem::get(
                EmbeddedFileEndpoint::<Files>::new(file)
                    // Its 304 (the ETag matched) comes as an error: it is an answer.
                    .catch_all_error(|err| async move { err.into_response() })
                    .with(headers()),
            ),
        )
    })
}

/// The headers of every answer of the page.
fn headers() -> SetHeader {
    SetHeader::new()
        .overriding(
            CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        )
        .overriding(X_CONTENT_TYPE_OPTIONS, "nosniff")
        .overriding(X_FRAME_OPTIONS, "DENY")
        .overriding(REFERRER_POLICY, "no-referrer")
        // Revalidated on every load (the ETag makes that a 304), so a new release's page
        // is never mixed with an old one's cached modules.
        .overriding(CACHE_CONTROL, "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_and_every_path_has_its_file() {
        for (at, file) in PATHS {
            assert!(
                Files::get(file).is_some(),
                "{at} serves {file}, which is missing"
            );
        }
        for file in Files::iter() {
            assert!(
                PATHS.iter().any(|(_, served)| *served == file),
                "page/{file} is embedded but served at no path: add it to PATHS"
            );
        }
    }
}
