//! What a home's battery can give its neighbours now without the home importing more itself
//! later, by its own forecast: the strategy's reserve when the home has a forecast.
//!
//! A fixed reserve (say 40 %) keeps too much at night — every battery of a community that starts
//! the night half full keeps it, while a neighbour with an empty battery imports — and too little
//! before a dark morning. The forecast says what the home itself will need: the battery's charge
//! that its own control (self-consumption) would never use before its PV fills it again is
//! spare, and giving it away leaves the home's own import over the next day unchanged. The
//! household's fixed reserve still applies below it (for a power cut, a wrong forecast).

use crate::schedule::HomeData;

/// A day, ms: the forecast's values cover one day, repeated for the day after.
const DAY_MS: u64 = 86_400_000;

/// How far ahead the home looks, in forecast intervals: one day.
const HORIZON_DAYS: usize = 1;

/// Energies closer than this are not told apart, kWh (1 Wh).
const TOLERANCE_KWH: f64 = 0.001;

/// One interval of the home's own control (self-consumption: the battery covers the home's
/// deficit and stores its surplus, within its limits): the charge after it and the energy the
/// home imports in it, kWh.
pub(crate) fn own_control_step(
    h: &HomeData,
    stored: f64,
    pv: f64,
    load: f64,
    dt: f64,
) -> (f64, f64) {
    let need = load - pv.max(0.0);
    if need > 0.0 {
        let out_kw = need
            .min(h.discharge_kw)
            .min((stored - h.soc_min_kwh).max(0.0) * h.efficiency / dt);
        (stored - out_kw * dt / h.efficiency, (need - out_kw) * dt)
    } else {
        let in_kw = (-need)
            .min(h.charge_kw)
            .min((h.capacity_kwh - stored).max(0.0) / (h.efficiency * dt));
        (stored + in_kw * h.efficiency * dt, 0.0)
    }
}

/// The energy the home imports over the next `intervals` forecast intervals from interval
/// `start` on (the forecast day repeats), starting with `stored` kWh, under its own control.
fn own_import_kwh(h: &HomeData, start: usize, intervals: usize, stored: f64, dt: f64) -> f64 {
    let day = h.pv_kw.iter().zip(&h.load_kw).cycle().skip(start);
    let mut charge = stored;
    let mut import = 0.0;
    for (pv, load) in day.take(intervals) {
        let (after, imported) = own_control_step(h, charge, *pv, *load, dt);
        charge = after;
        import += imported;
    }
    import
}

