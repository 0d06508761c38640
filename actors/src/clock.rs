//! The one clock of a gateway: real time, or the scenario clock of `gridlet sim`. Actors read
//! it and pass `now_ms` into the pure cores, which never read a clock themselves.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The clock the community runs on: real time, or a scenario clock running `speedup` times
/// faster from `origin_ms` (for `gridlet sim`).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When this clock was made: wall time for delays that must not run faster with the
    /// scenario (resends, resubmissions).
    wall_origin: Instant,
    start: Instant,
    origin_ms: u64,
    speedup: f64,
}

impl Clock {
    /// Wall-clock time.
    pub fn real() -> Clock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock {
            wall_origin: Instant::now(),
            start: Instant::now(),
            origin_ms: now,
            speedup: 1.0,
        }
    }

    /// A scenario clock.
    pub fn scenario(origin_ms: u64, speedup: f64) -> Clock {
        Clock {
            wall_origin: Instant::now(),
            start: Instant::now(),
            origin_ms,
            speedup,
        }
    }

    /// A scenario clock shared by several processes: it reads `origin_ms` at wall time
    /// `anchor_unix_ms` (and stands still there until then) and runs `speedup` times faster than
    /// wall time.
    pub fn anchored(anchor_unix_ms: u64, origin_ms: u64, speedup: f64) -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let now = Instant::now();
        if wall < anchor_unix_ms {
            return Clock {
                wall_origin: now,
                start: now + Duration::from_millis(anchor_unix_ms - wall),
                origin_ms,
                speedup,
            };
        }
        let since = Duration::from_millis(wall - anchor_unix_ms);
        match now.checked_sub(since) {
            Some(start) => Clock {
                wall_origin: now,
                start,
                origin_ms,
                speedup,
            },
            None => Clock {
                wall_origin: now,
                start: now,
                origin_ms: origin_ms.saturating_add((since.as_millis() as f64 * speedup) as u64),
                speedup,
            },
        }
    }

    /// Wall time since the clock was made, ms (monotonic; not scaled by the speedup).
    pub fn wall_ms(&self) -> u64 {
        u64::try_from(self.wall_origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How much faster than wall time it runs.
    pub fn speedup(&self) -> f64 {
        self.speedup
    }

    /// Current time, ms.
    pub fn now_ms(&self) -> u64 {
        let elapsed = Instant::now()
            .saturating_duration_since(self.start)
            .as_secs_f64()
            * 1000.0
            * self.speedup;
        self.origin_ms.saturating_add(elapsed as u64)
    }
}
