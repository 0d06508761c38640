//! `gridlet schedule`: ADMM on a generated community against the centralized optimum.

mod common;

use std::process::Command;

use common::{run, BIN};

#[test]
fn admm_is_within_one_percent_of_the_central_optimum_and_meets_the_feeder() {
    let (ok, out, err) = run(Command::new(BIN).args(["schedule", "--homes", "12", "--seed", "5"]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for f in [
        "iterations",
        "primal_residual",
        "dual_residual",
        "admm_cost",
        "central_cost",
        "gap",
        "feeder_violation",
        "wall_s",
    ] {
        assert!(v.get(f).is_some(), "{f} missing: {v}");
    }
    let gap = v["gap"].as_f64().unwrap();
    assert!(gap.abs() < 0.01, "{v}");
    assert!(v["feeder_violation"].as_f64().unwrap() < 0.05, "{v}");
    assert!(v["primal_residual"].as_f64().unwrap() <= 0.01, "{v}");
    assert!(v["iterations"].as_u64().unwrap() < 2000, "{v}");
    // The same seed, the same community, the same answer.
    let (_, again, _) = run(Command::new(BIN).args(["schedule", "--homes", "12", "--seed", "5"]));
    let w: serde_json::Value = serde_json::from_str(again.trim()).unwrap();
    assert_eq!(v["admm_cost"], w["admm_cost"]);
    assert_eq!(v["inputs_hash"], w["inputs_hash"]);
    // The contract's replay of the recorded proposals gives the same schedule and prices.
    assert_eq!(v["replay_matches"], true, "{v}");
    assert_eq!(
        v["prices_microcredits_per_kwh"].as_array().unwrap().len(),
        96
    );
    assert_eq!(v["iterations"], w["iterations"]);
}
