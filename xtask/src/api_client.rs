//! A client of a running crm-api's HTTP API for xtask's tasks (`seed-demo`, `fuzz-api`):
//! JSON in and out, the admin token when one is set, problems as errors.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// A client of the server's HTTP API.
pub struct Api {
    agent: ureq::Agent,
    pub base: String,
    /// Sent as a bearer token when set and not empty.
    token: Option<String>,
}

impl Api {
    pub fn new(base: String, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let token = token.filter(|t| !t.is_empty());
        Self { agent, base, token }
    }

    /// Fails with a hint when nothing answers `/health`.
    pub fn check_reachable(&self) -> Result<()> {
        self.send("GET", "/health", None)
            .map(drop)
            .with_context(|| {
                format!(
                    "no healthy crm-api answers at {} (start one with `cargo xtask serve`, or \
                 pass --url)",
                    self.base
                )
            })
    }

    /// Sends a request and returns the JSON body of a 2xx answer (`null` when empty);
    /// any other status is an error naming the problem's `code` and `detail`.
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(body.to_string()),
            None => request.body(String::new()),
        }
        .context("cannot build the request")?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("{method} {path} failed"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{method} {path}: cannot read the answer"))?;
        let json: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            bail!(
                "{method} {path} answered {status}: {} {}",
                json["code"].as_str().unwrap_or("?"),
                json["detail"].as_str().unwrap_or_default()
            );
        }
        Ok(json)
    }
}
