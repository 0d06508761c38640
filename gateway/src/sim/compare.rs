//! `gridlet sim --compare`: the same community (seed, homes, one day from midnight) under each
//! market — live sale contracts, sealed-bid auctions, the day-ahead schedule — beside the homes
//! without trading and the perfect-foresight reference day, in one table (docs/market.md).

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use super::SimOptions;

/// The markets compared: name, auctions, schedule.
const MODES: [(&str, bool, bool); 3] = [
    ("live", false, false),
    ("auctions", true, false),
    ("schedule", false, true),
];

/// Runs every market into `o.report/<mode>`, writes `o.report/compare.json` and returns it
/// with the table as Markdown.
pub fn run(o: &SimOptions) -> Result<(Value, String)> {
    ensure!(
        o.start_hour == 0.0 && (o.hours - 24.0).abs() < 1e-9,
        "--compare runs one whole day from midnight (the schedule plans whole days, the \
         reference day is one): leave --start-hour and --hours at their defaults"
    );
    ensure!(
        !o.report.exists(),
        "{} already exists: choose a new report directory",
        o.report.display()
    );
    std::fs::create_dir_all(&o.report)?;
    let mut runs = Vec::new();
    for (mode, auctions, schedule) in MODES {
        tracing::info!(mode, "comparing: simulating the day");
        let summary = super::run(&SimOptions {
            report: o.report.join(mode),
            auctions,
            schedule,
            ..o.clone()
        })?;
        runs.push((mode, summary));
    }
    let (value, table) = compare(&runs);
    std::fs::write(
        o.report.join("compare.json"),
        serde_json::to_string_pretty(&value)? + "\n",
    )?;
    Ok((value, table))
}

fn u(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Spread of the trade prices: (min, max, relative spread (max − min) / mean in %).
fn price_spread(prices: &Value) -> Value {
    let p: Vec<u64> = prices
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["price"].as_u64()).collect())
        .unwrap_or_default();
    let (Some(min), Some(max)) = (p.iter().min().copied(), p.iter().max().copied()) else {
        return Value::Null;
    };
    let mean = p.iter().sum::<u64>() as f64 / p.len() as f64;
    let (min_f, max_f) = (min as f64, max as f64);
    json!({
        "min": min,
        "max": max,
        "spread_pct": if mean > 0.0 { ((max_f - min_f) / mean * 1000.0).round() / 10.0 } else { 0.0 },
    })
}

