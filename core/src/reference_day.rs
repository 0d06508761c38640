//! The best possible day: with perfect foresight of every home's PV and load and every battery,
//! the least the community could have drawn from the main grid, and then the least it could
//! have exported — a linear program over all homes at once (clarabel), the yardstick the
//! markets are measured against (`gridlet sim`'s report).
//!
//! Physical rules, unlike the day-ahead planner's: PV is never curtailed, and the day need not
//! end with each battery's starting charge — only with at least `end_stored_kwh` in all
//! batteries together (what the homes kept without trading), so the optimum cannot win by
//! emptying the batteries.

// Floating-point LP assembly over indices bounded by the problem's size, as in `schedule`:
// not consensus code.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::schedule::{
    home_rows_with, solve, HomeData, HomeRules, Rows, ScheduleError, Triplets, VARS_PER_INTERVAL,
};

/// Weight of import against export in the objective: import first, export a distant second.
const EXPORT_WEIGHT: f64 = 1e-3;

/// The optimum's exchange with the main grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReferenceDay {
    /// Energy drawn from the main grid, kWh.
    pub import_kwh: f64,
    /// Energy fed into the main grid, kWh.
    pub export_kwh: f64,
}

/// Solves the reference day for `homes` in intervals of `dt_h` hours.
pub fn reference_day(
    homes: &[HomeData],
    dt_h: f64,
    end_stored_kwh: f64,
) -> Result<ReferenceDay, ScheduleError> {
    let t_len = homes.first().map_or(0, |h| h.load_kw.len());
    if t_len == 0
        || homes
            .iter()
            .any(|h| h.load_kw.len() != t_len || h.pv_kw.len() != t_len)
    {
        return Err(ScheduleError::Data(
            "every home needs PV and load for the same intervals".into(),
        ));
    }
    let per_home = VARS_PER_INTERVAL * t_len;
    let zp = per_home * homes.len();
    let zm = zp + t_len;
    let n = zm + t_len;
    let mut q = vec![0.0; n];
    let mut rows = Rows {
        eq: Triplets::new(0, n),
        eq_b: Vec::new(),
        le: Triplets::new(0, n),
        le_b: Vec::new(),
    };
    let rules = HomeRules {
        curtail: false,
        keep_charge: false,
    };
    for (i, h) in homes.iter().enumerate() {
        home_rows_with(h, dt_h, i * per_home, &mut rows, rules);
    }
    for t in 0..t_len {
        // Σ x_i − import + export = 0, import ≥ 0, export ≥ 0.
        let r = rows.eq_b.len();
        for i in 0..homes.len() {
            rows.eq.push(r, i * per_home + t, 1.0);
        }
        rows.eq.push(r, zp + t, -1.0);
        rows.eq.push(r, zm + t, 1.0);
        rows.eq_b.push(0.0);
        for col in [zp + t, zm + t] {
            let r = rows.le_b.len();
            rows.le.push(r, col, -1.0);
            rows.le_b.push(0.0);
        }
        q[zp + t] = dt_h;
        q[zm + t] = dt_h * EXPORT_WEIGHT;
    }
    // Σ_i s_i(T) ≥ end_stored_kwh.
    let r = rows.le_b.len();
    for i in 0..homes.len() {
        rows.le.push(r, i * per_home + 4 * t_len + t_len - 1, -1.0);
    }
    rows.le_b.push(-end_stored_kwh);
    let x = solve("reference day", Triplets::new(n, n), q, rows)?;
    let sum = |from: usize| {
        x[from..from + t_len]
            .iter()
            .map(|v| v.max(0.0))
            .sum::<f64>()
            * dt_h
    };
    Ok(ReferenceDay {
        import_kwh: sum(zp),
        export_kwh: sum(zm),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(pv: f64, load: f64, capacity: f64, soc0: f64) -> HomeData {
        HomeData {
            pv_kw: vec![pv, pv, 0.0, 0.0],
            load_kw: vec![load; 4],
            capacity_kwh: capacity,
            charge_kw: 5.0,
            discharge_kw: 5.0,
            efficiency: 1.0,
            soc0_kwh: soc0,
            soc_min_kwh: 0.0,
        }
    }

    #[test]
    fn a_neighbours_battery_takes_the_surplus_that_would_be_exported() {
        // Home 0: 3 kW PV for two hours, a full battery; home 1: no PV, an empty battery.
        // Both draw 0.5 kW. Alone, home 0 exports 5 kWh and home 1 imports 2 kWh; together the
        // surplus fills home 1's battery and covers both in the evening.
        let homes = [home(3.0, 0.5, 2.0, 2.0), home(0.0, 0.5, 4.0, 0.0)];
        let r = reference_day(&homes, 1.0, 2.0).unwrap();
        assert!(r.import_kwh < 1e-4, "{r:?}");
        // 6 kWh of PV, 4 kWh of load, 2 kWh stored at the end beyond the 2 kept: 0 export.
        assert!(r.export_kwh < 1e-3, "{r:?}");
        // Asked to end with 6 kWh stored (2 + 6 PV − 4 load leaves 4), it imports the 2 missing.
        let r = reference_day(&homes, 1.0, 6.0).unwrap();
        assert!((r.import_kwh - 2.0).abs() < 1e-3, "{r:?}");
        assert!(reference_day(&homes[..0], 1.0, 0.0).is_err());
    }

    #[test]
    fn pv_is_never_curtailed_to_avoid_export() {
        // A home with more PV than load and no battery room must export the rest.
        let homes = [home(3.0, 0.5, 1.0, 1.0)];
        let r = reference_day(&homes, 1.0, 1.0).unwrap();
        assert!((r.export_kwh - 5.0).abs() < 1e-3, "{r:?}");
        assert!((r.import_kwh - 1.0).abs() < 1e-3, "{r:?}");
    }
}
