//! Retries with exponential backoff for errors that a retry can fix
//! (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `ABORTED`; see `Error::is_retryable`).

use std::time::Duration;

/// How a client retries `UNAVAILABLE`, `DEADLINE_EXCEEDED` and `ABORTED`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First pause.
    pub initial_backoff: Duration,
    /// Longest pause.
    pub max_backoff: Duration,
    /// Give up after retrying this long (the last error is returned).
    pub max_elapsed: Duration,
    /// Deadline of each attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `attempt` (0-based), doubled each time.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.initial_backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_backoff)
    }
}
