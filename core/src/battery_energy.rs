//! The battery's charge and discharge energy, integrated from its power readings (the
//! SunSpec storage models carry no energy counters): what Home Assistant's Energy dashboard
//! asks for as "energy going in to / coming out of the battery".
//!
//! Between two readings the power is taken as a straight line (trapezoid), split at its zero
//! crossing so a change from charging to discharging counts each side right. A gap longer than
//! [`MAX_GAP_MS`] (device down, gateway stopped) counts nothing: no energy is invented for it.
//! The counters start at 0 when the gateway starts; Home Assistant's `total_increasing` takes a
//! smaller value as a new cycle, so a restart loses nothing already recorded there.

/// The longest time between two readings that is still integrated (at least; a slower poll
/// allows three of its periods).
pub const MAX_GAP_MS: u64 = 60_000;

/// Charge and discharge energy since the gateway started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatteryEnergy {
    last: Option<(u64, f64)>,
    max_gap_ms: u64,
    charged_wh: f64,
    discharged_wh: f64,
}

impl Default for BatteryEnergy {
    fn default() -> Self {
        BatteryEnergy::new(0)
    }
}

impl BatteryEnergy {
    /// Counters for a battery polled every `poll_ms` (on the clock `on_reading` is given).
    pub fn new(poll_ms: u64) -> Self {
        BatteryEnergy {
            last: None,
            max_gap_ms: MAX_GAP_MS.max(poll_ms.saturating_mul(3)),
            charged_wh: 0.0,
            discharged_wh: 0.0,
        }
    }

    /// A reading of the battery's power (W, positive = discharge) at `now_ms`; `None` for an
    /// invalid reading, which ends the current segment.
    pub fn on_reading(&mut self, now_ms: u64, power_w: Option<f64>) {
        let Some(p1) = power_w.filter(|p| p.is_finite()) else {
            self.last = None;
            return;
        };
        if let Some((t0, p0)) = self.last {
            let dt_ms = now_ms.saturating_sub(t0);
            if dt_ms > 0 && dt_ms <= self.max_gap_ms {
                let (out, into) = split_trapezoid(p0, p1, dt_ms as f64 / 3_600_000.0);
                self.discharged_wh += out;
                self.charged_wh += into;
            }
        }
        self.last = Some((now_ms, p1));
    }

    /// Energy into the battery, Wh.
    pub fn charged_wh(&self) -> f64 {
        self.charged_wh
    }

    /// Energy out of the battery, Wh.
    pub fn discharged_wh(&self) -> f64 {
        self.discharged_wh
    }
}

/// The area under a straight line from `p0` to `p1` over `hours`: (discharged, charged) Wh.
fn split_trapezoid(p0: f64, p1: f64, hours: f64) -> (f64, f64) {
    if p0 >= 0.0 && p1 >= 0.0 {
        return ((p0 + p1) / 2.0 * hours, 0.0);
    }
    if p0 <= 0.0 && p1 <= 0.0 {
        return (0.0, -(p0 + p1) / 2.0 * hours);
    }
    // One sign change: the line crosses zero at a fraction |p0| / (|p0| + |p1|) of the interval.
    let cross = p0.abs() / (p0.abs() + p1.abs()) * hours;
    let first = p0.abs() / 2.0 * cross;
    let second = p1.abs() / 2.0 * (hours - cross);
    if p0 > 0.0 {
        (first, second)
    } else {
        (second, first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_discharge_and_charge_are_counted_apart() {
        let mut e = BatteryEnergy::default();
        // 1 kW out for 30 s readings over an hour, then 500 W in for an hour.
        for i in 0..=120 {
            e.on_reading(i * 30_000, Some(1000.0));
        }
        for i in 121..=240 {
            e.on_reading(i * 30_000, Some(-500.0));
        }
        // The one interval between 1000 W and −500 W splits at its crossing.
        let cross_h = 30.0 / 3600.0 * (1000.0 / 1500.0);
        let cross_out = 1000.0 / 2.0 * cross_h;
        let cross_in = 500.0 / 2.0 * (30.0 / 3600.0 - cross_h);
        assert!(
            (e.discharged_wh() - (1000.0 + cross_out)).abs() < 1e-6,
            "{e:?}"
        );
        assert!(
            (e.charged_wh() - (500.0 - 500.0 * 30.0 / 3600.0 + cross_in)).abs() < 1e-6,
            "{e:?}"
        );
    }

    #[test]
    fn a_gap_or_an_invalid_reading_counts_nothing() {
        let mut e = BatteryEnergy::default();
        e.on_reading(0, Some(2000.0));
        // The device was down for 10 minutes: nothing is invented for that time.
        e.on_reading(600_000, Some(2000.0));
        assert_eq!(e.discharged_wh(), 0.0);
        e.on_reading(601_000, None);
        e.on_reading(602_000, Some(2000.0));
        assert_eq!(e.discharged_wh(), 0.0);
        e.on_reading(603_800, Some(2000.0));
        assert!((e.discharged_wh() - 1.0).abs() < 1e-9, "{e:?}");
        // A reading from the past or a NaN does not count backwards.
        e.on_reading(603_000, Some(2000.0));
        e.on_reading(603_500, Some(f64::NAN));
        assert!((e.discharged_wh() - 1.0).abs() < 1e-9, "{e:?}");
        assert_eq!(e.charged_wh(), 0.0);
    }
}
