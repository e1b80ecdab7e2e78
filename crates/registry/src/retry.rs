//! Bounded, jittered exponential backoff, shared by every network call that is safe to repeat.

use std::time::Duration;

use rand::Rng as _;

/// Retry schedule: `attempts` tries in total, waits growing from `base` to `cap` with full
/// jitter, so many workers hitting the same throttled host spread out instead of retrying in
/// step.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 5,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
        }
    }
}

impl Backoff {
    /// No retries at all (for tests that want to see the first failure).
    pub fn none() -> Self {
        Backoff {
            attempts: 1,
            ..Backoff::default()
        }
    }

    /// How long to wait before try number `attempt + 1` (0-based). A server's `Retry-After`
    /// wins when it is longer, but never beyond the cap.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.cap);
        let jittered = Duration::from_millis(rand::rng().random_range(0..=exp.as_millis() as u64));
        match retry_after {
            Some(ra) => ra.min(self.cap).max(jittered),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_bounded_and_honour_retry_after() {
        let b = Backoff::default();
        for attempt in 0..40 {
            assert!(b.delay(attempt, None) <= b.cap);
        }
        assert!(b.delay(0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert_eq!(b.delay(0, Some(Duration::from_secs(3600))), b.cap);
    }
}
