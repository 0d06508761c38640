//! An exported chain verified by an independent implementation of `docs/protocol.md` in Python
//! (pure-Python ECDSA, no shared code), which must agree on the tip and state hash, and must
//! reject a tampered export.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{python, run, BIN};

#[test]
fn python_reimplementation_agrees_and_rejects_tampering_with_the_trie_commitment() {
    agrees_and_rejects_tampering("trie");
}

#[test]
fn python_reimplementation_agrees_and_rejects_tampering_with_the_flat_commitment() {
    agrees_and_rejects_tampering("flat");
}

fn agrees_and_rejects_tampering(commitment: &str) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    let (ok, _, err) = run(Command::new(BIN).args([
        "sim-chain",
        "--homes",
        "4",
        "--slots",
        "60",
        "--seed",
        "11",
        "--market",
        "none",
        "--txs-per-slot",
        "8",
        "--state-commitment",
        commitment,
        "--report",
        report.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    let data = report.join("homes/2");
    let (ok, verified, err) =
        run(Command::new(BIN).args(["chain", "verify", "--data", data.to_str().unwrap()]));
    assert!(ok, "{err}");
    let verified: serde_json::Value = serde_json::from_str(&verified).unwrap();
    let (ok, export, _) =
        run(Command::new(BIN).args(["chain", "export", "--data", data.to_str().unwrap()]));
    assert!(ok);
    let export_path = dir.path().join("chain.jsonl");
    std::fs::write(&export_path, &export).unwrap();

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/verify_export.py");
    let genesis = data.join("genesis.json");
    let (ok, out, err) = run(Command::new(python()).args([
        script.to_str().unwrap(),
        genesis.to_str().unwrap(),
        export_path.to_str().unwrap(),
    ]));
    assert!(ok, "python verifier: {err}");
    let py: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(py["height"], verified["height"]);
    assert_eq!(py["tip_hash"], verified["tip_hash"]);
    assert_eq!(py["state_hash"], verified["state_hash"]);
    // Finality too: every certificate checked from the document alone.
    assert_eq!(py["finalized_height"], verified["finalized_height"]);
    assert_eq!(py["certificates"], verified["certificates"]);
    assert!(py["certificates"].as_u64().unwrap() > 0, "{py}");

    // Raise one transfer's amount in the export: the Python side must refuse it.
    let mut lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let block = lines
        .iter_mut()
        .find(|b| b["tx_count"].as_u64().unwrap() > 0)
        .unwrap();
    let hex = block["transactions"][0]["hex"].as_str().unwrap().to_owned();
    let mut bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let amount_last_byte = bytes.len() - 64 - 1;
    bytes[amount_last_byte] ^= 0x01;
    let tampered: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    block["transactions"][0]["hex"] = serde_json::Value::String(tampered);
    let tampered_path = dir.path().join("tampered.jsonl");
    std::fs::write(
        &tampered_path,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let (ok, _, err) = run(Command::new(python()).args([
        script.to_str().unwrap(),
        genesis.to_str().unwrap(),
        tampered_path.to_str().unwrap(),
    ]));
    assert!(!ok);
    assert!(err.contains("INVALID"), "{err}");

    // A certificate with one signature byte changed: refused too.
    let mut lines: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let block = lines
        .iter_mut()
        .rev()
        .find(|b| b["certificate"].is_string())
        .unwrap();
    let mut cert = block["certificate"].as_str().unwrap().to_owned();
    let at = cert.len() - 2;
    let flipped = if &cert[at..] == "00" { "01" } else { "00" };
    cert.replace_range(at.., flipped);
    block["certificate"] = serde_json::Value::String(cert);
    std::fs::write(
        &tampered_path,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let (ok, _, err) = run(Command::new(python()).args([
        script.to_str().unwrap(),
        genesis.to_str().unwrap(),
        tampered_path.to_str().unwrap(),
    ]));
    assert!(!ok);
    assert!(err.contains("certificate"), "{err}");
}
