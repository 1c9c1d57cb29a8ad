//! Test harness: the real app, served by the binary's server loop, on port 0 over a fresh temporary database (SQLite, or
//! PostgreSQL under `cargo xtask test`), and a client with one method per endpoint.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod browser;
pub mod receiver;

use std::sync::Arc;

use crm_store::{
    DbStore, StoreConfig,
    testing::{Backend, TestDatabase},
};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

/// A running app and a client for it. The database lives as long as this value.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The store the app runs on, for checking state directly.
    pub store: Arc<DbStore>,
    pub client: reqwest::Client,
    db: Arc<TestDatabase>,
}

/// A fresh store on a temporary SQLite file, exactly as the server opens one.
pub async fn test_store(backend: Backend) -> (Arc<DbStore>, TestDatabase) {
    let db = TestDatabase::create(backend).await;
    let config = StoreConfig {
        database_url: db.database_url(),
        ..StoreConfig::default()
    };
    let store = crm_store::connect(&config).await.expect("test store opens");
    (Arc::new(store), db)
}

/// Starts [`crm_api::app`] on 127.0.0.1 with an OS-chosen port, in a background task.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite).await
}

/// Starts [`crm_api::app`] on a fresh database of `backend`.
pub async fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_app_with(backend, crm_api::Security::default()).await
}

/// Starts [`crm_api::app_with`] `security` on a fresh database of `backend`.
pub async fn spawn_app_with(backend: Backend, security: crm_api::Security) -> TestApp {
    let (store, db) = test_store(backend).await;
    serve(
        store,
        Arc::new(db),
        security,
        crm_api::EventSettings::default(),
    )
    .await
}

/// Starts [`crm_api::app_with`] with admin token `token` on a fresh database of `backend`.
pub async fn spawn_app_secured(backend: Backend, token: &str) -> TestApp {
    let security = crm_api::Security {
        admin_token: Some(token.to_owned()),
    };
    spawn_app_with(backend, security).await
}

/// Starts [`crm_api::app_with_events`] on a fresh database of `backend`, streaming and
/// sending webhooks by `events`.
pub async fn spawn_app_with_events(backend: Backend, events: crm_api::EventSettings) -> TestApp {
    let (store, db) = test_store(backend).await;
    serve(store, Arc::new(db), crm_api::Security::default(), events).await
}

/// Starts [`crm_api::app_with_events`] with `security` on a fresh database of `backend`.
pub async fn spawn_app_secured_with_events(
    backend: Backend,
    security: crm_api::Security,
    events: crm_api::EventSettings,
) -> TestApp {
    let (store, db) = test_store(backend).await;
    serve(store, Arc::new(db), security, events).await
}

/// Starts [`crm_api::app`] over `store`, a second replica on the database of `of`.
pub async fn spawn_replica(of: &TestApp) -> TestApp {
    spawn_replica_with(of, crm_api::EventSettings::default()).await
}

/// [`spawn_replica`], streaming and sending webhooks by `events`.
pub async fn spawn_replica_with(of: &TestApp, events: crm_api::EventSettings) -> TestApp {
    let config = StoreConfig {
        database_url: of.db.database_url(),
        ..StoreConfig::default()
    };
    let store = crm_store::connect(&config)
        .await
        .expect("second replica opens");
    serve(
        Arc::new(store),
        Arc::clone(&of.db),
        crm_api::Security::default(),
        events,
    )
    .await
}

async fn serve(
    store: Arc<DbStore>,
    db: Arc<TestDatabase>,
    security: crm_api::Security,
    events: crm_api::EventSettings,
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("a TCP address");
    let app = crm_api::app_with_events(
        Arc::clone(&store),
        security,
        crm_api::QueueSettings::default(),
        events,
    );
    // The binary's server loop with its default limits, never told to stop.
    tokio::spawn(crm_api::server::serve(
        listener,
        app,
        crm_api::server::Limits::DEFAULT,
        std::future::pending(),
        std::time::Duration::ZERO,
    ));
    TestApp {
        address: format!("http://{addr}"),
        store,
        client: reqwest::Client::new(),
        db,
    }
}

