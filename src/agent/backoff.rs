//! Retry delays and the "not before" times the loop waits for.

use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Exponential backoff: 100 ms, doubling, capped.
pub(super) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(super) fn new(cap: Duration) -> Self {
        Backoff {
            next: FIRST_BACKOFF.min(cap),
            cap,
        }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        delay
    }

    /// The time the next attempt is due at.
    pub(super) fn next_at(&mut self) -> Instant {
        Instant::now() + self.next_delay()
    }

    pub(super) fn reset(&mut self) {
        self.next = FIRST_BACKOFF.min(self.cap);
    }
}

/// Whether a "not before" time has passed; `None` means no wait.
pub(super) fn is_due(not_before: Option<Instant>) -> bool {
    not_before.is_none_or(|at| at <= Instant::now())
}

/// Completes at `at`; never, when there is nothing to wait for.
pub(super) async fn wake_at(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(500));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        assert_eq!(
            Backoff::new(Duration::from_millis(30)).next_delay(),
            Duration::from_millis(30)
        );
    }
}
