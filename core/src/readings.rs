//! Interval meter readings for billing (docs/scheduling.md, S2): the meter's import and export
//! counters, sampled as they come, become the net energy of each interval of the day, signed
//! with the home's device key so the billing contract can check them. Sans-IO: samples and
//! time come in as arguments; finished intervals come out.

use gridlet_ledger::crypto::Signature;
use gridlet_ledger::market::billing::{reading_digest, Reading};
use gridlet_ledger::{Hash32, MemberKey};
use secp256k1::SecretKey;

/// Cuts counter samples into signed interval readings.
#[derive(Debug, Clone)]
pub struct IntervalMeter {
    chain_id: Hash32,
    home: MemberKey,
    interval_ms: u64,
    open: Option<OpenInterval>,
}

/// The interval being metered: where its counters started. Kept durably by the caller, so a
/// restart within an interval still closes it with the right counters (they are cumulative).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenInterval {
    /// Day.
    pub day: u64,
    /// Interval of the day.
    pub interval: u32,
    /// Import counter at its start, Wh.
    pub import_wh: f64,
    /// Export counter at its start, Wh.
    pub export_wh: f64,
    /// Whether the counters were read at its very start (at the boundary, or at the sample
    /// that closed the interval before). An interval first seen midway (start-up, after a
    /// gap) would under-count: it is not reported.
    pub from_start: bool,
}

/// A signed reading with the day it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayReading {
    /// Day number (community time / 24 h).
    pub day: u64,
    /// The reading.
    pub reading: Reading,
}

const DAY_MS: u64 = 86_400_000;

impl IntervalMeter {
    /// A meter for `home` with intervals of `interval_ms` (e.g. 15 minutes).
    pub fn new(chain_id: Hash32, home: MemberKey, interval_ms: u64) -> IntervalMeter {
        IntervalMeter {
            chain_id,
            home,
            interval_ms: interval_ms.max(1),
            open: None,
        }
    }

    /// Continues from a stored open interval (after a restart).
    pub fn restore(&mut self, open: OpenInterval) {
        self.open = Some(open);
    }

    /// The open interval, to store.
    pub fn open_interval(&self) -> Option<OpenInterval> {
        self.open
    }

    fn slot(&self, now_ms: u64) -> (u64, u32) {
        let day = now_ms.checked_div(DAY_MS).unwrap_or(0);
        let into_day = now_ms.checked_rem(DAY_MS).unwrap_or(0);
        let interval = into_day.checked_div(self.interval_ms).unwrap_or(0) as u32;
        (day, interval)
    }

    fn next(&self, day: u64, interval: u32) -> (u64, u32) {
        let next = interval.saturating_add(1);
        if u64::from(next).saturating_mul(self.interval_ms) >= DAY_MS {
            (day.saturating_add(1), 0)
        } else {
            (day, next)
        }
    }

