//! What the proxy did with a request, and why: one [`Decision`] per
//! response. It alone sets the `X-Cache` and `Cache-Status` (RFC 9211)
//! headers, the request's log line and the counters in `proxy::stats`, so
//! they can never disagree.

use http::{HeaderMap, HeaderName, HeaderValue};

/// How the request was answered: the `X-Cache` header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache (or from a coalesced fetch it waited for).
    Hit,
    /// Fetched from the upstream for this request; [`Decision::reason`]
    /// says why it was not stored, when it was not.
    Miss,
    /// Not eligible for the cache (method, credentials, session).
    Bypass,
    /// Stale copy served because the upstream failed (stale-if-error).
    Stale,
    /// Stale copy served while a background request refreshes it.
    Updating,
    /// Stale copy confirmed by the upstream with a 304, then served.
    Revalidated,
}

impl CacheStatus {
    pub const ALL: [CacheStatus; 6] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Bypass,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Revalidated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
        }
    }
}

/// Why a response did not come from, or go into, the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    // The request.
    /// A method other than GET and HEAD.
    Method,
    Authorization,
    SessionCookie,
    /// A `Host` not in `--host`: such a request never uses the cache (a
    /// forged host's page would carry its links).
    UnknownHost,
    // The response (see `proxy::policy`).
    /// Neither `X-Bigcache-TTL` nor shared-cache freshness.
    NoLifetime,
    SetCookie,
    Private,
    NoStore,
    VaryStar,
    /// A status stored only with `X-Bigcache-TTL`.
    Status,
    TooLarge,
    BadTtl,
    VaryTooLong,
    /// `Vary: Cookie` for a request with cookies: stored only with
    /// `--cache-vary-cookie`.
    VaryCookie,
    // The flow.
    /// The page was found uncacheable a moment ago; not coalesced.
    HitForPass,
    /// A waiter whose Vary headers select another variant than the fetch.
    VariantMismatch,
    /// Purged after the fetch it would have waited for began.
    Purged,
    /// The store failed; the page was served uncached.
    StoreError,
    /// The upstream failed and nothing stale could be served.
    UpstreamError,
    /// The fetch this request waited for was abandoned (its task died).
    LeaderGone,
    /// The page the request waited for was already stale when it arrived
    /// (it joined a fetch whose page was still being written).
    ExpiredInFlight,
    /// A `Cache-Control` or `Vary` bigcache cannot read: not stored, since
    /// a misread directive could share what must not be shared.
    Unparsable,
    /// A request bigcache refused (no `Host`, a target too long).
    BadRequest,
    /// A body the upstream ended by closing the connection: a crash mid-
    /// page looks the same, so it is never stored.
    CloseDelimited,
    /// The fetch this request waited for took longer than `flight_wait`.
    WaitTimedOut,
    /// `Surrogate-Key`/`xkey` tags over the limits: not stored, since a
    /// tag purge could not reach the page.
    Tags,
}

impl Reason {
    pub const ALL: [Reason; 26] = [
        Reason::Method,
        Reason::Authorization,
        Reason::SessionCookie,
        Reason::UnknownHost,
        Reason::NoLifetime,
        Reason::SetCookie,
        Reason::Private,
        Reason::NoStore,
        Reason::VaryStar,
        Reason::Status,
        Reason::TooLarge,
        Reason::BadTtl,
        Reason::VaryTooLong,
        Reason::VaryCookie,
        Reason::HitForPass,
        Reason::VariantMismatch,
        Reason::Purged,
        Reason::StoreError,
        Reason::UpstreamError,
        Reason::LeaderGone,
        Reason::ExpiredInFlight,
        Reason::Unparsable,
        Reason::BadRequest,
        Reason::CloseDelimited,
        Reason::WaitTimedOut,
        Reason::Tags,
    ];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Method => "method",
            Reason::Authorization => "authorization",
            Reason::SessionCookie => "session_cookie",
            Reason::UnknownHost => "unknown_host",
            Reason::NoLifetime => "no_lifetime",
            Reason::SetCookie => "set_cookie",
            Reason::Private => "private",
            Reason::NoStore => "no_store",
            Reason::VaryStar => "vary_star",
            Reason::Status => "status",
            Reason::TooLarge => "too_large",
            Reason::BadTtl => "bad_ttl",
            Reason::VaryTooLong => "vary_too_long",
            Reason::VaryCookie => "vary_cookie",
            Reason::HitForPass => "hit_for_pass",
            Reason::VariantMismatch => "variant_mismatch",
            Reason::Purged => "purged",
            Reason::StoreError => "store_error",
            Reason::UpstreamError => "upstream_error",
            Reason::LeaderGone => "leader_gone",
            Reason::ExpiredInFlight => "expired_in_flight",
            Reason::Unparsable => "unparsable_header",
            Reason::BadRequest => "bad_request",
            Reason::CloseDelimited => "close_delimited",
            Reason::WaitTimedOut => "wait_timed_out",
            Reason::Tags => "tags",
        }
    }
}