/// One row per market from its `report.json`, and the Markdown table.
pub fn compare(runs: &[(&str, Value)]) -> (Value, String) {
    let mut rows = Vec::new();
    let first = runs.first().map_or(&Value::Null, |(_, s)| s);
    let grid0 = &first["grid"];
    let reference = &first["reference_day"];
    let no_trading_export = u(&grid0["community_export_without_trading_wh"]);
    for (mode, s) in runs {
        let (g, m, r) = (&s["grid"], &s["market"], &s["reference_day"]);
        let hours = s["hours"].as_f64().unwrap_or(24.0).max(1e-9);
        let trades = u(&m["trades"]);
        let deviation: Option<i64> = s["schedule"]["abs_deviation_wh"]
            .as_object()
            .map(|o| o.values().map(u).sum());
        rows.push(json!({
            "mode": mode,
            "import_wh": u(&g["community_import_wh"]),
            "export_wh": u(&g["community_export_wh"]),
            "self_sufficiency_pct": g["self_sufficiency_pct"],
            "import_reduction_achieved_pct": r["import_reduction_achieved_pct"],
            "export_above_no_trading_wh": u(&g["community_export_wh"]) - no_trading_export,
            "trades": trades,
            "trades_per_hour": (trades as f64 / hours * 10.0).round() / 10.0,
            "wh_delivered": u(&m["wh_delivered_on_chain"]),
            "prices": price_spread(&m["trade_prices"]),
            "abs_metered_minus_scheduled_wh": deviation,
            "stored_at_end_wh": g["stored_wh_at_end"],
        }));
    }
    let goal = |mode: &str| if mode == "schedule" { 95.0 } else { 80.0 };
    let goals: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mode = r["mode"].as_str().unwrap_or_default();
            let achieved = r["import_reduction_achieved_pct"].as_f64();
            json!({
                "mode": mode,
                "import_reduction_goal_pct": goal(mode),
                "import_reduction_met": achieved.is_some_and(|a| a >= goal(mode)),
                "exports_no_more_than_no_trading": u(&r["export_above_no_trading_wh"]) <= 0,
            })
        })
        .collect();
    let value = json!({
        "seed": first["seed"],
        "homes": first["homes"],
        "no_trading": {
            "import_wh": u(&grid0["community_import_without_trading_wh"]),
            "export_wh": no_trading_export,
            "self_sufficiency_pct": grid0["self_sufficiency_without_trading_pct"],
            "stored_at_end_wh": grid0["stored_wh_at_end_without_trading"],
        },
        "reference_day": {
            "import_wh": reference["import_wh"],
            "export_wh": reference["export_wh"],
            "stored_at_end_wh": reference["stored_at_end_wh"],
        },
        "markets": rows,
        "goals": goals,
    });
    let table = markdown(&value);
    (value, table)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn markdown(v: &Value) -> String {
    let mut t = String::from(
        "| | import Wh | export Wh | self-sufficiency % | of the possible import reduction % \
         | export vs no trading Wh | trades (per hour) | Wh delivered | prices µcr/kWh (spread %) \
         | Σ|metered − scheduled| Wh | stored at the end Wh |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let nt = &v["no_trading"];
    t += &format!(
        "| no trading | {} | {} | {} | 0 | 0 | – | – | – | – | {} |\n",
        cell(&nt["import_wh"]),
        cell(&nt["export_wh"]),
        cell(&nt["self_sufficiency_pct"]),
        cell(&nt["stored_at_end_wh"]),
    );
    for r in v["markets"].as_array().into_iter().flatten() {
        let prices = match &r["prices"] {
            Value::Null => "–".to_owned(),
            p => format!(
                "{}–{} ({})",
                cell(&p["min"]),
                cell(&p["max"]),
                cell(&p["spread_pct"])
            ),
        };
        t += &format!(
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |\n",
            cell(&r["mode"]),
            cell(&r["import_wh"]),
            cell(&r["export_wh"]),
            cell(&r["self_sufficiency_pct"]),
            cell(&r["import_reduction_achieved_pct"]),
            cell(&r["export_above_no_trading_wh"]),
            cell(&r["trades"]),
            cell(&r["trades_per_hour"]),
            cell(&r["wh_delivered"]),
            prices,
            cell(&r["abs_metered_minus_scheduled_wh"]),
            cell(&r["stored_at_end_wh"]),
        );
    }
    let rf = &v["reference_day"];
    t += &format!(
        "| reference day (perfect foresight) | {} | {} | – | 100 | – | – | – | – | – | {} |\n",
        cell(&rf["import_wh"]),
        cell(&rf["export_wh"]),
        cell(&rf["stored_at_end_wh"]),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(mode: &str, import: i64, export: i64, achieved: f64) -> (&str, Value) {
        (
            mode,
            json!({
                "seed": 1, "homes": 5, "hours": 24.0,
                "grid": {
                    "community_import_wh": import, "community_export_wh": export,
                    "community_import_without_trading_wh": 4_000,
                    "community_export_without_trading_wh": 10_000,
                    "self_sufficiency_pct": 80.0, "self_sufficiency_without_trading_pct": 60.0,
                    "stored_wh_at_end": 5_000 + import, "stored_wh_at_end_without_trading": 6_000,
                },
                "market": {
                    "trades": 12, "wh_delivered_on_chain": 9_000,
                    "trade_prices": [{"hour": 1.0, "price": 100}, {"hour": 2.0, "price": 300}],
                },
                "reference_day": {"import_wh": 1_000, "export_wh": 7_000,
                                  "import_reduction_achieved_pct": achieved,
                                  "stored_at_end_wh": 6_500},
                "schedule": if mode == "schedule" {
                    json!({"abs_deviation_wh": {"home-0": 50, "home-1": 25}})
                } else { Value::Null },
            }),
        )
    }

    #[test]
    fn one_row_per_market_with_its_goal_beside_no_trading_and_the_reference() {
        let runs = [
            report("live", 1_600, 9_000, 80.0),
            report("schedule", 1_200, 10_500, 93.3),
        ];
        let (v, table) = compare(&runs);
        assert_eq!(v["no_trading"]["import_wh"], 4_000);
        assert_eq!(v["reference_day"]["export_wh"], 7_000);
        let live = &v["markets"][0];
        assert_eq!(live["trades_per_hour"], 0.5);
        assert_eq!(live["export_above_no_trading_wh"], -1_000);
        assert_eq!(live["prices"]["spread_pct"], 100.0);
        assert_eq!(live["abs_metered_minus_scheduled_wh"], Value::Null);
        assert_eq!(v["markets"][1]["abs_metered_minus_scheduled_wh"], 75);
        assert_eq!(v["goals"][0]["import_reduction_met"], true);
        assert_eq!(
            v["goals"][1]["import_reduction_met"], false,
            "95 % for the schedule"
        );
        assert_eq!(v["goals"][1]["exports_no_more_than_no_trading"], false);
        assert!(table.contains("| live | 1600 | 9000 | 80.0 | 80.0 | -1000 | 12 (0.5) |"));
        assert!(table.contains("| reference day (perfect foresight) | 1000 | 7000 |"));
        // What each market left in the batteries, beside no trading and the reference day.
        assert_eq!(live["stored_at_end_wh"], 6_600);
        assert!(
            table.contains("| no trading | 4000 | 10000 | 60.0 | 0 | 0 | – | – | – | – | 6000 |")
        );
        assert!(table.contains("| – | 6600 |\n"), "{table}");
        assert!(table.contains("| – | 6500 |\n"), "{table}");
        assert_eq!(table.lines().count(), 6, "{table}");
    }
}
