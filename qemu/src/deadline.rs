//! Deadlines: every wait in the harness takes one.
//!
//! A [`Deadline`] is an absolute instant, so one deadline can bound a sequence of steps (send a
//! command, wait for its prompt, query QMP). Anything that takes a `impl Into<Deadline>` also
//! accepts a plain [`Duration`], meaning "from now".

use std::time::{Duration, Instant};

/// An absolute point in time after which a wait fails with [`crate::Error::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Deadline(Instant::now() + timeout)
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Time left, or `None` once the deadline has passed.
    pub fn remaining(self) -> Option<Duration> {
        self.0
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Whether the deadline has passed.
    pub fn expired(self) -> bool {
        self.remaining().is_none()
    }
}

impl From<Duration> for Deadline {
    fn from(timeout: Duration) -> Self {
        Deadline::after(timeout)
    }
}

impl From<Instant> for Deadline {
    fn from(at: Instant) -> Self {
        Deadline(at)
    }
}
