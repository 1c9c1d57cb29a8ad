//! A webhook receiver for the tests: verifies each delivery with the Standard Webhooks
//! reference verifier (the `standardwebhooks` crate) and fails the first attempts of each
//! event as asked.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use poem::{Request, Response, http::StatusCode as PoemStatus};

/// What the receiver saw.
#[derive(Default)]
pub struct Seen {
    /// Attempts per `webhook-id`.
    pub attempts: HashMap<String, u32>,
    /// The body accepted for each `webhook-id` (the first accepted one).
    pub accepted: BTreeMap<String, String>,
    /// Deliveries whose signature did not verify, with why.
    pub unverified: Vec<String>,
    /// How many signatures each delivery carried.
    pub signatures: Vec<usize>,
}

/// A receiver on a free port: verifies with `secrets` (any may match), answers `fail`
/// to each event's first `failures` attempts and 204 after.
pub struct Receiver {
    pub url: String,
    pub seen: Arc<Mutex<Seen>>,
    pub secrets: Arc<Mutex<Vec<String>>>,
}

pub async fn receiver(failures: u32, fail: u16) -> Receiver {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let secrets: Arc<Mutex<Vec<String>>> = Arc::default();
    let endpoint = {
        let (seen, secrets) = (Arc::clone(&seen), Arc::clone(&secrets));
        poem::endpoint::make(move |req: Request| {
            let (seen, secrets) = (Arc::clone(&seen), Arc::clone(&secrets));
            async move {
                let headers = req.headers().clone();
                let body = req.into_body().into_vec().await.unwrap_or_default();
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let keys = secrets.lock().expect("lock").clone();
                let verified = keys.iter().any(|secret| {
                    standardwebhooks::Webhook::new(secret)
                        .and_then(|key| key.verify(&body, &headers))
                        .is_ok()
                });
                let mut seen = seen.lock().expect("lock");
                let count = headers
                    .get("webhook-signature")
                    .and_then(|v| v.to_str().ok())
                    .map_or(0, |v| v.split(' ').count());
                seen.signatures.push(count);
                if !verified {
                    seen.unverified.push(id);
                    return Response::builder().status(PoemStatus::BAD_REQUEST).finish();
                }
                let attempts = seen.attempts.entry(id.clone()).or_default();
                *attempts += 1;
                if *attempts <= failures {
                    let status = PoemStatus::from_u16(fail).expect("a status");
                    return Response::builder().status(status).finish();
                }
                let text = String::from_utf8_lossy(&body).into_owned();
                seen.accepted.entry(id).or_insert(text);
                Response::builder().status(PoemStatus::NO_CONTENT).finish()
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(crm_api::server::serve(
        listener,
        endpoint,
        crm_api::server::Limits::DEFAULT,
        std::future::pending(),
        Duration::ZERO,
    ));
    Receiver {
        url: format!("http://{addr}/hook"),
        seen,
        secrets,
    }
}

/// Waits (at most 20 s) until `done` holds for what the receiver saw.
pub async fn wait_for(seen: &Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    for _ in 0..400 {
        if done(&seen.lock().expect("lock")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waited 20 s for {what}");
}
