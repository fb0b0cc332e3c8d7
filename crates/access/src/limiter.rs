//! Slows down guessing: an address that fails authentication too often in a window is refused
//! (429) until the window ends, before its attempt costs a catalog lookup. IPv6 addresses
//! count by /64, the block one host usually has.

use std::collections::HashMap;
use std::net::IpAddr;

/// Failed attempts per address, in fixed windows; bounded in the addresses it tracks.
pub struct FailureLimiter {
    max_failures: u32,
    window_ms: u64,
    max_addresses: usize,
    seen: HashMap<IpAddr, Window>,
}

#[derive(Clone, Copy)]
struct Window {
    start_ms: u64,
    failures: u32,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window_ms: u64, max_addresses: usize) -> Self {
        Self {
            max_failures,
            window_ms,
            max_addresses,
            seen: HashMap::new(),
        }
    }

    /// `Err(ms)`: `addr` failed too often and may try again in `ms`.
    pub fn check(&self, addr: IpAddr, now_ms: u64) -> Result<(), u64> {
        match self.seen.get(&block(addr)) {
            Some(w) if w.failures >= self.max_failures => {
                let ends = w.start_ms.saturating_add(self.window_ms);
                if now_ms < ends {
                    Err(ends - now_ms)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed attempt from `addr`.
    pub fn failed(&mut self, addr: IpAddr, now_ms: u64) {
        let key = block(addr);
        if !self.seen.contains_key(&key) && self.seen.len() >= self.max_addresses {
            self.make_room(now_ms);
        }
        let window_ms = self.window_ms;
        let w = self.seen.entry(key).or_insert(Window {
            start_ms: now_ms,
            failures: 0,
        });
        if now_ms >= w.start_ms.saturating_add(window_ms) {
            *w = Window {
                start_ms: now_ms,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Drops the windows that ended; if none did, the oldest one (a flood of addresses then
    /// costs each address its count, never the node its memory).
    fn make_room(&mut self, now_ms: u64) {
        let window_ms = self.window_ms;
        self.seen
            .retain(|_, w| now_ms < w.start_ms.saturating_add(window_ms));
        if self.seen.len() >= self.max_addresses {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, w)| w.start_ms)
                .map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                self.seen.remove(&oldest);
            }
        }
    }

    pub fn tracked(&self) -> usize {
        self.seen.len()
    }
}

fn block(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn an_address_that_fails_too_often_waits_for_the_window_to_end() {
        let mut limiter = FailureLimiter::new(3, 60_000, 100);
        let a = ip("192.0.2.1");
        for t in 0..3 {
            assert_eq!(limiter.check(a, t), Ok(()));
            limiter.failed(a, t);
        }
        assert_eq!(limiter.check(a, 10_000), Err(50_000));
        assert_eq!(
            limiter.check(ip("192.0.2.2"), 10_000),
            Ok(()),
            "others go on"
        );
        assert_eq!(limiter.check(a, 60_000), Ok(()));
        limiter.failed(a, 60_000);
        assert_eq!(
            limiter.check(a, 60_001),
            Ok(()),
            "a new window counts from 1"
        );
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let mut limiter = FailureLimiter::new(2, 1000, 100);
        limiter.failed(ip("2001:db8:1:2::1"), 0);
        limiter.failed(ip("2001:db8:1:2::ffff"), 0);
        assert!(limiter.check(ip("2001:db8:1:2:3::9"), 1).is_err());
        assert!(limiter.check(ip("2001:db8:1:3::1"), 1).is_ok());
        limiter.failed(ip("::ffff:192.0.2.9"), 0);
        limiter.failed(ip("192.0.2.9"), 0);
        assert!(limiter.check(ip("192.0.2.9"), 1).is_err());
    }

    #[test]
    fn a_flood_of_addresses_is_bounded() {
        let mut limiter = FailureLimiter::new(1, 60_000, 50);
        for i in 0..10_000u32 {
            limiter.failed(IpAddr::from(i.to_be_bytes()), u64::from(i));
        }
        assert!(limiter.tracked() <= 50);
        // The newest are still counted.
        assert!(
            limiter
                .check(IpAddr::from(9_999u32.to_be_bytes()), 10_000)
                .is_err()
        );
    }
}