impl TestApp {
    /// The database file, on SQLite.
    #[allow(dead_code)] // Not every test binary looks at the file.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match self.db.database_url() {
            crm_store::DatabaseUrl::Sqlite(url) => Some(url.path().to_owned()),
            crm_store::DatabaseUrl::Postgres(_) => None,
        }
    }

    /// Every table's number of rows ([`TestDatabase::row_counts`]).
    pub async fn row_counts(&self) -> std::collections::BTreeMap<String, i64> {
        self.db.row_counts().await
    }

    /// Any request with a JSON body.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request is answered")
    }

    /// Any request with raw bytes and an optional Content-Type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.address))
            .body(body);
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        req.send().await.expect("request is answered")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None).await
    }

    pub async fn health(&self) -> Response {
        self.get("/health").await
    }

    pub async fn create_operator(&self, body: &Value) -> Response {
        self.send(Method::POST, "/api/operators", Some(body)).await
    }

    pub async fn list_operators(&self, query: &str) -> Response {
        self.get(&format!("/api/operators{query}")).await
    }

    pub async fn get_operator(&self, id: i64) -> Response {
        self.get(&format!("/api/operators/{id}")).await
    }

    pub async fn update_operator(&self, id: i64, body: &Value) -> Response {
        let path = format!("/api/operators/{id}");
        self.send(Method::PATCH, &path, Some(body)).await
    }

    pub async fn delete_operator(&self, id: i64) -> Response {
        let path = format!("/api/operators/{id}");
        self.send(Method::DELETE, &path, None).await
    }

    pub async fn create_source(&self, body: &Value) -> Response {
        self.send(Method::POST, "/api/sources", Some(body)).await
    }

    pub async fn list_sources(&self) -> Response {
        self.get("/api/sources").await
    }

    pub async fn get_source(&self, id: i64) -> Response {
        self.get(&format!("/api/sources/{id}")).await
    }

    pub async fn update_source(&self, id: i64, body: &Value) -> Response {
        let path = format!("/api/sources/{id}");
        self.send(Method::PATCH, &path, Some(body)).await
    }

    pub async fn delete_source(&self, id: i64) -> Response {
        let path = format!("/api/sources/{id}");
        self.send(Method::DELETE, &path, None).await
    }

    pub async fn put_weights(&self, source_id: i64, body: &Value) -> Response {
        let path = format!("/api/sources/{source_id}/operators");
        self.send(Method::PUT, &path, Some(body)).await
    }

    pub async fn list_leads(&self, query: &str) -> Response {
        self.get(&format!("/api/leads{query}")).await
    }

    pub async fn get_lead(&self, id: i64) -> Response {
        self.get(&format!("/api/leads/{id}")).await
    }

    pub async fn create_contact(&self, body: &Value) -> Response {
        self.send(Method::POST, "/api/contacts", Some(body)).await
    }

    pub async fn list_contacts(&self, query: &str) -> Response {
        self.get(&format!("/api/contacts{query}")).await
    }

    pub async fn get_contact(&self, id: i64) -> Response {
        self.get(&format!("/api/contacts/{id}")).await
    }

    pub async fn close_contact(&self, id: i64) -> Response {
        let path = format!("/api/contacts/{id}/close");
        self.send(Method::POST, &path, None).await
    }

    pub async fn unassign_contact(&self, id: i64) -> Response {
        self.send(Method::POST, &format!("/api/contacts/{id}/unassign"), None)
            .await
    }

    pub async fn assign_contact(&self, id: i64, body: &Value) -> Response {
        let path = format!("/api/contacts/{id}/assign");
        self.send(Method::POST, &path, Some(body)).await
    }

    pub async fn operator_stats(&self) -> Response {
        self.get("/api/stats/operators").await
    }

    /// Creates an operator and returns its id.
    pub async fn operator(&self, name: &str, max_active_contacts: i64) -> i64 {
        let body = serde_json::json!({"name": name, "max_active_contacts": max_active_contacts});
        id_of(json(self.create_operator(&body).await, StatusCode::CREATED).await)
    }

    /// Creates a source with the given `(operator_id, weight)` pairs and returns its id.
    pub async fn source(&self, code: &str, weights: &[(i64, i64)]) -> i64 {
        let body = serde_json::json!({"name": code, "code": code});
        let id = id_of(json(self.create_source(&body).await, StatusCode::CREATED).await);
        let operators: Vec<Value> = weights
            .iter()
            .map(|(operator_id, weight)| serde_json::json!({"operator_id": operator_id, "weight": weight}))
            .collect();
        let body = serde_json::json!({ "operators": operators });
        json(self.put_weights(id, &body).await, StatusCode::OK).await;
        id
    }

    /// Registers a contact from `external_lead_id` through the source `code`.
    pub async fn contact(&self, external_lead_id: &str, code: &str) -> Value {
        let body = serde_json::json!({"external_lead_id": external_lead_id, "source_code": code});
        json(self.create_contact(&body).await, StatusCode::CREATED).await
    }
}

/// Asserts the status and a JSON body, and returns the body.
pub async fn json(resp: Response, status: StatusCode) -> Value {
    let actual = resp.status();
    let text = resp.text().await.expect("body is readable");
    assert_eq!(actual, status, "body: {text}");
    serde_json::from_str(&text).expect("body is JSON")
}

/// Asserts a problem response: status, `application/problem+json`, `code`, and the members
/// every problem has. Returns the body.
pub async fn problem(resp: Response, status: StatusCode, code: &str) -> Value {
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json(resp, status).await;
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["type"], format!("/problems/{code}"), "{body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The fields a 422 names, in order.
pub fn fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

/// The `id` of an entity.
pub fn id_of(entity: Value) -> i64 {
    entity["id"].as_i64().expect("entity has an integer id")
}