/// Named once: a name given as text is parsed on every response.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A plain hit's own `Cache-Status` member up to its seconds of
/// freshness left ([`Decision::cache_status`]).
pub const HIT_TTL_PREFIX: &[u8] = b"bigcache;hit;ttl=";

/// Puts `value` in bigcache's own `Cache-Status` member, the last one
/// (written by [`Decision::show`], or a template's slot); appends it if
/// there is none.
pub fn set_own_status(headers: &mut HeaderMap, value: HeaderValue) {
    match headers.entry(CACHE_STATUS) {
        http::header::Entry::Occupied(mut o) => {
            if let Some(own) = o.iter_mut().last() {
                *own = value;
            }
        }
        http::header::Entry::Vacant(v) => {
            v.insert(value);
        }
    }
}

/// One request's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub status: CacheStatus,
    /// Why the response was not served from the cache, or not stored in
    /// it; `None` for a hit, and for a miss that found the page absent and
    /// stored it.
    pub reason: Option<Reason>,
    /// Seconds of freshness the served entry had left (negative: stale).
    pub ttl: Option<i64>,
    /// Answered from a fetch another request made (coalesced).
    pub collapsed: bool,
    /// The response already carries this decision's `X-Cache` and
    /// `Cache-Status` (`answer::from_entry` writes them into the slots a
    /// stored page's headers keep for them).
    pub shown: bool,
    /// A miss whose write had not finished when its answer left: it does
    /// not say `stored`.
    pub unconfirmed: bool,
}

/// The cache's name in `Cache-Status`.
const NAME: &sfv::TokenRef = sfv::TokenRef::constant("bigcache");

impl Decision {
    pub const fn new(status: CacheStatus) -> Decision {
        Decision {
            status,
            reason: None,
            ttl: None,
            collapsed: false,
            shown: false,
            unconfirmed: false,
        }
    }

    pub const fn because(status: CacheStatus, reason: Reason) -> Decision {
        Decision {
            status,
            reason: Some(reason),
            ttl: None,
            collapsed: false,
            shown: false,
            unconfirmed: false,
        }
    }

    /// With the freshness left in an entry that is fresh until `fresh_until`
    /// (unix ms), at `now`.
    pub fn with_ttl(mut self, fresh_until: u64, now: u64) -> Decision {
        // In i64 whenever both fit (every real clock): a 128-bit division
        // costs a hit a hundred instructions.
        self.ttl = Some(match (i64::try_from(fresh_until), i64::try_from(now)) {
            (Ok(f), Ok(n)) => (f - n).div_euclid(1000),
            _ => {
                let ms = i128::from(fresh_until) - i128::from(now);
                i64::try_from(ms.div_euclid(1000)).unwrap_or(i64::MIN)
            }
        });
        self
    }

    pub fn collapsed(mut self) -> Decision {
        self.collapsed = true;
        self
    }

