//! Reconnect policy and schedule, one for every link (Modbus, DSMR, MQTT meter, bus, Home
//! Assistant).
//!
//! The first failure reconnects at once (a single late reply or reset should cost one
//! reconnect, not a pause); from the second on, the wait doubles from `initial` up to `max`
//! (backon's exponential backoff, with jitter).

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
    /// A fresh reconnect schedule under this policy.
    pub fn schedule(&self) -> Reconnect {
        Reconnect {
            policy: *self,
            failures: 0,
            delays: self.delays(),
        }
    }

    fn delays(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max.max(self.initial))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// The waits between reconnects of one link (backon's exponential backoff with jitter): the
/// first failure reconnects at once; from the second on the wait doubles from `initial`, each
/// plus a random share of itself (up to twice the wait), never above `max` — so the gateways
/// that lost one broker together do not all come back in the same instant.
#[derive(Debug)]
pub struct Reconnect {
    policy: BackoffPolicy,
    failures: u32,
    delays: backon::ExponentialBackoff,
}

impl Reconnect {
    /// The link failed again: how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            return Duration::ZERO;
        }
        self.delays
            .next()
            .unwrap_or(self.policy.max)
            .min(self.policy.max)
    }

    /// The link is up: the next failure starts the schedule again.
    pub fn connected(&mut self) {
        self.failures = 0;
        self.delays = self.policy.delays();
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
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
    fn at_once_then_doubling_with_jitter_up_to_the_cap() {
        let p = BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let mut r = p.schedule();
            let waits: Vec<Duration> = (0..8).map(|_| r.failed()).collect();
            assert_eq!(waits[0], Duration::ZERO);
            // Each wait lies between the doubling delay and twice it, never above `max`.
            for (i, base_ms) in [100u64, 200, 400, 800, 1000, 1000, 1000].iter().enumerate() {
                let w = waits[i + 1];
                let base = Duration::from_millis(*base_ms);
                let top = (base * 2).min(p.max);
                assert!(w >= base && w <= top, "wait {} = {w:?}", i + 1);
            }
            assert_eq!(r.failures(), 8);
            r.connected();
            assert_eq!(r.failed(), Duration::ZERO, "a success starts over");
            let w = r.failed();
            assert!(w >= Duration::from_millis(100) && w <= Duration::from_millis(200));
        }
    }

    #[test]
    fn jitter_spreads_the_waits() {
        let p = BackoffPolicy::default();
        let seconds: std::collections::BTreeSet<u128> = (0..20)
            .map(|_| {
                let mut r = p.schedule();
                r.failed();
                r.failed().as_millis()
            })
            .collect();
        assert!(seconds.len() > 5, "{seconds:?}");
    }
}
