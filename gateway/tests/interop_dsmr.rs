//! DSMR P1 against dsmr-parser (PyPI) as the reference decoder, and over a real serial line
//! (a socat pseudo-terminal pair at 115200 baud).

mod common;

use std::process::Command;

use gridlet_hil::pty::PtyPair;

use common::*;

const DIALECTS: [(&str, &str); 4] = [
    ("v2_2", "V2_2"),
    ("v4", "V4"),
    ("v5", "V5"),
    ("fluvius", "BELGIUM_FLUVIUS"),
];

fn generate(dir: &std::path::Path, dialect: &str, seed: u64, crc: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{dialect}-{seed}-{crc}.txt"));
    let (ok, _, err) = run(Command::new(BIN).args([
        "dsmr",
        "generate",
        "--dialect",
        dialect,
        "--seed",
        &seed.to_string(),
        "--crc",
        crc,
        "--out",
        path.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    path
}

fn ours(telegram: &std::path::Path) -> (bool, serde_json::Value, std::path::PathBuf) {
    let (ok, out, _) = run(Command::new(BIN).args(["dsmr", "parse", telegram.to_str().unwrap()]));
    let json_path = telegram.with_extension("json");
    std::fs::write(&json_path, &out).unwrap();
    (ok, serde_json::from_str(&out).unwrap(), json_path)
}

#[test]
fn our_parser_agrees_with_dsmr_parser_on_every_obis_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut failure_log_lengths = std::collections::BTreeSet::new();
    let mut unpadded_seen = 0;
    for (dialect, spec) in DIALECTS {
        let mut args = vec![
            script("dsmr_compare.py").to_str().unwrap().to_owned(),
            spec.to_owned(),
        ];
        for seed in 0..12u64 {
            for crc in ["padded", "unpadded"] {
                let t = generate(dir.path(), dialect, seed, crc);
                let (ok, json, json_path) = ours(&t);
                assert!(ok, "{dialect} {seed} {crc}: {json}");
                if dialect != "v2_2" {
                    assert_eq!(json["crc_ok"], true);
                    let text = std::fs::read_to_string(&t).unwrap();
                    let crc_len = text.trim_end().len() - text.rfind('!').unwrap() - 1;
                    if crc == "unpadded" {
                        assert!(crc_len < 4, "unpadded CRC has {crc_len} digits");
                        unpadded_seen += 1;
                    }
                } else {
                    assert_eq!(json["crc_ok"], serde_json::Value::Null);
                    assert!(
                        json["values"]["0-1:24.3.0"].as_array().unwrap().len() == 7,
                        "2.2 gas reading"
                    );
                }
                if let Some(log) = json["values"].get("1-0:99.97.0") {
                    failure_log_lengths.insert(log.as_array().map_or(1, |a| a.len()));
                }
                assert!(
                    json["values"]["0-0:96.13.0"]["value"].is_null(),
                    "empty value"
                );
                args.push(t.to_str().unwrap().to_owned());
                args.push(json_path.to_str().unwrap().to_owned());
            }
        }
        let (ok, out, err) = run(Command::new(python()).args(&args));
        assert!(ok, "dsmr_compare: {err}");
        for line in out.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(r["crc_ok"], true, "{dialect}: {line}");
            assert!(r["compared"].as_u64().unwrap() >= 15, "{dialect}: {line}");
            assert_eq!(r["mismatches"], serde_json::json!([]), "{dialect}: {line}");
        }
    }
    // Power-failure logs with 0, 1 and 2 entries (2, 4 and 6 groups) were all exercised.
    assert!(
        failure_log_lengths.is_superset(&[2, 4, 6].into()),
        "{failure_log_lengths:?}"
    );
    assert_eq!(unpadded_seen, 3 * 12);
}

#[test]
fn both_parsers_reject_a_wrong_crc() {
    let dir = tempfile::tempdir().unwrap();
    for (dialect, spec) in &DIALECTS[1..] {
        for seed in 0..5 {
            let t = generate(dir.path(), dialect, seed, "wrong");
            let (ok, json, json_path) = ours(&t);
            assert!(!ok);
            assert_eq!(json["crc_ok"], false);
            let (ok, out, err) = run(Command::new(python()).args([
                script("dsmr_compare.py").to_str().unwrap(),
                spec,
                t.to_str().unwrap(),
                json_path.to_str().unwrap(),
            ]));
            assert!(ok, "{err}");
            let r: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(r["crc_ok"], false, "dsmr-parser accepted a wrong CRC");
        }
    }
}

#[test]
fn both_parsers_reject_a_v4_or_v5_telegram_without_its_crc() {
    let dir = tempfile::tempdir().unwrap();
    for (dialect, spec) in &DIALECTS[1..] {
        let t = generate(dir.path(), dialect, 3, "none");
        let (ok, json, json_path) = ours(&t);
        assert!(!ok, "{dialect}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains("no CRC"),
            "{dialect}: {json}"
        );
        let (ok, out, err) = run(Command::new(python()).args([
            script("dsmr_compare.py").to_str().unwrap(),
            spec,
            t.to_str().unwrap(),
            json_path.to_str().unwrap(),
        ]));
        assert!(ok, "{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            r["crc_ok"], false,
            "dsmr-parser accepted {dialect} without a CRC"
        );
        assert!(r["missing"].is_string(), "{r}");
    }
}

/// `gridlet dsmr read` on a serial port until `count` valid telegrams; every output line.
fn read_serial(path: &str, count: u32) -> Vec<serde_json::Value> {
    let (ok, out, err) = run(Command::new(BIN).args([
        "dsmr",
        "read",
        "--serial",
        path,
        "--version",
        "v5",
        "--count",
        &count.to_string(),
        "--stale-s",
        "10",
    ]));
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn hil_dsmr(dir: &std::path::Path, pty: &str, faults: &str) -> Guard {
    let scenario = dir.join("dsmr.toml");
    std::fs::write(
        &scenario,
        format!(
            "seed = 9\n[[dsmr]]\npath = \"{pty}\"\ndialect = \"v5\"\ninterval_ms = 100\nfaults = {{ {faults} }}\n"
        ),
    )
    .unwrap();
    let (guard, line) =
        spawn_until_line(Command::new(BIN).args(["hil", "--scenario", scenario.to_str().unwrap()]));
    assert!(line.contains("modbus"), "{line}");
    guard
}

#[test]
fn telegrams_cross_a_pty_pair_at_115200_baud() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start().expect("socat is installed (scripts/test installs it)");
    let (a, b) = (pty.a.clone(), pty.b.clone());
    let _meter = hil_dsmr(dir.path(), &a, "");
    let lines = read_serial(&b, 5);
    let telegrams: Vec<serde_json::Value> = lines
        .into_iter()
        .filter(|v| v.get("crc_ok").is_some())
        .collect();
    assert_eq!(telegrams.len(), 5);
    for t in &telegrams {
        assert_eq!(t["crc_ok"], true);
        assert_eq!(t["header"], "ISk5\\2MT382-1000");
    }
}

#[test]
fn a_faulty_line_loses_bad_telegrams_but_never_passes_one() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start().expect("socat is installed (scripts/test installs it)");
    let (a, b) = (pty.a.clone(), pty.b.clone());
    let _meter = hil_dsmr(
        dir.path(),
        &a,
        "wrong_crc_percent = 25, truncated_percent = 20, garbage_percent = 30, unpadded_crc_percent = 30",
    );
    let lines = read_serial(&b, 20);
    let good = lines.iter().filter(|v| v["crc_ok"] == true).count();
    let rejected = lines.iter().filter(|v| v.get("rejected").is_some()).count();
    assert_eq!(good, 20);
    assert!(
        rejected >= 3,
        "faults should have produced rejections: {rejected}"
    );
    assert!(lines.iter().all(|v| v["crc_ok"] != false));
}

#[test]
fn telegrams_over_tcp_as_ser2net_serves_them() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let telegrams: Vec<Vec<u8>> = (0..3)
        .map(|seed| std::fs::read(generate(dir.path(), "v4", seed, "padded")).unwrap())
        .collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        // Start mid-telegram, as a reader joining a running meter does.
        conn.write_all(b"0:1.8.1(000123.456*kWh)\r\n!1234\r\n")
            .unwrap();
        for t in telegrams {
            conn.write_all(&t).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    });
    let (ok, out, err) = run(Command::new(BIN).args([
        "dsmr",
        "read",
        "--tcp",
        &format!("127.0.0.1:{port}"),
        "--version",
        "v4",
        "--count",
        "3",
    ]));
    assert!(ok, "{err}");
    let good = out
        .lines()
        .filter(|l| l.contains("\"crc_ok\":true"))
        .count();
    assert_eq!(good, 3, "{out}");
    server.join().unwrap();
}
