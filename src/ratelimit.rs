//! Per-client rate limits for the paths where a request costs real work (GCRA, `governor`).
//!
//! A client is its IP address; IPv6 clients are counted by their /64 prefix, since one
//! subscriber usually holds a whole /64 and could otherwise rotate through it. The state of
//! one client is a few dozen bytes, and clients whose allowance is full again are forgotten
//! (by [`ClientLimiter::forget_idle`], and at once whenever more than `max_clients` are
//! tracked), so memory stays bounded however many addresses send requests.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Limits of one kind of expensive request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientQuota {
    /// Sustained requests per minute and client; 0 turns the limit off.
    pub per_minute: u32,
    /// Requests a client may make at once before the sustained rate applies.
    pub burst: u32,
    /// Clients tracked at most before idle ones are forgotten.
    pub max_clients: usize,
}

/// The key a client is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(u128);

impl ClientKey {
    /// IPv4 address as is; IPv4-mapped IPv6 as its IPv4 address; other IPv6 by /64 prefix.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self((u128::from(v6) >> 64) << 64 | 1 << 32),
            },
        }
    }
}

type Keyed<C> =
    RateLimiter<ClientKey, DashMapStateStore<ClientKey>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A keyed limiter over any clock (tests move a fake one).
pub struct ClientLimiter<C: Clock = DefaultClock> {
    limiter: Option<Keyed<C>>,
    clock: C,
    max_clients: usize,
}

impl ClientLimiter<DefaultClock> {
    /// A limiter on the real clock.
    pub fn new(quota: ClientQuota) -> Self {
        Self::with_clock(quota, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ClientLimiter<C> {
    /// A limiter on `clock`.
    pub fn with_clock(quota: ClientQuota, clock: C) -> Self {
        let limiter = NonZeroU32::new(quota.per_minute).map(|per_minute| {
            let burst = NonZeroU32::new(quota.burst).unwrap_or(per_minute);
            RateLimiter::dashmap_with_clock(
                Quota::per_minute(per_minute).allow_burst(burst),
                clock.clone(),
            )
        });
        Self {
            limiter,
            clock,
            max_clients: quota.max_clients.max(1),
        }
    }

    /// Count one request of `client`: `Ok`, or how long until it may ask again.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() >= self.max_clients {
            limiter.retain_recent();
        }
        limiter
            .check_key(&ClientKey::of(client))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forget clients whose allowance is full again (the periodic cleanup calls it).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Clients tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, RateLimiter::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(
        per_minute: u32,
        burst: u32,
    ) -> (ClientLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let quota = ClientQuota {
            per_minute,
            burst,
            max_clients: 1000,
        };
        (ClientLimiter::with_clock(quota, clock.clone()), clock)
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_sustained_rate() {
        let (limiter, clock) = limiter(60, 3);
        let client: IpAddr = "203.0.113.7".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.check(client).is_ok());
        }
        let wait = limiter.check(client).expect_err("limited after the burst");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        clock.advance(Duration::from_secs(1));
        assert!(limiter.check(client).is_ok());
        // Another client is not affected.
        assert!(limiter.check("198.51.100.1".parse().expect("ip")).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            ClientKey::of("2001:db8:1:2::1".parse().expect("ip")),
            ClientKey::of("2001:db8:1:2:ffff::9".parse().expect("ip"))
        );
        assert_ne!(
            ClientKey::of("2001:db8:1:2::1".parse().expect("ip")),
            ClientKey::of("2001:db8:1:3::1".parse().expect("ip"))
        );
        assert_eq!(
            ClientKey::of("::ffff:192.0.2.1".parse().expect("ip")),
            ClientKey::of("192.0.2.1".parse().expect("ip"))
        );
        assert_ne!(
            ClientKey::of("::c000:201".parse().expect("ip")),
            ClientKey::of("192.0.2.1".parse().expect("ip"))
        );
    }

    #[test]
    fn idle_clients_are_forgotten_so_memory_stays_bounded() {
        let (limiter, clock) = limiter(60, 1);
        for i in 0..500u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limiter.check(ip).is_ok());
        }
        assert_eq!(limiter.tracked(), 500);
        clock.advance(Duration::from_secs(2));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let (limiter, _) = limiter(0, 0);
        for _ in 0..100 {
            assert!(limiter.check("192.0.2.1".parse().expect("ip")).is_ok());
        }
        assert_eq!(limiter.tracked(), 0);
    }
}
