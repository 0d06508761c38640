//! `gridlet market clear`: the hand-worked round from a file, both pricing modes, and a clear
//! refusal of malformed input.

mod common;

use std::process::Command;

use common::*;

fn clear(path: &std::path::Path) -> (bool, String, String) {
    run(Command::new(BIN).args(["market", "clear", "--input", path.to_str().unwrap()]))
}

#[test]
fn hand_worked_round_in_both_pricing_modes() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/auction.json");
    let (ok, out, err) = clear(&file);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["fills"],
        serde_json::json!([
            {"bid": "b2", "energy_wh": 1500, "price": 250000, "paid": 375000},
            {"bid": "b1", "energy_wh": 1000, "price": 200000, "paid": 200000},
            {"bid": "b4", "energy_wh": 500, "price": 200000, "paid": 100000}
        ])
    );
    assert_eq!(
        v["rejected"],
        serde_json::json!([
            {"bid": "b3", "reason": "above_grid_tariff"},
            {"bid": "b5", "reason": "below_floor"},
            {"bid": "b6", "reason": "empty"}
        ])
    );
    assert_eq!(
        v["sellers"],
        serde_json::json!([
            {"id": "s1", "sold_wh": 1000, "revenue": 225000},
            {"id": "s2", "sold_wh": 2000, "revenue": 450000}
        ])
    );
    assert_eq!(
        (
            v["sold_wh"].as_u64(),
            v["unsold_wh"].as_u64(),
            v["unmet_wh"].as_u64(),
            v["revenue"].as_u64()
        ),
        (Some(3000), Some(0), Some(1500), Some(675000))
    );

    let dir = tempfile::tempdir().unwrap();
    let uniform = dir.path().join("uniform.json");
    std::fs::write(
        &uniform,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("pay_as_bid", "uniform"),
    )
    .unwrap();
    let (ok, out, _) = clear(&uniform);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["revenue"], 600000);
    assert!(v["fills"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["price"] == 200000));
}

#[test]
fn malformed_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("not-json", "{ sellers: "),
        (
            "missing",
            r#"{"grid_tariff": 1, "floor_price": 0, "sellers": []}"#,
        ),
        (
            "typo",
            r#"{"grid_tariff": 1, "floor_price": 0, "sellers": [], "bids": [], "pricing": "cheapest"}"#,
        ),
        (
            "negative-seller",
            r#"{"grid_tariff": 1, "floor_price": 0, "sellers": [{"id": "s", "energy_wh": -1}], "bids": []}"#,
        ),
        (
            "floor-above",
            r#"{"grid_tariff": 1, "floor_price": 2, "sellers": [], "bids": []}"#,
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let (ok, _, err) = clear(&path);
        assert!(!ok, "{name} was accepted");
        assert!(err.starts_with("error: "), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn no_supply_and_no_bids() {
    let dir = tempfile::tempdir().unwrap();
    let no_supply = dir.path().join("no-supply.json");
    std::fs::write(
        &no_supply,
        r#"{"grid_tariff": 300000, "floor_price": 50000, "sellers": [], "bids": [{"id": "b", "energy_wh": 700, "price": 100000, "seq": 1}]}"#,
    )
    .unwrap();
    let (ok, out, err) = clear(&no_supply);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["fills"], serde_json::json!([]));
    assert_eq!(
        (
            v["sold_wh"].as_u64(),
            v["unmet_wh"].as_u64(),
            v["revenue"].as_u64()
        ),
        (Some(0), Some(700), Some(0))
    );
    let no_bids = dir.path().join("no-bids.json");
    std::fs::write(
        &no_bids,
        r#"{"grid_tariff": 300000, "floor_price": 50000, "pricing": "uniform", "sellers": [{"id": "s", "energy_wh": 900}], "bids": []}"#,
    )
    .unwrap();
    let (ok, out, err) = clear(&no_bids);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["sellers"],
        serde_json::json!([{"id": "s", "sold_wh": 0, "revenue": 0}])
    );
    assert_eq!(
        (v["unsold_wh"].as_u64(), v["unmet_wh"].as_u64()),
        (Some(900), Some(0))
    );
}