    /// A counter sample at community time `now_ms`. When it falls into the interval right
    /// after the open one, that interval is closed and returned, signed with `key` (the net
    /// energy is the counters' change over it, Wh rounded; positive = import). An interval
    /// whose start or end the meter did not see (start-up midway, a gap in the data) is not
    /// reported: a reading is never invented.
    pub fn sample(
        &mut self,
        now_ms: u64,
        import_wh: f64,
        export_wh: f64,
        key: &SecretKey,
    ) -> Option<DayReading> {
        let (day, interval) = self.slot(now_ms);
        let Some(open) = self.open.filter(|o| (o.day, o.interval) != (day, interval)) else {
            if self.open.is_none() {
                self.open = Some(OpenInterval {
                    day,
                    interval,
                    import_wh,
                    export_wh,
                    from_start: (now_ms % DAY_MS).is_multiple_of(self.interval_ms),
                });
            }
            return None;
        };
        // Only the interval right before this one closes cleanly at this sample, and this
        // sample is then the start of the new one.
        let continued = self.next(open.day, open.interval) == (day, interval);
        self.open = Some(OpenInterval {
            day,
            interval,
            import_wh,
            export_wh,
            from_start: continued || (now_ms % DAY_MS).is_multiple_of(self.interval_ms),
        });
        if !(continued && open.from_start) {
            return None;
        }
        let net = ((import_wh - open.import_wh) - (export_wh - open.export_wh)).round() as i64;
        let digest = reading_digest(&self.chain_id, &self.home, open.day, open.interval, net);
        Some(DayReading {
            day: open.day,
            reading: Reading {
                interval: open.interval,
                net_wh: net,
                signature: Some(Signature::sign(&digest, key)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridlet_ledger::crypto::deterministic_key;
    use gridlet_ledger::market::billing::{settle, DayPrices, HomeBill};

    #[test]
    fn intervals_close_with_the_counters_change_and_verify_in_billing() {
        let key = deterministic_key(5, 1);
        let home = MemberKey::from_secret(&deterministic_key(5, 2));
        let chain = Hash32([3; 32]);
        let quarter = 900_000;
        let mut m = IntervalMeter::new(chain, home, quarter);
        // Day 2, interval 0 opens at its start at 1 000 / 50 Wh; 40 Wh imported, 10 exported.
        let day2 = 2 * DAY_MS;
        assert_eq!(m.sample(day2, 1_000.0, 50.0, &key), None);
        assert_eq!(m.sample(day2 + 500_000, 1_020.0, 55.0, &key), None);
        let r = m.sample(day2 + quarter + 5, 1_040.0, 60.0, &key).unwrap();
        assert_eq!((r.day, r.reading.interval, r.reading.net_wh), (2, 0, 30));
        // A gap over interval 2: interval 1 cannot be closed at a sample in interval 3, and
        // interval 3, first seen midway, would under-count: neither is reported.
        assert_eq!(m.sample(day2 + 3 * quarter + 1, 1_100.0, 60.0, &key), None);
        assert_eq!(m.sample(day2 + 4 * quarter + 3, 1_105.0, 80.0, &key), None);
        // Interval 4 opened at the sample that closed 3: it is whole again.
        let r4 = m
            .sample(day2 + 5 * quarter + 9, 1_125.0, 85.0, &key)
            .unwrap();
        assert_eq!((r4.reading.interval, r4.reading.net_wh), (4, 15));
        // The billing contract accepts the signatures (a one-interval day).
        let pubkey = key.public_key();
        let s = settle(
            &chain,
            2,
            &DayPrices {
                clearing: &[100_000],
                tariff: &[300_000],
                feed_in: &[80_000],
            },
            &[HomeBill {
                home,
                meter_key: &pubkey,
                scheduled_wh: &[30],
                readings: &[r.reading],
            }],
        )
        .unwrap();
        assert_eq!(s.homes[0].1, 3_000);
    }

    #[test]
    fn a_start_midway_is_not_reported_and_a_restart_within_an_interval_keeps_it() {
        let key = deterministic_key(5, 1);
        let home = MemberKey::from_secret(&deterministic_key(5, 2));
        let q = 900_000;
        let mut m = IntervalMeter::new(Hash32([3; 32]), home, q);
        // Started 5 minutes into interval 7: that interval is not whole.
        assert_eq!(m.sample(7 * q + 300_000, 10.0, 0.0, &key), None);
        assert_eq!(m.sample(8 * q + 2, 20.0, 0.0, &key), None);
        assert_eq!(m.sample(8 * q + 400_000, 25.0, 0.0, &key), None);
        // The gateway restarts within interval 8 and restores what it stored.
        let stored = m.open_interval().unwrap();
        let mut again = IntervalMeter::new(Hash32([3; 32]), home, q);
        again.restore(stored);
        let r = again.sample(9 * q + 1, 33.0, 1.0, &key).unwrap();
        assert_eq!((r.reading.interval, r.reading.net_wh), (8, 12));
        // Without the stored state, interval 9 (first seen midway) would not be reported.
        let mut fresh = IntervalMeter::new(Hash32([3; 32]), home, q);
        assert_eq!(fresh.sample(9 * q + 100, 33.0, 1.0, &key), None);
        assert_eq!(fresh.sample(10 * q + 1, 40.0, 1.0, &key), None);
    }

    #[test]
    fn the_last_interval_of_a_day_closes_at_the_next_midnight() {
        let key = deterministic_key(5, 1);
        let home = MemberKey::from_secret(&deterministic_key(5, 2));
        let mut m = IntervalMeter::new(Hash32([3; 32]), home, 900_000);
        assert_eq!(m.sample(DAY_MS - 900_000, 0.0, 0.0, &key), None);
        let r = m.sample(DAY_MS + 100, 12.0, 0.0, &key).unwrap();
        assert_eq!((r.day, r.reading.interval, r.reading.net_wh), (0, 95, 12));
    }
}
