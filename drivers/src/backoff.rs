//! Reconnect policy: a pure function of the number of consecutive failures.
//!
//! The first failure reconnects at once (a single late reply or reset should cost one
//! reconnect, not a pause); from the second on, the wait doubles from `initial` up to `max`.

use std::time::Duration;

/// Capped exponential backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct BackoffPolicy {
    /// Wait after the second consecutive failure.
    #[serde(with = "millis")]
    pub initial: Duration,
    /// Longest wait.
    #[serde(with = "millis")]
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl BackoffPolicy {
    /// The wait before the next attempt after `failures` consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        match failures {
            0 | 1 => Duration::ZERO,
            n => {
                let doublings = (n - 2).min(31);
                self.initial
                    .checked_mul(1u32 << doublings)
                    .unwrap_or(self.max)
                    .min(self.max)
            }
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let p = BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let ms: Vec<u128> = (0..8).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(ms, vec![0, 0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(1));
    }
}
