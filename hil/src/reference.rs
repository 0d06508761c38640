//! The run beside the best possible day ([`gridlet_core::reference_day`]): the same homes with
//! perfect foresight of their PV and load, at the day-ahead forecast's 15-minute resolution.

use gridlet_core::schedule::HomeData;
use serde_json::{json, Value};

use crate::community::forecast;
use crate::home::{Counters, SimHome};

/// The reference day's import and export beside the run's (`with`) and the same homes without
/// trading (`without`), with the share of the possible import reduction the run achieved.
/// `Null` with a reason unless the run is one whole day from midnight.
pub fn summary(
    sims: &[SimHome],
    with: &Counters,
    without: &Counters,
    start_hour: f64,
    hours: f64,
) -> Value {
    if start_hour != 0.0 || (hours - 24.0).abs() > 1e-9 {
        return json!({"computed": false, "reason": "only for one whole day from midnight"});
    }
    let homes: Result<Vec<HomeData>, _> = sims
        .iter()
        .map(|s| {
            let mut f = forecast(&s.profile);
            // The homes' own batteries may run down to empty; the optimum may too.
            f["soc_min_kwh"] = json!(0.0);
            serde_json::from_value::<HomeData>(f)
        })
        .collect();
    let homes = match homes {
        Ok(h) => h,
        Err(e) => return json!({"computed": false, "reason": e.to_string()}),
    };
    // The optimum must leave the batteries at least as full as the homes without trading did.
    let end_kwh = sims
        .iter()
        .map(|s| s.shadow_stored_wh().max(0) as f64 / 1000.0)
        .sum::<f64>();
    match gridlet_core::reference_day::reference_day(&homes, 0.25, end_kwh) {
        Ok(r) => {
            let (import, export) = (
                (r.import_kwh * 1000.0).round(),
                (r.export_kwh * 1000.0).round(),
            );
            let base = (without.import_mwh / 1000) as f64;
            let run = (with.import_mwh / 1000) as f64;
            let possible = base - import;
            json!({
                "computed": true,
                "import_wh": import as i64,
                "export_wh": export as i64,
                "stored_at_end_wh": (end_kwh * 1000.0).round() as i64,
                "import_reduction_possible_wh": possible as i64,
                "import_reduction_achieved_wh": (base - run) as i64,
                "import_reduction_achieved_pct": if possible > 0.0 {
                    json!(((base - run) / possible * 1000.0).round() / 10.0)
                } else {
                    Value::Null
                },
                "export_above_no_trading_wh": with.export_mwh as i64 / 1000 - without.export_mwh as i64 / 1000,
            })
        }
        Err(e) => json!({"computed": false, "reason": e.to_string()}),
    }
}
