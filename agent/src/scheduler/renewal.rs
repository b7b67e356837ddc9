//! When to renew a certificate, as pure functions of times given in Unix seconds, so the rules
//! are tested with an injected clock (lifetimes of 90, 45 and 6 days, ARI windows).
//!
//! Rules (RFC 9773 and Let's Encrypt's guidance, as certbot 4 and lego do it):
//! - The CA offers a renewal window (ARI): renew at a uniformly random point inside it; a
//!   window that already started means "now".
//! - Otherwise renew when 1/3 of the lifetime remains, or 1/2 for lifetimes of 10 days or less,
//!   moved earlier by a per-certificate jitter of up to 1/20 of the lifetime, so a fleet that
//!   issued at the same moment does not renew at the same moment.
//! - A failed attempt waits a capped exponential backoff; the current certificate keeps being
//!   served meanwhile, so a failure never shortens what is deployed.

/// Ten days: lifetimes up to this renew at half, longer ones at a third remaining.
pub const SHORT_LIFETIME_SECS: i64 = 10 * 86_400;

/// A certificate's validity, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub not_before: i64,
    pub not_after: i64,
}

impl Lifetime {
    pub fn secs(&self) -> i64 {
        (self.not_after - self.not_before).max(0)
    }
}

/// An ARI suggested window, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// Why a renewal time was chosen; shown by `kctl certs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Inside the CA's renewal information window.
    Ari,
    /// A third of the lifetime left.
    ThirdLeft,
    /// Half of a short (10 days or less) lifetime left.
    HalfLeft,
}

impl Basis {
    pub fn word(self) -> &'static str {
        match self {
            Basis::Ari => "ARI window",
            Basis::ThirdLeft => "1/3 of lifetime left",
            Basis::HalfLeft => "1/2 of lifetime left",
        }
    }
}

/// The time to renew at. `seed` is a stable per-certificate random value (e.g. from its
/// serial), so the same certificate always gets the same time across restarts.
pub fn renew_at(lifetime: Lifetime, ari: Option<Window>, seed: u64) -> (i64, Basis) {
    if let Some(w) = ari.filter(|w| w.end >= w.start) {
        let span = (w.end - w.start) as u64;
        let offset = if span == 0 { 0 } else { seed % (span + 1) };
        return (w.start + offset as i64, Basis::Ari);
    }
    let total = lifetime.secs();
    let (left, basis) = if total <= SHORT_LIFETIME_SECS {
        (total / 2, Basis::HalfLeft)
    } else {
        (total / 3, Basis::ThirdLeft)
    };
    let jitter_span = (total / 20) as u64;
    let jitter = if jitter_span == 0 {
        0
    } else {
        (seed % jitter_span) as i64
    };
    (lifetime.not_after - left - jitter, basis)
}

/// Delay before attempt `failures + 1` after `failures` consecutive failures: `base` doubled
/// per failure, capped at `cap` and at a tenth of the lifetime (a 6-day certificate must get
/// several attempts before it expires), never below `base`.
pub fn backoff_secs(failures: u32, base: i64, cap: i64, lifetime: Lifetime) -> i64 {
    if failures == 0 {
        return 0;
    }
    let base = base.max(1);
    let exp = failures.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1i64 << exp);
    let cap = cap.min(lifetime.secs() / 10).max(base);
    raw.min(cap)
}

/// What the scheduler does for one certificate at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing before this time.
    WaitUntil(i64),
    /// Renew now.
    Renew,
}

/// Renewal state the scheduler keeps per certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    pub failures: u32,
    /// Unix seconds of the last failed attempt.
    pub last_failure: i64,
}

pub fn decide(now: i64, due: i64, attempts: Attempts, backoff: i64) -> Decision {
    if now < due {
        return Decision::WaitUntil(due);
    }
    if attempts.failures > 0 {
        let retry = attempts.last_failure + backoff;
        if now < retry {
            return Decision::WaitUntil(retry);
        }
    }
    Decision::Renew
}

