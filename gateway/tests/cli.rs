//! The command line as a user meets it: key files, genesis, verify, export and the sim.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gridlet");

fn gridlet(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("gridlet runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn keygen_writes_an_owner_only_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("home.key");
    let (ok, out, _) = gridlet(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["public_key"].as_str().unwrap().len(), 66);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key).unwrap();
    let (ok, _, err) = gridlet(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // A secret key others can read is refused when used.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let g = dir.path().join("g");
    let (ok, _, _) = gridlet(&[
        "genesis",
        "--member",
        &format!("a,{0},{0}", key.display()),
        "--member",
        &format!("b,{0}.pub,{0}.pub", key.display()),
        "--data",
        g.to_str().unwrap(),
    ]);
    assert!(!ok, "duplicate member keys must be refused");
    // A valid community with that key, so `produce` reaches the key check (not a missing genesis).
    let other = dir.path().join("other.key");
    assert!(gridlet(&["keygen", "--out", other.to_str().unwrap()]).0);
    let (ok, _, err) = gridlet(&[
        "genesis",
        "--member",
        &format!("a,{0}.pub,{0}.pub", key.display()),
        "--member",
        &format!("b,{0}.pub,{0}.pub", other.display()),
        "--data",
        g.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = gridlet(&[
        "chain",
        "produce",
        "--data",
        g.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("chmod"), "{err}");
}

#[test]
fn several_members_after_one_flag_as_the_readme_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = Vec::new();
    for name in ["a", "b", "c"] {
        let key = dir.path().join(format!("{name}.key"));
        assert!(gridlet(&["keygen", "--out", key.to_str().unwrap()]).0);
        members.push(format!("{name},{0}.pub,{0}.pub", key.display()));
    }
    let out = dir.path().join("genesis.json");
    let mut args = vec!["genesis", "--member"];
    args.extend(members.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    let (ok, _, err) = gridlet(&args);
    assert!(ok, "{err}");
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let names: Vec<&str> = genesis["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "{genesis}");
}

#[test]
fn each_members_equipment_is_in_genesis_with_the_defaults_for_what_it_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = Vec::new();
    for (name, tail) in [("a", ",8000,3000,device"), ("b", ",0,0"), ("c", "")] {
        let key = dir.path().join(format!("{name}.key"));
        assert!(gridlet(&["keygen", "--out", key.to_str().unwrap()]).0);
        members.push(format!("{name},{0}.pub,{0}.pub{tail}", key.display()));
    }
    let out = dir.path().join("genesis.json");
    let mut args = vec!["genesis", "--pv-w", "4200", "--member"];
    args.extend(members.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    let (ok, _, err) = gridlet(&args);
    assert!(ok, "{err}");
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let equipment: Vec<String> = genesis["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["equipment"].to_string())
        .collect();
    assert_eq!(
        equipment,
        [
            r#"{"battery_wh":8000,"pv_w":3000,"signer":"device"}"#,
            r#"{"battery_wh":0,"pv_w":0,"signer":"gateway"}"#,
            r#"{"battery_wh":10000,"pv_w":4200,"signer":"gateway"}"#,
        ],
        "{genesis}"
    );
    // A spec that is not numbers and a signer, by name.
    let bad = members[0].replace(",device", ",battery");
    let (ok, _, err) = gridlet(&["genesis", "--member", &bad]);
    assert!(!ok);
    assert!(err.contains("signer \"battery\" is neither"), "{err}");
    let bad = members[0].replace(",8000,", ",8kWh,");
    let (ok, _, err) = gridlet(&["genesis", "--member", &bad]);
    assert!(!ok);
    assert!(
        err.contains("battery Wh \"8kWh\" is not a whole number"),
        "{err}"
    );
    // `--help` shows the defaults.
    let (_, help, _) = gridlet(&["genesis", "--help"]);
    for default in ["[default: 10000]", "[default: 5000]", "[default: gateway]"] {
        assert!(help.contains(default), "{help}");
    }
}

#[test]
fn a_bad_log_level_is_refused_by_name() {
    let (ok, _, err) = gridlet(&["--log-level", "loud", "chain", "verify", "--data", "."]);
    assert!(!ok);
    assert!(err.contains("--log-level \"loud\""), "{err}");
    // A good one is taken by every command (global flag).
    let (_, _, err) = gridlet(&["chain", "verify", "--data", ".", "--log-level", "warn"]);
    assert!(err.contains("genesis"), "{err}");
}

#[test]
fn a_broken_member_argument_is_named() {
    let (ok, _, err) = gridlet(&["genesis", "--member", "only-a-name"]);
    assert!(!ok);
    assert!(err.contains("NAME,KEY_FILE,ATTESTOR_KEY_FILE"), "{err}");
}

#[test]
fn sim_homes_agree_and_verify_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let (ok, out, err) = gridlet(&[
        "sim-chain",
        "--homes",
        "3",
        "--slots",
        "40",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["height"], 40);
    assert_eq!(summary["invariants"]["credits_conserved"], true);
    assert_eq!(summary["invariants"]["all_homes_same_tip"], true);
    assert_eq!(
        summary["invariants"]["every_release_matches_one_trade"],
        true
    );
    assert_eq!(
        summary["invariants"]["delivered_energy_traces_to_attested_generation"],
        true
    );
    assert!(summary["transactions_committed"].as_u64().unwrap() > 0);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(written, summary);

    let mut tips = Vec::new();
    for home in 0..3 {
        let data = report.join("homes").join(home.to_string());
        let (ok, out, err) = gridlet(&["chain", "verify", "--data", data.to_str().unwrap()]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["height"], 40);
        tips.push(v["tip_hash"].as_str().unwrap().to_owned());
    }
    assert!(tips.iter().all(|t| *t == tips[0]));
    assert_eq!(tips[0], summary["tip_hash"].as_str().unwrap());

    // Export: one JSON line per block, each transaction with its canonical hex.
    let data = report.join("homes/0");
    let (ok, out, _) = gridlet(&["chain", "export", "--data", data.to_str().unwrap()]);
    assert!(ok);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    // `| head -1`: the reader leaves after one line; the export stops without an error.
    // (The export is larger than a pipe's buffer, so the writer does meet the closed pipe.)
    assert!(out.len() > 2 * 65_536, "{} bytes", out.len());
    {
        use std::io::BufRead;
        let mut child = Command::new(BIN)
            .args(["chain", "export", "--data", data.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with('{'), "{first}");
        let done = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{err}");
        assert!(err.is_empty(), "{err}");
    }
    // A data dir in use (here this test holds the store open, as a running gateway would):
    // verify and export say so and what to do, not the store's raw lock error.
    {
        let _held = gridlet_ledger::store::RedbStore::open(&data).unwrap();
        for what in ["verify", "export"] {
            let (ok, _, err) = gridlet(&["chain", what, "--data", data.to_str().unwrap()]);
            assert!(!ok);
            assert!(
                err.contains("in use by another process") && err.contains("/api/chain/final"),
                "{what}: {err}"
            );
        }
    }
    let with_tx = lines
        .iter()
        .find(|b| b["tx_count"].as_u64().unwrap() > 0)
        .unwrap();
    let tx = &with_tx["transactions"][0];
    assert_eq!(tx["tx"]["payload"]["kind"], "transfer");
    assert!(tx["hex"].as_str().unwrap().len() > 2 * 150);

    // Tamper with one stored block: verify names it and fails; nothing panics.
    {
        use gridlet_ledger::store::{BlockStore, RedbStore};
        let data = report.join("homes/1");
        let mut store = RedbStore::open(&data).unwrap();
        let mut bytes = store.get(20).unwrap().unwrap();
        let i = bytes.len() - 70;
        bytes[i] ^= 0x01;
        store.put(20, &bytes).unwrap();
        store.flush().unwrap();
    }
    let data = report.join("homes/1");
    let (ok, _, err) = gridlet(&["chain", "verify", "--data", data.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("block 20"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Blocks lost as a power cut loses them (the store never wrote them): the
    // final mark, fsync'd beside the store, makes verify fail and say which.
    {
        use gridlet_ledger::store::{BlockStore, RedbStore};
        let data = report.join("homes/2");
        let mut store = RedbStore::open(&data).unwrap();
        store.truncate_above(30).unwrap();
        store.flush().unwrap();
    }
    let data = report.join("homes/2");
    let (ok, _, err) = gridlet(&["chain", "verify", "--data", data.to_str().unwrap()]);
    assert!(!ok, "a shorter store than acknowledged verifies: {err}");
    assert!(
        err.contains("lost final blocks") && err.contains("31..=40"),
        "{err}"
    );

    // A finished sim directory cannot be reused by accident.
    let (ok, _, err) = gridlet(&["sim-chain", "--report", report.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_simulated_day_trades_energy_and_every_trade_has_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let (ok, out, err) = gridlet(&[
        "sim-chain",
        "--homes",
        "5",
        "--slots",
        "240",
        "--seed",
        "4",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(summary["market"]["trades"].as_u64().unwrap() > 10, "{out}");
    assert!(summary["market"]["wh_delivered"].as_u64().unwrap() > 0);
    let data = report.join("homes/3");
    let (ok, out, err) = gridlet(&["chain", "trades", "--data", data.to_str().unwrap()]);
    assert!(ok, "{err}");
    let trades: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        trades.len() as u64,
        summary["market"]["trades"].as_u64().unwrap()
    );
    for t in &trades {
        let from: u64 = t["provenance"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["wh"].as_u64().unwrap())
            .sum();
        assert_eq!(from, t["energy_wh"].as_u64().unwrap(), "{t}");
        assert!(t["provenance"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["home"] == t["seller"]));
        if let Some(d) = t["delivered_wh"].as_u64() {
            assert!(d <= t["energy_wh"].as_u64().unwrap());
        }
    }
}

/// A home's files for `gridlet check`: keys, a genesis with this home, a config with `extra`.
fn check_home(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    if !dir.join("genesis.json").exists() {
        common::home_files(dir);
        let other = dir.join("other.key");
        assert!(gridlet(&["keygen", "--out", other.to_str().unwrap()]).0);
    }
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\nkey_file = \"home.key\"\ngenesis = \"genesis.json\"\n\
             attestor_key_file = \"battery.key\"\n{extra}\n[bus]\nembedded_port = 18830\n"
        ),
    )
    .unwrap();
    config
}

fn check(config: &std::path::Path) -> (bool, String) {
    let (ok, out, _) = gridlet(&["check", "--config", config.to_str().unwrap()]);
    (ok, out)
}

#[test]
fn check_holds_the_config_to_who_signs_as_genesis_declares_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = check_home(d, "");
    // The same home, declared device-signed: its battery holds the key.
    common::home_genesis(d, ",9000,4000,device");
    let (ok, out) = check(&config);
    assert!(!ok);
    assert!(
        out.contains("FAIL  genesis:") && out.contains("the key belongs in the battery"),
        "{out}"
    );
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("attestor_key_file = \"battery.key\"\n", ""),
    )
    .unwrap();
    let (ok, out) = check(&config);
    assert!(ok, "{out}");
    assert!(
        out.contains("its battery signs its claims, at most 13000 Wh attested and not delivered"),
        "{out}"
    );
}

#[test]
fn check_passes_a_sound_home_and_names_what_is_wrong_in_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = check_home(d, "");
    let (ok, out) = check(&config);
    assert!(ok, "{out}");
    assert!(out.lines().all(|l| l.starts_with("ok ")), "{out}");
    assert!(out.contains("member home-0 of 1"), "{out}");

    // A field the gateway does not know: refused, naming it.
    let (ok, out) = check(&check_home(d, "colour = \"blue\""));
    assert!(!ok);
    assert!(
        out.starts_with("FAIL  config:") && out.contains("colour"),
        "{out}"
    );

    // A forecast file that is missing, or whose values do not fit: refused, naming the field
    // and what is wrong.
    let (ok, out) = check(&check_home(d, "forecast = \"nowhere.json\""));
    assert!(!ok);
    assert!(
        out.contains("config field `forecast`") && out.contains("nowhere.json"),
        "{out}"
    );
    std::fs::write(
        d.join("forecast.json"),
        r#"{"pv_kw": [0.0, 1.0], "load_kw": [0.5], "capacity_kwh": 10.0, "charge_kw": 3.0,
            "discharge_kw": 3.0, "efficiency": 1.0, "soc0_kwh": 5.0, "soc_min_kwh": 0.0}"#,
    )
    .unwrap();
    let (ok, out) = check(&check_home(d, "forecast = \"forecast.json\""));
    assert!(!ok);
    assert!(
        out.contains("config field `forecast`")
            && out.contains("one non-negative value per interval"),
        "{out}"
    );

    // A device that does not answer (a loopback port nobody listens on).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pv = format!("[pv]\nhost = \"127.0.0.1\"\nport = {closed}\nunit = 1\n");
    let (ok, out) = check(&check_home(d, &pv));
    assert!(!ok);
    assert!(
        out.contains("FAIL  pv: 127.0.0.1:") && out.contains("does not answer"),
        "{out}"
    );

    // A SunSpec meter: without its host the config names the field; one that does not answer
    // is named like any device.
    let (ok, out) = check(&check_home(d, "[meter]\nkind = \"sunspec\"\nunit = 1\n"));
    assert!(!ok);
    assert!(
        out.contains("meter.host") && out.contains("required for kind = \"sunspec\""),
        "{out}"
    );
    let meter = format!("[meter]\nkind = \"sunspec\"\nhost = \"127.0.0.1\"\nport = {closed}\n");
    let (ok, out) = check(&check_home(d, &meter));
    assert!(!ok);
    assert!(out.contains("FAIL  meter: 127.0.0.1:"), "{out}");

    // A key others can read, and a key that is not a member.
    let config = check_home(d, "");
    std::fs::set_permissions(d.join("home.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check(&config);
    assert!(!ok);
    assert!(
        out.contains("FAIL  key_file: config field `key_file`") && out.contains("chmod 600"),
        "{out}"
    );
    std::fs::set_permissions(d.join("home.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("key_file = \"home.key\"", "key_file = \"other.key\""),
    )
    .unwrap();
    // A key outside the genesis may be a home about to join: the check says how it joins.
    let (_, out) = check(&config);
    assert!(
        out.contains("ok    genesis:") && out.contains("is not a genesis member"),
        "{out}"
    );

    // The shipped example: its key files and genesis are not there on this machine, and the
    // check says so line by line.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/home.toml");
    let (ok, out, _) = gridlet(&["check", "--offline", "--config", example]);
    assert!(!ok);
    assert!(out.starts_with("ok    config:"), "{out}");
    assert!(
        out.contains("FAIL  key_file:") && out.contains("FAIL  genesis:"),
        "{out}"
    );
}

#[test]
fn device_faults_prints_one_line_per_row_and_admits_nothing_broken() {
    let (ok, out, err) = gridlet(&[
        "device-faults",
        "--scale",
        "0.02",
        "--outages-s",
        "0.5",
        "--stale-after-ms",
        "200",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["row"].as_str().unwrap()).collect();
    assert_eq!(names, ["D1", "D2", "D3", "D4", "V1"], "{out}");
    assert_eq!(rows[0]["wrong_or_admitted_from_exception"], 0, "{out}");
    assert_eq!(rows[1]["misattributed"], 0, "{out}");
    assert_eq!(rows[2]["accepted_with_wrong_words"], 0, "{out}");
    assert_eq!(rows[4]["admitted"], 0, "{out}");
    let (ok, _, err) = gridlet(&["device-faults", "--scale=-1"]);
    assert!(!ok && err.contains("--scale"), "{err}");
}

#[test]
fn with_day_blocks_the_sun_rises_every_day() {
    let dir = tempfile::tempdir().unwrap();
    let attested = |slots: &str, name: &str| -> (u64, usize) {
        let report = dir.path().join(name);
        let (ok, out, err) = gridlet(&[
            "sim-chain",
            "--homes",
            "3",
            "--slots",
            slots,
            "--day-blocks",
            "240",
            "--memory-store",
            "--report",
            report.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        let days = summary["commit_ms_median_by_day"].as_array().unwrap().len();
        (summary["market"]["attested_wh"].as_u64().unwrap(), days)
    };
    let (one_day, days) = attested("240", "one");
    assert_eq!(days, 1);
    assert!(one_day > 0);
    // Two days of 240 blocks: two days of sun (before, the run was one day, whatever its
    // length, and attested what one day does).
    let (two_days, days) = attested("480", "two");
    assert_eq!(days, 2);
    let ratio = two_days as f64 / one_day as f64;
    assert!(
        (1.8..=2.2).contains(&ratio),
        "{two_days} Wh over two days, {one_day} over one"
    );
}
