//! The signature against the specification's example and the reference library's vector,
//! two live secrets, `Retry-After`.

use super::*;

/// The specification's example (standard-webhooks, `spec/standard-webhooks.md`, and
/// the reference libraries' tests): our header for one secret is exactly theirs.
#[test]
fn signs_as_the_specification_does() {
    let secrets = WebhookSecrets {
        current: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        previous: None,
    };
    let body = br#"{"test": 2432232314}"#;
    assert_eq!(
        signature(
            &secrets,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            body
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

/// The `standardwebhooks` crate's own vector.
#[test]
fn signs_as_the_reference_library_does() {
    let secrets = WebhookSecrets {
        current: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into(),
        previous: None,
    };
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    assert_eq!(
        signature(
            &secrets,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            body
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
}

#[test]
fn two_live_secrets_sign_twice_and_either_verifies() {
    let secrets = WebhookSecrets {
        current: new_secret(),
        previous: Some(new_secret()),
    };
    let now = Utc::now().timestamp();
    let header = signature(&secrets, "evt_1", now, b"{}");
    assert_eq!(header.split(' ').count(), 2);
    for secret in [&secrets.current, secrets.previous.as_ref().expect("two")] {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().expect("header"));
        headers.insert(
            "webhook-timestamp",
            now.to_string().parse().expect("header"),
        );
        headers.insert("webhook-signature", header.parse().expect("header"));
        standardwebhooks::Webhook::new(secret)
            .expect("a secret")
            .verify(b"{}", &headers)
            .expect("verifies");
    }
}

#[test]
fn retry_after_takes_seconds_or_a_date() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("retry-after", "120".parse().expect("header"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
    headers.insert("retry-after", "999999999".parse().expect("header"));
    assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    let later = (Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
    headers.insert("retry-after", later.parse().expect("header"));
    let wait = retry_after(&headers).expect("a date");
    assert!(wait <= Duration::from_secs(90) && wait >= Duration::from_secs(85));
}