/// A stable seed from bytes (e.g. the certificate's serial): FNV-1a.
pub fn seed(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    /// An injected "now": 2026-06-01T00:00:00Z.
    const T0: i64 = 1_780_272_000;

    fn lifetime(days: i64) -> Lifetime {
        Lifetime {
            not_before: T0,
            not_after: T0 + days * DAY,
        }
    }

    #[test]
    fn ninety_days_renew_with_a_third_left() {
        for seed in [0, 1, 7, u64::MAX, 123_456_789] {
            let (at, basis) = renew_at(lifetime(90), None, seed);
            assert_eq!(basis, Basis::ThirdLeft);
            // 60 days in, minus up to 4.5 days of jitter.
            assert!(
                at <= T0 + 60 * DAY,
                "{seed}: {}",
                (at - T0) as f64 / DAY as f64
            );
            assert!(at > T0 + 60 * DAY - 90 * DAY / 20, "{seed}");
        }
        // The same certificate, the same time.
        assert_eq!(
            renew_at(lifetime(90), None, 42),
            renew_at(lifetime(90), None, 42)
        );
    }

    #[test]
    fn forty_five_days_renew_with_a_third_left() {
        let (at, basis) = renew_at(lifetime(45), None, 99);
        assert_eq!(basis, Basis::ThirdLeft);
        assert!(at <= T0 + 30 * DAY && at > T0 + 30 * DAY - 45 * DAY / 20);
    }

    #[test]
    fn six_days_renew_at_half() {
        let (at, basis) = renew_at(lifetime(6), None, 5);
        assert_eq!(basis, Basis::HalfLeft);
        assert!(at <= T0 + 3 * DAY && at > T0 + 3 * DAY - 6 * DAY / 20);
        // Exactly 10 days is still "short"; 11 is not.
        assert_eq!(renew_at(lifetime(10), None, 0).1, Basis::HalfLeft);
        assert_eq!(renew_at(lifetime(11), None, 0).1, Basis::ThirdLeft);
    }

    #[test]
    fn ari_window_wins_and_stays_inside() {
        let w = Window {
            start: T0 + 50 * DAY,
            end: T0 + 52 * DAY,
        };
        for seed in [0, 1, 2 * DAY as u64, u64::MAX, 987_654_321] {
            let (at, basis) = renew_at(lifetime(90), Some(w), seed);
            assert_eq!(basis, Basis::Ari);
            assert!(w.start <= at && at <= w.end, "{seed}");
        }
        // A window the CA moved into the past (e.g. a revocation) means "due now".
        let past = Window {
            start: T0 - DAY,
            end: T0 - DAY / 2,
        };
        let (at, _) = renew_at(lifetime(90), Some(past), 3);
        assert_eq!(decide(T0, at, Attempts::default(), 0), Decision::Renew);
        // An inverted window is ignored.
        let bad = Window {
            start: T0 + 10,
            end: T0,
        };
        assert_eq!(renew_at(lifetime(6), Some(bad), 0).1, Basis::HalfLeft);
    }

    #[test]
    fn decisions_follow_the_clock() {
        let due = T0 + 60 * DAY;
        assert_eq!(
            decide(T0, due, Attempts::default(), 0),
            Decision::WaitUntil(due)
        );
        assert_eq!(decide(due, due, Attempts::default(), 0), Decision::Renew);
        let failed = Attempts {
            failures: 2,
            last_failure: due + 10,
        };
        let b = backoff_secs(2, 60, 6 * 3600, lifetime(90));
        assert_eq!(b, 120);
        assert_eq!(
            decide(due + 20, due, failed, b),
            Decision::WaitUntil(due + 130)
        );
        assert_eq!(decide(due + 130, due, failed, b), Decision::Renew);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let l = lifetime(90);
        let got: Vec<i64> = (0..6).map(|f| backoff_secs(f, 60, 600, l)).collect();
        assert_eq!(got, [0, 60, 120, 240, 480, 600]);
        assert_eq!(backoff_secs(1000, 60, 600, l), 600);
        // A 6-day certificate: the cap is at most 14.4 h (a tenth of the lifetime).
        assert_eq!(backoff_secs(20, 3600, 7 * DAY, lifetime(6)), 6 * DAY / 10);
        // A tiny lifetime never pushes the delay below the base.
        let tiny = Lifetime {
            not_before: 0,
            not_after: 30,
        };
        assert_eq!(backoff_secs(3, 5, 60, tiny), 5);
    }

    #[test]
    fn seeds_are_stable_and_spread() {
        assert_eq!(seed(b"serial-1"), seed(b"serial-1"));
        assert_ne!(seed(b"serial-1"), seed(b"serial-2"));
    }
}
