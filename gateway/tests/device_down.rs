//! A gateway that boots before its inverter: it serves its API at once, says the inverter is
//! down and why, and picks it up when it answers.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};

fn get(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    serde_json::from_str(resp.split("\r\n\r\n").nth(1)?).ok()
}

#[test]
fn a_gateway_with_its_inverter_down_serves_health_and_picks_the_inverter_up_later() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    home_files(d);
    let (broker, pv_port) = (free_port(), free_port());
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "data_dir = \"data\"\nkey_file = \"home.key\"\ngenesis = \"genesis.json\"\n\
             [bus]\nembedded_port = {broker}\n\
             [pv]\nhost = \"127.0.0.1\"\nport = {pv_port}\nunit = 1\npoll_ms = 200\n\
             [api]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let _gateway = Guard(
        Command::new(BIN)
            .args(["run", "--config", d.join("gateway.toml").to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // The API is up within 2 s although the inverter is not there.
    let api = loop {
        let text = std::fs::read_to_string(d.join("data/api.addr")).unwrap_or_default();
        if let Ok(addr) = text.trim().parse::<std::net::SocketAddr>() {
            if let Some(h) = get(addr.port(), "/api/health") {
                break (addr.port(), h);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no API within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (port, health) = api;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["devices"]["pv"]["up"], false, "{health}");
    // It says which device, where, and why.
    let deadline = Instant::now() + Duration::from_secs(10);
    let error = loop {
        let h = get(port, "/api/health").unwrap();
        if let Some(e) = h["devices"]["pv"]["last_error"].as_str() {
            break e.to_owned();
        }
        assert!(Instant::now() < deadline, "no error reported: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        error.contains(&format!("PV inverter at 127.0.0.1:{pv_port}")),
        "{error}"
    );

    // The inverter comes up: the gateway finds it and reads its power.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 6000, 12 * 3_600_000));
    let _sim = runtime
        .block_on(ModbusSim::start(
            format!("127.0.0.1:{pv_port}").parse().unwrap(),
            devices,
            FaultPlan::default(),
        ))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let h = get(port, "/api/health").unwrap();
        if h["devices"]["pv"]["up"] == true {
            assert_eq!(h["status"], "ok", "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "inverter not picked up: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let devices = get(port, "/api/devices").unwrap();
    assert!(
        devices["pv"]["power_w"]["value"].as_f64().is_some(),
        "{devices}"
    );
    assert_eq!(devices["pv"]["power_w"]["quality"], "good", "{devices}");
}
