//! The consensus fault suite, short (`gridlet faults --cycles 1`, about two minutes): five real
//! gateways behind their own TCP relays go through a 2 | 3 and a 1 | 4 partition, a disconnect,
//! a SIGSTOP and a SIGKILL with restart. No home may finalize anything another home contradicts,
//! no battery may release a trade that is not final everywhere, and every home must be back on
//! the one final chain after each heal. The long run is `gridlet faults --cycles 10`.

mod common;

use std::process::Command;

use common::{run, BIN};

#[test]
fn partitions_disconnects_stops_and_kills_leave_one_final_chain() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    let (ok, out, err) = run(Command::new(BIN).args([
        "faults",
        "--cycles",
        "1",
        "--partition-s",
        "10",
        "--disconnect-s",
        "6",
        "--stop-s",
        "6",
        "--settle-s",
        "10",
        "--report",
        report.to_str().unwrap(),
    ]));
    let line = out
        .lines()
        .find(|l| l.contains("\"bench\":\"faults\""))
        .unwrap_or("");
    assert!(ok, "gridlet faults failed: {line}\n{err}");
    let f: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(f["perturbations"], 5, "{f}");
    assert_eq!(f["partition_cycles"], 2, "{f}");
    assert_eq!(f["conflicting_final_blocks"], 0, "{f}");
    assert_eq!(f["releases_not_final_on_every_home"], 0, "{f}");
    assert_eq!(f["minority_finalized_while_cut_off"], 0, "{f}");
    assert_eq!(f["homes_on_different_final_chains_after_heal"], 0, "{f}");
    assert_eq!(f["not_rejoined_within_settle"], 0, "{f}");
    assert!(f["final_height"].as_u64().unwrap() > 60, "{f}");
}
