//! What the proxy did with a request, and why: one [`Decision`] per
//! response. It alone sets the `X-Cache` header, the request's log line and
//! the counters in `proxy::stats`, so the three can never disagree.

use http::HeaderValue;

/// How the request was answered: the `X-Cache` header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache (or from a coalesced fetch it waited for).
    Hit,
    /// Fetched from the upstream for this request; [`Decision::reason`]
    /// says why it was not stored, when it was not.
    Miss,
    /// Not eligible for the cache (method, credentials, session, range).
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
    Range,
    /// A `Host` not in `--host`: the key holds no host, so such a request
    /// never shares the site's pages.
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
}

impl Reason {
    pub const ALL: [Reason; 26] = [
        Reason::Method,
        Reason::Authorization,
        Reason::SessionCookie,
        Reason::Range,
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
    ];

    /// The label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Method => "method",
            Reason::Authorization => "authorization",
            Reason::SessionCookie => "session_cookie",
            Reason::Range => "range",
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
}

impl Decision {
    pub const fn new(status: CacheStatus) -> Decision {
        Decision {
            status,
            reason: None,
        }
    }

    pub const fn because(status: CacheStatus, reason: Reason) -> Decision {
        Decision {
            status,
            reason: Some(reason),
        }
    }

    /// A request that went upstream and was not stored, for `reason`.
    pub const fn uncached(reason: Reason) -> Decision {
        Decision::because(CacheStatus::Miss, reason)
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
}