    /// A hit of its own (not collapsed, no reason) with the freshness it
    /// had left: its `Cache-Status` depends on nothing else.
    pub fn plain_hit_ttl(&self) -> Option<i64> {
        match (self.status, self.collapsed, self.reason, self.ttl) {
            (CacheStatus::Hit, false, None, Some(ttl)) => Some(ttl),
            _ => None,
        }
    }

    /// The `Cache-Status` entry (RFC 9211) for a response of `status`:
    /// `bigcache; hit; ttl=…` for a hit, `bigcache; fwd=uri-miss;
    /// fwd-status=200; stored` for a miss stored, `fwd=stale; fwd-status=
    /// 304` for a revalidation, `fwd=bypass` or `fwd=method` for requests
    /// the cache does not handle; `collapsed` for a request answered by
    /// another's fetch, `detail` naming the [`Reason`].
    pub fn cache_status(&self, status: u16) -> HeaderValue {
        use sfv::{Integer, KeyRef, StringRef, TokenRef};
        // The hit, on every cached page served: written directly (a token,
        // a boolean, an integer need no escaping), since the general
        // serializer cost 5% of a hit's instructions.
        if let Some(ttl) = self.plain_hit_ttl() {
            const HIT: &[u8] = HIT_TTL_PREFIX;
            let mut buf = [0u8; HIT.len() + 20];
            buf[..HIT.len()].copy_from_slice(HIT);
            let mut digits = [0u8; 20];
            let mut n = ttl.unsigned_abs();
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let mut len = HIT.len();
            if ttl < 0 {
                buf[len] = b'-';
                len += 1;
            }
            let d = &digits[at..];
            buf[len..len + d.len()].copy_from_slice(d);
            len += d.len();
            if let Ok(v) = HeaderValue::from_bytes(&buf[..len]) {
                return v;
            }
        }
        let key = KeyRef::constant;
        let mut ser = sfv::ItemSerializer::new().bare_item(NAME);
        let fwd = |t: &'static str| TokenRef::constant(t);
        ser = match self.status {
            CacheStatus::Hit if !self.collapsed => ser.parameter(key("hit"), true),
            CacheStatus::Updating => ser.parameter(key("hit"), true),
            // No response came from the upstream: there is no
            // `fwd-status` to give (the 502 or 504 is bigcache's own).
            CacheStatus::Hit | CacheStatus::Miss if self.reason == Some(Reason::UpstreamError) => {
                ser.parameter(key("fwd"), fwd("uri-miss"))
            }
            CacheStatus::Hit | CacheStatus::Miss => ser
                .parameter(key("fwd"), fwd("uri-miss"))
                .parameter(key("fwd-status"), Integer::constant(i64::from(status))),
            CacheStatus::Bypass if self.reason == Some(Reason::Method) => {
                ser.parameter(key("fwd"), fwd("method"))
            }
            CacheStatus::Bypass => ser.parameter(key("fwd"), fwd("bypass")),
            CacheStatus::Stale => ser.parameter(key("fwd"), fwd("stale")),
            CacheStatus::Revalidated => ser
                .parameter(key("fwd"), fwd("stale"))
                .parameter(key("fwd-status"), Integer::constant(304)),
        };
        if self.collapsed {
            ser = ser.parameter(key("collapsed"), true);
        }
        if self.status == CacheStatus::Miss && self.reason.is_none() && !self.unconfirmed {
            ser = ser.parameter(key("stored"), true);
        }
        if let Some(ttl) = self.ttl.and_then(|t| Integer::try_from(t).ok()) {
            ser = ser.parameter(key("ttl"), ttl);
        }
        let detail = match (self.status, self.reason) {
            (_, Some(r)) => Some(r.as_str()),
            (CacheStatus::Stale, None) => Some("stale-if-error"),
            (CacheStatus::Updating, None) => Some("stale-while-revalidate"),
            _ => None,
        };
        if let Some(d) = detail.and_then(|d| StringRef::from_str(d).ok()) {
            ser = ser.parameter(key("detail"), d);
        }
        HeaderValue::from_str(&ser.finish()).unwrap_or(HeaderValue::from_static("bigcache"))
    }