/// The energy (Wh) the battery, now holding `stored_wh`, can give at community time `now_ms`
/// without the home importing more over the next day than it would have, by the forecast `h`
/// (`pv_kw` and `load_kw` per interval of the day; the battery's limits; `soc_min_kwh` is never
/// given). 0 for a forecast without intervals or a battery reading that makes no sense.
pub fn spare_wh(h: &HomeData, now_ms: u64, stored_wh: f64) -> f64 {
    let n = h.pv_kw.len().min(h.load_kw.len());
    let Some(interval_ms) = DAY_MS.checked_div(n as u64).filter(|ms| *ms > 0) else {
        return 0.0;
    };
    if !(stored_wh.is_finite() && stored_wh > 0.0) {
        return 0.0;
    }
    let dt = interval_ms as f64 / 3_600_000.0;
    let into_day = now_ms.checked_rem(DAY_MS).unwrap_or(0);
    let start = usize::try_from(into_day.checked_div(interval_ms).unwrap_or(0)).unwrap_or(0);
    let intervals = n.saturating_mul(HORIZON_DAYS);
    let stored = stored_wh / 1000.0;
    let import = |s: f64| own_import_kwh(h, start, intervals, s, dt);
    let baseline = import(stored);
    // Import grows as the starting charge shrinks (own control is monotone): bisect for the
    // most that can go without it growing.
    let (mut given, mut too_much) = (0.0, (stored - h.soc_min_kwh).max(0.0));
    if import(stored - too_much) <= baseline + TOLERANCE_KWH {
        return too_much * 1000.0;
    }
    while too_much - given > TOLERANCE_KWH {
        let mid = (given + too_much) / 2.0;
        if import(stored - mid) <= baseline + TOLERANCE_KWH {
            given = mid;
        } else {
            too_much = mid;
        }
    }
    given * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day of 24 hourly intervals: `pv` kW from 08 to 16 h, `load` kW all day.
    fn home(pv: f64, load: f64, capacity_kwh: f64) -> HomeData {
        HomeData {
            pv_kw: (0..24)
                .map(|h| if (8..16).contains(&h) { pv } else { 0.0 })
                .collect(),
            load_kw: vec![load; 24],
            capacity_kwh,
            charge_kw: 5.0,
            discharge_kw: 5.0,
            efficiency: 1.0,
            soc0_kwh: 0.0,
            soc_min_kwh: 0.0,
        }
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_battery_its_own_sun_refills_can_give_what_the_night_does_not_need() {
        // Midnight, 8 kWh stored; the home needs 0.5 kW until 08 h: 4 kWh. From 08 h 3.5 kW of
        // surplus fills the 10 kWh battery whatever it holds: 4 kWh are spare.
        let h = home(4.0, 0.5, 10.0);
        let spare = spare_wh(&h, 0, 8_000.0);
        assert!((spare - 4_000.0).abs() < 2.0, "{spare}");
        // Giving them away leaves the home's import of the day unchanged; more would not.
        let import = |s| own_import_kwh(&h, 0, 24, s, 1.0);
        assert!(import(8.0 - spare / 1000.0) <= import(8.0) + TOLERANCE_KWH);
        assert!(import(8.0 - spare / 1000.0 - 0.1) > import(8.0) + 0.05);
    }

    #[test]
    fn a_home_without_sun_keeps_all_it_will_need() {
        // No PV: 1 kW of load for a day needs 24 kWh; a 10 kWh battery has nothing spare.
        let h = home(0.0, 1.0, 10.0);
        assert!(spare_wh(&h, 0, 10_000.0) < 1.0);
        // At 20 h with a full battery and a sunny morning ahead: the night until 08 h needs 12
        // kWh, more than it holds: nothing spare either.
        let sunny = home(6.0, 1.0, 10.0);
        assert!(spare_wh(&sunny, 20 * HOUR, 10_000.0) < 1.0);
        // At 02 h it needs 6 kWh until 08 h, then the sun fills it: 4 of 10 kWh are spare.
        let spare = spare_wh(&sunny, 2 * HOUR, 10_000.0);
        assert!((spare - 4_000.0).abs() < 2.0, "{spare}");
    }

    #[test]
    fn the_surplus_a_full_battery_would_spill_makes_its_whole_charge_spare() {
        // 09 h, a full battery and 6 kW of surplus for seven hours: it refills at once, but the
        // night after needs 16 h × 2 kW = 32 kWh of which the battery gives 10 whatever it gave
        // now — so giving its charge now costs the home nothing.
        let h = home(8.0, 2.0, 10.0);
        let spare = spare_wh(&h, 9 * HOUR, 10_000.0);
        assert!((spare - 10_000.0).abs() < 2.0, "{spare}");
    }

    #[test]
    fn the_lowest_charge_and_nonsense_are_never_given() {
        let mut h = home(4.0, 0.5, 10.0);
        h.soc_min_kwh = 1.0;
        let spare = spare_wh(&h, 12 * HOUR, 10_000.0);
        assert!(spare <= 9_000.0 + 2.0, "{spare}");
        assert_eq!(spare_wh(&h, 0, f64::NAN), 0.0);
        assert_eq!(spare_wh(&h, 0, -5.0), 0.0);
        h.pv_kw.clear();
        assert_eq!(spare_wh(&h, 0, 5_000.0), 0.0);
    }
}
