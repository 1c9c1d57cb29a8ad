//! Webhook rules: which addresses an endpoint may not have, and the retry schedule
//! (Standard Webhooks' by default; jitter only ever delays; `Retry-After` only ever
//! delays; 2xx succeeds, 410 and a spent schedule fail for good).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use chrono::{TimeZone, Utc};
use crm_core::{Attempt, DeliveryState, RetrySchedule, UrlRefused, WebhookUrl, is_internal};
use proptest::prelude::*;

#[test]
fn internal_addresses_and_names_are_refused_unless_allowed() {
    for url in [
        "http://127.0.0.1/",
        "http://127.8.9.10:8080/x",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
        "http://api.localhost./",
    ] {
        assert!(
            matches!(WebhookUrl::parse(url, false), Err(UrlRefused::Private(_))),
            "{url}"
        );
        assert!(WebhookUrl::parse(url, true).is_ok(), "{url} when allowed");
    }
    for url in [
        "https://example.com/hook",
        "http://93.184.216.34/",
        "https://[2606:4700::1111]/",
    ] {
        assert!(WebhookUrl::parse(url, false).is_ok(), "{url}");
    }
    assert_eq!(
        WebhookUrl::parse("ftp://example.com/", true),
        Err(UrlRefused::Scheme)
    );
    assert!(matches!(
        WebhookUrl::parse("example.com/hook", true),
        Err(UrlRefused::Invalid(_))
    ));
    let long = format!("https://example.com/{}", "a".repeat(WebhookUrl::MAX_CHARS));
    assert!(matches!(
        WebhookUrl::parse(&long, true),
        Err(UrlRefused::Invalid(_))
    ));
}

proptest! {
    /// An IPv4 address mapped into IPv6 is judged as the IPv4 address.
    #[test]
    fn a_mapped_address_is_judged_as_itself(octets in any::<[u8; 4]>()) {
        let v4 = Ipv4Addr::from(octets);
        prop_assert_eq!(
            is_internal(IpAddr::V4(v4)),
            is_internal(IpAddr::V6(v4.to_ipv6_mapped()))
        );
    }

    /// Every address of 10/8, 127/8, 172.16/12 and 192.168/16 is internal.
    #[test]
    fn private_ranges_are_internal(rest in any::<[u8; 3]>(), second in 16u8..32) {
        let [b, c, d] = rest;
        for ip in [
            Ipv4Addr::new(10, b, c, d),
            Ipv4Addr::new(127, b, c, d),
            Ipv4Addr::new(172, second, c, d),
            Ipv4Addr::new(192, 168, c, d),
        ] {
            prop_assert!(is_internal(IpAddr::V4(ip)), "{ip}");
        }
    }

    /// After attempt `n` fails, the next is due the schedule's `n`-th delay later, spread
    /// by up to a fifth; a longer `Retry-After` replaces it; past the schedule, it fails.
    #[test]
    fn a_failure_is_retried_on_the_schedule(
        n in 1u32..12,
        jitter in 0.0f64..1.0,
        retry_after in proptest::option::of(0u64..200_000),
    ) {
        let schedule = RetrySchedule::default();
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).single().expect("a time");
        let failed = Attempt::Failed {
            status: Some(500),
            error: "answered 500".into(),
            retry_after: retry_after.map(Duration::from_secs),
        };
        let (state, next) = schedule.after(n, &failed, now, jitter);
        match schedule.delays().get(n as usize - 1) {
            None => {
                prop_assert_eq!(state, DeliveryState::Failed);
                prop_assert_eq!(next, None);
            }
            Some(&delay) => {
                prop_assert_eq!(state, DeliveryState::Pending);
                let wait = (next.expect("due again") - now).to_std().expect("later");
                let asked = retry_after.map_or(Duration::ZERO, Duration::from_secs);
                let spread = delay.mul_f64(1.2);
                prop_assert!(wait >= delay.max(asked), "{wait:?} < {delay:?}");
                prop_assert!(wait <= spread.max(asked) + Duration::from_millis(1));
            }
        }
        let (state, next) = schedule.after(n, &Attempt::answered(204, None), now, jitter);
        prop_assert_eq!((state, next), (DeliveryState::Succeeded, None));
        let (state, next) = schedule.after(n, &Attempt::answered(410, None), now, jitter);
        prop_assert_eq!((state, next), (DeliveryState::Failed, None));
    }
}

#[test]
fn the_default_schedule_is_the_specifications() {
    let secs: Vec<u64> = RetrySchedule::default()
        .delays()
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(
        secs,
        [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    );
    assert_eq!(
        RetrySchedule::parse("0,5,300"),
        RetrySchedule::parse("5, 300")
    );
    assert!(RetrySchedule::parse("0").is_err());
    assert!(RetrySchedule::parse("5,soon").is_err());
    assert!(RetrySchedule::parse("").is_err());
}