    /// A request that went upstream and was not stored, for `reason`.
    pub const fn uncached(reason: Reason) -> Decision {
        Decision::because(CacheStatus::Miss, reason)
    }

    /// Writes the decision into the headers of a response of `status`:
    /// `X-Cache` replaces any the upstream sent, `Cache-Status` is appended
    /// (caches closer to the origin listed theirs first).
    pub fn show(&self, headers: &mut HeaderMap, status: u16) {
        headers.insert(X_CACHE, self.header());
        headers.append(CACHE_STATUS, self.cache_status(status));
    }

    /// Writes the decision over what [`Decision::show`] (or
    /// `answer::from_entry`) wrote for an earlier one: `X-Cache` replaced,
    /// and bigcache's `Cache-Status` member, the last, replaced.
    pub fn show_again(&self, headers: &mut HeaderMap, status: u16) {
        headers.insert(X_CACHE, self.header());
        set_own_status(headers, self.cache_status(status));
    }

    /// The `X-Cache` header value.
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_static(self.status.as_str())
    }

    /// The reason's label, `-` when there is none.
    pub fn reason_str(&self) -> &'static str {
        self.reason.map_or("-", Reason::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_and_reason_has_a_distinct_label() {
        let mut labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
        for (i, s) in CacheStatus::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        let d = Decision::uncached(Reason::Private);
        assert_eq!(d.header(), "MISS");
        assert_eq!(d.reason_str(), "private");
        assert_eq!(Decision::new(CacheStatus::Hit).reason_str(), "-");
    }

    #[test]
    fn cache_status_is_a_valid_structured_field() {
        // The hit's hand-written form, against the serializer's.
        for ttl in [0i64, 7, 10, 3599, 2_419_200, -3, i64::MAX, i64::MIN + 1] {
            let d = Decision {
                ttl: Some(ttl),
                ..Decision::new(CacheStatus::Hit)
            };
            assert_eq!(d.cache_status(200), format!("bigcache;hit;ttl={ttl}"));
        }
        let hit = Decision::new(CacheStatus::Hit).with_ttl(61_500, 1_000);
        let stored = Decision::new(CacheStatus::Miss).with_ttl(60_000, 0);
        let passed = Decision::uncached(Reason::Private);
        let collapsed = Decision::new(CacheStatus::Hit)
            .with_ttl(10_000, 0)
            .collapsed();
        let stale = Decision::new(CacheStatus::Stale).with_ttl(0, 5_000);
        let revalidated = Decision::new(CacheStatus::Revalidated);
        let bypass = Decision::because(CacheStatus::Bypass, Reason::Method);
        for (d, status, want) in [
            (hit, 200, "bigcache;hit;ttl=60"),
            (
                stored,
                200,
                "bigcache;fwd=uri-miss;fwd-status=200;stored;ttl=60",
            ),
            (
                passed,
                404,
                r#"bigcache;fwd=uri-miss;fwd-status=404;detail="private""#,
            ),
            // Django down: the 502 is bigcache's, no upstream status.
            (
                Decision::uncached(Reason::UpstreamError),
                502,
                r#"bigcache;fwd=uri-miss;detail="upstream_error""#,
            ),
            (
                collapsed,
                200,
                "bigcache;fwd=uri-miss;fwd-status=200;collapsed;ttl=10",
            ),
            (
                stale,
                200,
                r#"bigcache;fwd=stale;ttl=-5;detail="stale-if-error""#,
            ),
            (revalidated, 200, "bigcache;fwd=stale;fwd-status=304"),
            (bypass, 200, r#"bigcache;fwd=method;detail="method""#),
        ] {
            let v = d.cache_status(status);
            assert_eq!(v, want);
            let parsed: Result<sfv::List, _> = sfv::Parser::new(v.to_str().unwrap()).parse();
            assert!(parsed.is_ok(), "{want}");
        }
    }
}
