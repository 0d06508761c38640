//! The home's page in a real browser: Debian's headless Chromium (driven by Selenium through
//! chromedriver) against a running gateway on the HIL's simulated inverter, battery and SunSpec
//! meter. The live values appear and change, an offer placed through the page is on chain
//! (`/api/offers`), and a screenshot is written to `target/tmp/page.png` (checked to be a real
//! PNG; kept after the run).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN: &str = "a-long-enough-page-token";

fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    (code, resp.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

#[test]
fn the_page_shows_live_values_and_places_an_offer_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    home_files(d);
    std::fs::write(
        d.join("hil.toml"),
        "speedup = 60\nstart_time_of_day_s = 43200\n[[modbus]]\nlisten = \"127.0.0.1:0\"\ndevices = [ { unit = 1, kind = \"inverter\", nameplate_w = 6000 }, { unit = 2, kind = \"battery\", capacity_wh = 10000, max_power_w = 5000, soc_pct = 70 }, { unit = 3, kind = \"meter\", power_w = 800 } ]\n",
    )
    .unwrap();
    let (_hil, line) = spawn_until_line(Command::new(BIN).args([
        "hil",
        "--scenario",
        d.join("hil.toml").to_str().unwrap(),
    ]));
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let modbus = ready["modbus"][0]["listen"].as_str().unwrap().to_owned();
    let (host, port) = modbus.split_once(':').unwrap();
    let (broker, api) = (free_port(), free_port());
    std::fs::write(
        d.join("gateway.toml"),
        format!(
            "data_dir = \"data\"\nkey_file = \"home.key\"\ngenesis = \"genesis.json\"\nattestor_key_file = \"battery.key\"\n\
             [node]\nname = \"home\"\n[bus]\nembedded_port = {broker}\n\
             [pv]\nhost = \"{host}\"\nport = {port}\nunit = 1\npoll_ms = 200\n\
             [battery]\nhost = \"{host}\"\nport = {port}\nunit = 2\npoll_ms = 200\n\
             [meter]\nkind = \"sunspec\"\nhost = \"{host}\"\nport = {port}\nunit = 3\npoll_ms = 200\n\
             [strategy]\nenabled = false\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\ntoken = \"{TOKEN}\"\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.join("gateway.log")).unwrap();
    let _gateway = Guard(
        Command::new(BIN)
            .args(["run", "--config", d.join("gateway.toml").to_str().unwrap()])
            .env("RUST_LOG", "info,rumqttd=off,actix_server=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the gateway's API did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The page and its assets are served by the gateway itself.
    let (code, html) = get(api, "/");
    assert_eq!(code, 200);
    assert!(html.contains("<script src=\"/page.js\">"), "{html}");
    assert_eq!(get(api, "/page.js").0, 200);
    assert_eq!(get(api, "/page.css").0, 200);

    // Kept after the run (cargo's per-target temp dir), for CI to keep as an artifact.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("page.png");
    let _ = std::fs::remove_file(&shot);
    let (ok, out, err) = run(Command::new(python()).args([
        script("page_check.py").to_str().unwrap(),
        &format!("http://127.0.0.1:{api}/"),
        TOKEN,
        shot.to_str().unwrap(),
    ]));
    let log = std::fs::read_to_string(d.join("gateway.log")).unwrap_or_default();
    assert!(
        ok,
        "page check failed:\n{out}\n{err}\ngateway log tail:\n{}",
        tail(&log)
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert!(!seen["changed"].as_array().unwrap().is_empty(), "{seen}");
    // The HIL meter imports 800 W and the page shows it.
    assert_eq!(seen["grid"], "800 W", "{seen}");

    // The offer the page placed is on chain.
    let (_, offers) = get(api, "/api/offers");
    let offers: serde_json::Value = serde_json::from_str(&offers).unwrap();
    assert!(
        offers
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["energy_wh"] == 321),
        "{offers}"
    );
    // The screenshot is a real PNG of a phone-sized page.
    let png = std::fs::read(&shot).unwrap();
    assert!(png.len() > 10_000, "{} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    if let Ok(keep) = std::env::var("GRIDLET_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
