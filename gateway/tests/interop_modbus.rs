//! SunSpec over Modbus against peers nobody here wrote: pysunspec2 scans our simulators,
//! our scanner and pysunspec2 agree on a pymodbus server serving pysunspec2's device images,
//! and mbpoll reads our simulator.

mod common;

use std::process::Command;

use common::*;

fn start_hil(dir: &std::path::Path) -> (Guard, String) {
    let scenario = dir.join("scenario.toml");
    std::fs::write(
        &scenario,
        r#"
seed = 3
speedup = 0.0
start_time_of_day_s = 43200
[[modbus]]
listen = "127.0.0.1:0"
devices = [
  { unit = 1, kind = "inverter", nameplate_w = 6000 },
  { unit = 2, kind = "battery", capacity_wh = 10000, max_power_w = 5000, soc_pct = 64 },
  { unit = 3, kind = "meter", power_w = -1500 },
]
"#,
    )
    .unwrap();
    let (guard, line) =
        spawn_until_line(Command::new(BIN).args(["hil", "--scenario", scenario.to_str().unwrap()]));
    let ready: serde_json::Value =
        serde_json::from_str(&line).expect("hil prints where it listens");
    let listen = ready["modbus"][0]["listen"].as_str().unwrap().to_owned();
    (guard, listen)
}

fn ours(host: &str, port: &str, unit: u8) -> serde_json::Value {
    let (ok, out, err) = run(Command::new(BIN).args([
        "sunspec",
        "scan",
        "--host",
        host,
        "--port",
        port,
        "--unit",
        &unit.to_string(),
    ]));
    assert!(ok, "gridlet sunspec scan: {err}");
    serde_json::from_str(&out).unwrap()
}

fn pysunspec2(host: &str, port: &str, unit: u8) -> serde_json::Value {
    let (ok, out, err) = run(Command::new(python()).args([
        script("sunspec_scan.py").to_str().unwrap(),
        host,
        port,
        &unit.to_string(),
    ]));
    assert!(ok, "pysunspec2 scan: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The scale-factor point a point refers to, from the vendored model tables.
fn sf_name(model_id: u64, point: &str) -> Option<String> {
    let tables: serde_json::Value =
        serde_json::from_str(include_str!("../../drivers/models/sunspec.json")).unwrap();
    fn find(group: &serde_json::Value, point: &str) -> Option<String> {
        for p in group["points"].as_array()? {
            if p["name"] == point {
                return p["sf"].as_str().map(str::to_owned);
            }
        }
        group["groups"]
            .as_array()?
            .iter()
            .find_map(|g| find(g, point))
    }
    let model = tables["models"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == model_id)?;
    find(&model["group"], point)
}

/// Every point must agree, with one documented exception: where the point's scale factor is
/// not implemented, pysunspec2 returns the unscaled register value and we return null (the
/// magnitude is unknown, and a gateway must not guess it).
fn assert_agree(ours: &serde_json::Value, theirs: &serde_json::Value) {
    let mut diffs = Vec::new();
    json_diff(ours, theirs, "", &mut diffs);
    diffs.retain(|d| {
        let Some((path, values)) = d.split_once(": ") else {
            return true;
        };
        if !values.starts_with("null vs ") {
            return true;
        }
        let model_index: usize = path["models[".len() + path.find("models[").unwrap()..]
            .split(']')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let point = path.rsplit('.').next().unwrap();
        let model = &ours["models"][model_index];
        match sf_name(model["id"].as_u64().unwrap(), point) {
            Some(sf) => {
                !(theirs["models"][model_index]["points"][&sf].is_null()
                    && model["points"][&sf].is_null())
            }
            None => true,
        }
    });
    assert!(
        diffs.is_empty(),
        "ours vs pysunspec2:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn pysunspec2_scans_our_simulators_and_sees_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (_hil, listen) = start_hil(dir.path());
    let (host, port) = listen.split_once(':').unwrap();
    for unit in [1u8, 2, 3] {
        let theirs = pysunspec2(host, port, unit);
        let mine = ours(host, port, unit);
        assert_agree(&mine, &theirs);
        assert_eq!(theirs["base"], 40000);
    }
    let inv = pysunspec2(host, port, 1);
    let ids: Vec<u64> = inv["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 103, 120]);
    assert_eq!(inv["models"][1]["points"]["W"], 6000);
    assert_eq!(inv["models"][2]["points"]["WRtg"], 6000);
    let bat = pysunspec2(host, port, 2);
    let ids: Vec<u64> = bat["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 124, 802, 713]);
    assert_eq!(bat["models"][2]["points"]["SoC"].as_f64(), Some(64.0));
    assert_eq!(bat["models"][3]["points"]["WHAvail"], 6400);
    let met = pysunspec2(host, port, 3);
    assert_eq!(met["models"][1]["points"]["W"], -1500);
}

#[test]
fn our_scanner_agrees_with_pysunspec2_on_a_pymodbus_server() {
    for image in [
        "tests/test_data/inverter_123.json",
        "tests/test_data/device_1547.json",
    ] {
        let port = free_port().to_string();
        let (_server, line) = spawn_until_line(Command::new(python()).args([
            script("pymodbus_sunspec_server.py").to_str().unwrap(),
            site_file(image).to_str().unwrap(),
            &port,
        ]));
        assert_eq!(line.trim(), "ready");
        // The server prints before it binds: wait until it accepts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pymodbus did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let theirs = pysunspec2("127.0.0.1", &port, 1);
        let mine = ours("127.0.0.1", &port, 1);
        assert!(mine["models"].as_array().unwrap().len() >= 2, "{image}");
        assert_agree(&mine, &theirs);
    }
}

/// Registers read by mbpoll (1-based register numbers, holding registers, one poll).
fn mbpoll(port: &str, register: u32, count: u32) -> Vec<u32> {
    let (ok, out, err) = run(Command::new("mbpoll").args([
        "-m",
        "tcp",
        "-p",
        port,
        "-a",
        "1",
        "-t",
        "4",
        "-r",
        &register.to_string(),
        "-c",
        &count.to_string(),
        "-1",
        "127.0.0.1",
    ]));
    assert!(ok, "mbpoll: {err}{out}");
    out.lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            l.split(':')
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn mbpoll_reads_our_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let (_hil, listen) = start_hil(dir.path());
    let (_, port) = listen.split_once(':').unwrap();
    // mbpoll counts from 1: register 40001 is protocol address 40000.
    assert_eq!(mbpoll(port, 40001, 4), vec![0x5375, 0x6E53, 1, 66]);
    // Model 103 starts at 40070; W is at offset 14 → register 40085 in mbpoll's numbering.
    assert_eq!(mbpoll(port, 40085, 1), vec![6000]);
}
