//! Webhook endpoints: which URLs may receive events, what they subscribe to, and the
//! retry rule of a delivery (Standard Webhooks' schedule, with jitter, `Retry-After`
//! and `410 Gone`). Pure: the time and the jitter are inputs.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::{DeliveryId, EventType, WebhookId};

/// A URL events may be sent to: `http` or `https`, with a host, and not an address in a
/// loopback, private, link-local or otherwise internal range unless the deployment allows
/// those (`CRM_WEBHOOK_ALLOW_PRIVATE`), so the service cannot be made to call into its
/// own network. A name is checked again, address by address, when it is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// Not a URL.
    #[error("not a URL: {0}")]
    Invalid(String),
    /// Another scheme than http and https.
    #[error("only http and https URLs are allowed")]
    Scheme,
    /// An address in a range the service does not call.
    #[error("{0} is a loopback, private or internal address")]
    Private(String),
}

impl WebhookUrl {
    /// The most characters a URL may have.
    pub const MAX_CHARS: usize = 2048;

    /// Checks `raw`.
    ///
    /// # Errors
    /// [`UrlRefused`] when it is no http(s) URL with a host, or names an internal address
    /// while `allow_private` is off.
    pub fn parse(raw: &str, allow_private: bool) -> Result<Self, UrlRefused> {
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(UrlRefused::Invalid(format!(
                "longer than {} characters",
                Self::MAX_CHARS
            )));
        }
        let url = url::Url::parse(raw).map_err(|err| UrlRefused::Invalid(err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRefused::Scheme);
        }
        let internal = match url.host() {
            None => return Err(UrlRefused::Invalid("no host".into())),
            Some(url::Host::Ipv4(ip)) => is_internal(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_internal(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        if internal && !allow_private {
            let host = url.host_str().unwrap_or_default().to_owned();
            return Err(UrlRefused::Private(host));
        }
        Ok(Self(url.to_string()))
    }

    /// A URL as stored, read back (it was checked when stored).
    #[must_use]
    pub fn stored(url: String) -> Self {
        Self(url)
    }

    /// The URL.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `ip` is in a range a webhook may not reach: loopback, private (RFC 1918, unique
/// local), link-local, shared (RFC 6598), unspecified, broadcast, documentation,
/// benchmarking, multicast, an IPv4 address mapped into IPv6 that is any of those, or an
/// IPv6 address that carries an IPv4 one for a gateway (NAT64, 6to4).
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => internal_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(ip),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && second == 0x0db8)
        // NAT64 (64:ff9b::/96, 64:ff9b:1::/48) and 6to4 (2002::/16) carry an IPv4
        // address a gateway would reach: judged as internal, whatever it is.
        || (first == 0x0064 && second == 0xff9b)
        || first == 0x2002
}

/// An endpoint as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Identifier.
    pub id: WebhookId,
    /// Where events are sent.
    pub url: WebhookUrl,
    /// The types it receives; `None`: every type.
    pub event_types: Option<BTreeSet<EventType>>,
    /// Whether events are sent to it.
    pub enabled: bool,
    /// Why the service switched it off (`gone`: it answered 410), if it did.
    pub disabled_reason: Option<String>,
    /// Until when the secret before the last rotation still signs deliveries.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A new endpoint, with its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    /// Where.
    pub url: WebhookUrl,
    /// Which types; `None`: every type.
    pub event_types: Option<BTreeSet<EventType>>,
    /// Whether to send.
    pub enabled: bool,
    /// `whsec_` and the key, base64.
    pub secret: String,
}

/// A change of an endpoint: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookPatch {
    /// A new URL.
    pub url: Option<WebhookUrl>,
    /// New types: `Some(None)` is every type.
    #[allow(clippy::option_option)]
    pub event_types: Option<Option<BTreeSet<EventType>>>,
    /// Switch it on or off (on also clears a `disabled_reason`).
    pub enabled: Option<bool>,
}

/// The secrets that sign an endpoint's deliveries now: the current one, and the one
/// before while it is still valid after a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSecrets {
    /// The current secret.
    pub current: String,
    /// The previous one, while it is still valid.
    pub previous: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Due again at its `next_attempt_at`.
    Pending,
    /// Answered 2xx.
    Succeeded,
    /// Given up: the schedule ran out, or the endpoint is gone (410).
    Failed,
}

