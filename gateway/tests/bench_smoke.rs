//! The benchmarks run and report every figure they promise (no timing is asserted here: speed
//! is shown by running them, not by tests).

mod common;

use std::process::Command;

use common::*;

#[test]
fn bench_commands_print_one_json_line_with_their_figures() {
    for (name, keys) in [
        (
            "ledger",
            &[
                "raw_verify_per_s",
                "validate_tx_per_s_1core",
                "validate_tx_per_s_2core",
                "ratio_1core",
                "ratio_2core",
                "commit_blocks_per_s",
            ][..],
        ),
        ("market", &["clear_ms", "sort_ms", "ratio"][..]),
        (
            "consensus",
            &[
                "ms_per_block",
                "raw_verify_ms_per_block",
                "ratio_to_raw_verify",
                "publishes_per_block",
                "bus_bytes_delivered_per_block",
                "certificate_bytes",
            ][..],
        ),
        (
            "trades",
            &["p50_slots", "p99_slots", "quorum", "trades"][..],
        ),
        (
            "modbus",
            &[
                "raw_rtt_p50_us",
                "cycle_p50_us",
                "cycle_p99_us",
                "cycles_per_s",
                "ratio",
            ][..],
        ),
    ] {
        let (ok, out, err) = run(Command::new(BIN).args(["bench", name, "--seconds", "0.2"]));
        assert!(ok, "{name}: {err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if name == "consensus" {
            // One row per community size; the largest carries every figure.
            let rows = v["rows"].as_array().unwrap().clone();
            assert_eq!(rows.len(), 4, "{out}");
            v = rows[3].clone();
            assert_eq!(v["n"], 1000);
            assert_eq!(v["quorum"], 667);
        }
        for k in keys {
            assert!(
                v[k].as_f64().is_some_and(|x| x > 0.0),
                "{name}.{k} missing or zero: {out}"
            );
        }
    }
}
