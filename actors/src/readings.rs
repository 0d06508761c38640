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
    /// (day, interval, import Wh, export Wh) at the start of the open interval.
    open: Option<(u64, u32, f64, f64)>,
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

    fn slot(&self, now_ms: u64) -> (u64, u32) {
        let day = now_ms / DAY_MS;
        let interval = ((now_ms % DAY_MS) / self.interval_ms) as u32;
        (day, interval)
    }

    /// A counter sample at community time `now_ms`. When it falls into a new interval, the
    /// interval that just ended is returned, signed with `key` (the net energy is the counters'
    /// change over it, Wh rounded; positive = import). An interval whose start the meter never
    /// saw (start-up, a gap in the data) is not reported: a reading is never invented.
    pub fn sample(
        &mut self,
        now_ms: u64,
        import_wh: f64,
        export_wh: f64,
        key: &SecretKey,
    ) -> Option<DayReading> {
        let (day, interval) = self.slot(now_ms);
        let out = match self.open {
            Some((d, i, imp0, exp0)) if (d, i) != (day, interval) => {
                // Only the interval right before this one closes cleanly at this sample.
                let next = if i.saturating_add(1) as u64 * self.interval_ms >= DAY_MS {
                    (d.saturating_add(1), 0)
                } else {
                    (d, i.saturating_add(1))
                };
                (next == (day, interval)).then(|| {
                    let net = ((import_wh - imp0) - (export_wh - exp0)).round() as i64;
                    let digest = reading_digest(&self.chain_id, &self.home, d, i, net);
                    DayReading {
                        day: d,
                        reading: Reading {
                            interval: i,
                            net_wh: net,
                            signature: Some(Signature::sign(&digest, key)),
                        },
                    }
                })
            }
            _ => None,
        };
        if self
            .open
            .is_none_or(|(d, i, _, _)| (d, i) != (day, interval))
        {
            self.open = Some((day, interval, import_wh, export_wh));
        }
        out
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
        // Day 2, interval 0 opens at 1 000 / 50 Wh; 40 Wh imported, 10 exported by its end.
        let day2 = 2 * DAY_MS;
        assert_eq!(m.sample(day2 + 1_000, 1_000.0, 50.0, &key), None);
        assert_eq!(m.sample(day2 + 500_000, 1_020.0, 55.0, &key), None);
        let r = m.sample(day2 + quarter + 5, 1_040.0, 60.0, &key).unwrap();
        assert_eq!((r.day, r.reading.interval, r.reading.net_wh), (2, 0, 30));
        // A gap over interval 2: interval 1 cannot be closed at a sample in interval 3.
        assert_eq!(m.sample(day2 + 3 * quarter + 1, 1_100.0, 60.0, &key), None);
        let r3 = m.sample(day2 + 4 * quarter, 1_105.0, 80.0, &key).unwrap();
        assert_eq!((r3.reading.interval, r3.reading.net_wh), (3, -15));
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
    fn the_last_interval_of_a_day_closes_at_the_next_midnight() {
        let key = deterministic_key(5, 1);
        let home = MemberKey::from_secret(&deterministic_key(5, 2));
        let mut m = IntervalMeter::new(Hash32([3; 32]), home, 900_000);
        assert_eq!(m.sample(DAY_MS - 100, 0.0, 0.0, &key), None);
        let r = m.sample(DAY_MS + 100, 12.0, 0.0, &key).unwrap();
        assert_eq!((r.day, r.reading.interval, r.reading.net_wh), (0, 95, 12));
    }
}