impl DeliveryState {
    /// The name on the wire and in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// The state named `s`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Identifier.
    pub id: DeliveryId,
    /// The endpoint.
    pub webhook_id: WebhookId,
    /// The event (`evt_<seq>` is its `webhook-id`).
    pub event_seq: u64,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// When it is due again (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was last attempted.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last answer's status, if one came.
    pub last_status: Option<u16>,
    /// What went wrong last, if anything.
    pub last_error: Option<String>,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Any other answer, or none.
    Failed {
        /// The status, if an answer came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// The answer's `Retry-After`, if it had one.
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    /// An answer with `status` (and its `Retry-After`).
    #[must_use]
    pub fn answered(status: u16, retry_after: Option<Duration>) -> Self {
        if (200..300).contains(&status) {
            Self::Delivered { status }
        } else {
            Self::Failed {
                status: Some(status),
                error: format!("answered {status}"),
                retry_after,
            }
        }
    }

    /// Whether the endpoint said it is gone for good (410): it is switched off.
    #[must_use]
    pub fn gone(&self) -> bool {
        matches!(
            self,
            Self::Failed {
                status: Some(410),
                ..
            }
        )
    }
}

/// The delays between attempts: the first attempt is immediate, then one retry after each
/// delay. Standard Webhooks' schedule by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    /// Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h later.
    fn default() -> Self {
        let s = Duration::from_secs;
        Self(vec![
            s(5),
            s(5 * 60),
            s(30 * 60),
            s(2 * 3600),
            s(5 * 3600),
            s(10 * 3600),
            s(14 * 3600),
            s(20 * 3600),
            s(24 * 3600),
        ])
    }
}

impl RetrySchedule {
    /// The delays given, in seconds, comma-separated (`CRM_WEBHOOK_RETRY_SCHEDULE`): `0`
    /// is the immediate first attempt and may be left out, as in the specification's
    /// table (`0,5,300,…` and `5,300,…` are one schedule).
    ///
    /// # Errors
    /// A message when an entry is no whole number of seconds, or the list is empty.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut delays = list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| format!("`{}` is not a whole number of seconds", s.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.first() == Some(&Duration::ZERO) {
            delays.remove(0);
        }
        if delays.is_empty() {
            return Err("the schedule needs at least one retry".into());
        }
        Ok(Self(delays))
    }

    /// The delays after the first attempt.
    #[must_use]
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// After `attempts` attempts of which the last went as `attempt`, at `now`: the state
    /// and, when pending, the moment of the next attempt. The schedule's delay is spread
    /// by `jitter` (0..1: up to a fifth more), so endpoints that failed together are not
    /// retried together; a `Retry-After` longer than that delay is honoured instead.
    #[must_use]
    pub fn after(
        &self,
        attempts: u32,
        attempt: &Attempt,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> (DeliveryState, Option<DateTime<Utc>>) {
        let Attempt::Failed { retry_after, .. } = attempt else {
            return (DeliveryState::Succeeded, None);
        };
        if attempt.gone() {
            return (DeliveryState::Failed, None);
        }
        let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        let Some(delay) = self.0.get(index) else {
            return (DeliveryState::Failed, None);
        };
        let spread = delay.mul_f64(1.0 + jitter.clamp(0.0, 1.0) / 5.0);
        let wait = retry_after.map_or(spread, |asked| asked.max(spread));
        let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        (DeliveryState::Pending, now.checked_add_signed(wait))
    }
}

/// Whether an endpoint subscribed to `types` (`None`: all) receives an event of `kind`.
#[must_use]
pub fn subscribed(types: Option<&BTreeSet<EventType>>, kind: EventType) -> bool {
    types.is_none_or(|types| types.contains(&kind))
}

/// An endpoint leased to one process to send its new events: where it stands and how to
/// reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookLease {
    /// The endpoint.
    pub webhook_id: WebhookId,
    /// Events up to this one were attempted.
    pub cursor: u64,
    /// The types it receives; `None`: every type.
    pub event_types: Option<BTreeSet<EventType>>,
    /// Where.
    pub url: WebhookUrl,
    /// What signs.
    pub secrets: WebhookSecrets,
}

/// A delivery that is due, claimed by one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The delivery.
    pub id: DeliveryId,
    /// The endpoint.
    pub webhook_id: WebhookId,
    /// The event.
    pub event_seq: u64,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// Where.
    pub url: WebhookUrl,
    /// What signs.
    pub secrets: WebhookSecrets,
}

/// The outcome of an attempt, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    /// The event.
    pub event_seq: u64,
    /// Where the delivery stands now.
    pub state: DeliveryState,
    /// When it is due again (pending).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// When it was made.
    pub at: DateTime<Utc>,
}

/// How far an endpoint that is on is behind, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookBacklog {
    /// The endpoint.
    pub webhook_id: WebhookId,
    /// Its deliveries due again (failed, waiting for a retry).
    pub pending: i64,
    /// Events committed after its cursor: not attempted yet.
    pub behind: i64,
}
