//! Today's energy by hour — PV, grid import, grid export and traded — from the devices'
//! lifetime counters, for the home's page. Pure: the caller samples the counters with the
//! community clock's time; each sample credits what every counter grew since the previous one
//! to the hour it falls in. A counter that is unknown, goes backwards (a meter replaced or
//! reset) or jumps beyond what a home can move between two samples credits nothing.

use serde::Serialize;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// More than this between two samples is not energy that flowed (a counter replaced, a
/// first reading after a long gap), Wh.
const MAX_STEP_WH: f64 = 50_000.0;

/// The counters at one moment (lifetime values, Wh); `None` where no fresh value is known.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// PV inverter's lifetime energy.
    pub pv_wh: Option<f64>,
    /// Grid meter's import counter.
    pub import_wh: Option<f64>,
    /// Grid meter's export counter.
    pub export_wh: Option<f64>,
    /// Energy this home sold or bought on the chain.
    pub traded_wh: Option<f64>,
}

/// One hour of today, Wh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HourEnergy {
    /// Hour of the day (0–23, on the community clock).
    pub hour: u8,
    /// PV produced.
    pub pv_wh: u64,
    /// Drawn from the main grid.
    pub import_wh: u64,
    /// Fed into the main grid.
    pub export_wh: u64,
    /// Traded with neighbours.
    pub traded_wh: u64,
}

/// The day so far.
#[derive(Debug, Clone, Default)]
pub struct EnergyToday {
    day: u64,
    last: Counters,
    /// Per hour: pv, import, export, traded (fractions kept until shown).
    hours: [[f64; 4]; 24],
}

impl EnergyToday {
    /// Takes one sample at `now_ms` (community clock).
    pub fn observe(&mut self, now_ms: u64, now: Counters) {
        let day = now_ms / DAY_MS;
        if day != self.day {
            self.day = day;
            self.hours = [[0.0; 4]; 24];
        }
        let hour = ((now_ms % DAY_MS) / HOUR_MS) as usize;
        let pairs = [
            (self.last.pv_wh, now.pv_wh),
            (self.last.import_wh, now.import_wh),
            (self.last.export_wh, now.export_wh),
            (self.last.traded_wh, now.traded_wh),
        ];
        if let Some(bucket) = self.hours.get_mut(hour) {
            for (slot, (before, after)) in bucket.iter_mut().zip(pairs) {
                if let (Some(b), Some(a)) = (before, after) {
                    let step = a - b;
                    if (0.0..=MAX_STEP_WH).contains(&step) {
                        *slot += step;
                    }
                }
            }
        }
        // An unknown value keeps the last known one: a missed poll loses nothing.
        let keep = |old: Option<f64>, new: Option<f64>| new.or(old);
        self.last = Counters {
            pv_wh: keep(self.last.pv_wh, now.pv_wh),
            import_wh: keep(self.last.import_wh, now.import_wh),
            export_wh: keep(self.last.export_wh, now.export_wh),
            traded_wh: keep(self.last.traded_wh, now.traded_wh),
        };
    }

    /// Today's hours up to the present one, whole Wh.
    pub fn hours(&self, now_ms: u64) -> Vec<HourEnergy> {
        if now_ms / DAY_MS != self.day {
            return Vec::new();
        }
        let current = ((now_ms % DAY_MS) / HOUR_MS) as usize;
        self.hours
            .iter()
            .take(current.saturating_add(1))
            .enumerate()
            .map(|(h, &[pv, import, export, traded])| HourEnergy {
                hour: h as u8,
                pv_wh: pv.round() as u64,
                import_wh: import.round() as u64,
                export_wh: export.round() as u64,
                traded_wh: traded.round() as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pv: f64, import: f64) -> Counters {
        Counters {
            pv_wh: Some(pv),
            import_wh: Some(import),
            export_wh: Some(0.0),
            traded_wh: Some(0.0),
        }
    }

    #[test]
    fn growth_is_credited_to_the_hour_it_happened_in() {
        let mut e = EnergyToday::default();
        let day = 20_000 * DAY_MS;
        e.observe(day + 9 * HOUR_MS, at(1_000.0, 50.0));
        e.observe(day + 9 * HOUR_MS + 1_800_000, at(1_600.4, 50.0));
        e.observe(day + 10 * HOUR_MS + 60_000, at(2_000.0, 70.0));
        let h = e.hours(day + 10 * HOUR_MS + 60_000);
        assert_eq!(h.len(), 11);
        assert_eq!((h[9].pv_wh, h[9].import_wh), (600, 0));
        assert_eq!((h[10].pv_wh, h[10].import_wh), (400, 20));
        assert_eq!(
            h[3],
            HourEnergy {
                hour: 3,
                ..HourEnergy::default()
            }
        );
    }

    #[test]
    fn resets_gaps_and_jumps_credit_nothing_and_a_new_day_starts_empty() {
        let mut e = EnergyToday::default();
        let day = 20_000 * DAY_MS;
        e.observe(day + HOUR_MS, at(1_000.0, 500.0));
        // A meter replaced: its counter restarts lower; nothing is credited.
        e.observe(day + HOUR_MS + 1, at(1_010.0, 3.0));
        // A missed PV poll keeps the last known value.
        e.observe(
            day + HOUR_MS + 2,
            Counters {
                pv_wh: None,
                ..at(0.0, 4.0)
            },
        );
        e.observe(day + HOUR_MS + 3, at(1_020.0, 5.0));
        // A jump no home makes between two samples.
        e.observe(day + HOUR_MS + 4, at(900_000.0, 5.0));
        let h = e.hours(day + HOUR_MS + 4);
        assert_eq!(h.get(1).map(|x| (x.pv_wh, x.import_wh)), Some((20, 2)));
        e.observe(day + DAY_MS + 5, at(900_010.0, 6.0));
        let next = e.hours(day + DAY_MS + 5);
        assert_eq!(next.len(), 1);
        assert_eq!(next.first().map(|x| (x.pv_wh, x.import_wh)), Some((10, 1)));
        assert!(e.hours(day + HOUR_MS).is_empty(), "yesterday is gone");
    }
}
