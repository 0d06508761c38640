//! Two real gateways with the HTTP API: an offer made on home A through the API is bought by
//! home B through the API, and A's battery (the HIL simulator over Modbus, started by `gridlet
//! hil`) releases the traded energy; trading needs the bearer token.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code: u16 = resp[9..12].parse().unwrap();
    let json = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        code,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

fn wait_until<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached in {secs} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn keygen(d: &Path, name: &str) {
    let (ok, _, err) =
        run(Command::new(BIN).args(["keygen", "--out", d.join(name).to_str().unwrap()]));
    assert!(ok, "{err}");
}

struct Homes {
    dir: tempfile::TempDir,
    /// The HIL battery's Modbus address (host, port).
    battery: (String, String),
    api_a: u16,
    api_b: u16,
    _hil: Guard,
    a: Option<Guard>,
    _b: Guard,
}

const TOKEN: &str = "a-long-enough-secret-token";

fn spawn_gateway(d: &Path, cfg: &str) -> Guard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join(format!("{cfg}.log")))
        .unwrap();
    Guard(
        Command::new(BIN)
            .args(["run", "--config", d.join(cfg).to_str().unwrap()])
            .env("RUST_LOG", "info,rumqttd=off,actix_server=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Two homes with APIs (A with the HIL battery at `speedup`), both gateways running.
fn homes(speedup: f64) -> Homes {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in ["a.key", "a-ess.key", "b.key", "b-ess.key"] {
        keygen(d, n);
    }
    let (ok, _, err) = run(Command::new(BIN).args([
        "genesis",
        "--member",
        &format!(
            "a,{},{}",
            d.join("a.key.pub").display(),
            d.join("a-ess.key.pub").display()
        ),
        "--member",
        &format!(
            "b,{},{}",
            d.join("b.key.pub").display(),
            d.join("b-ess.key.pub").display()
        ),
        "--slot-ms",
        "300",
        "--fallback-ranks",
        "2",
        "--out",
        d.join("genesis.json").to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    std::fs::write(
        d.join("hil.toml"),
        format!("speedup = {speedup}\n[[modbus]]\nlisten = \"127.0.0.1:0\"\ndevices = [ {{ unit = 1, kind = \"battery\", capacity_wh = 10000, max_power_w = 5000, soc_pct = 60 }}, {{ unit = 3, kind = \"meter\", power_w = 800 }} ]\n"),
    )
    .unwrap();
    let (hil, line) = spawn_until_line(Command::new(BIN).args([
        "hil",
        "--scenario",
        d.join("hil.toml").to_str().unwrap(),
    ]));
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let battery = ready["modbus"][0]["listen"].as_str().unwrap().to_owned();
    let (bhost, bport) = battery.split_once(':').unwrap();
    let (broker, api_a, api_b) = (free_port(), free_port(), free_port());
    let token = TOKEN;
    std::fs::write(
        d.join("a.toml"),
        format!(
            "data_dir = \"da\"\nkey_file = \"a.key\"\ngenesis = \"genesis.json\"\nattestor_key_file = \"a-ess.key\"\n[node]\nname = \"a\"\n[bus]\nembedded_port = {broker}\n[battery]\nhost = \"{bhost}\"\nport = {bport}\npoll_ms = 50\n[api]\nlisten = \"127.0.0.1:{api_a}\"\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("b.toml"),
        format!(
            "data_dir = \"db\"\nkey_file = \"b.key\"\ngenesis = \"genesis.json\"\n[node]\nname = \"b\"\n[bus]\nbroker = \"127.0.0.1:{broker}\"\n[meter]\nkind = \"sunspec\"\nhost = \"{bhost}\"\nport = {bport}\nunit = 3\npoll_ms = 100\n[strategy]\nenabled = false\n[api]\nlisten = \"127.0.0.1:{api_b}\"\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    let a = spawn_gateway(d, "a.toml");
    wait_until(10, || TcpStream::connect(("127.0.0.1", api_a)).ok());
    let b = spawn_gateway(d, "b.toml");
    wait_until(10, || TcpStream::connect(("127.0.0.1", api_b)).ok());
    Homes {
        battery: (bhost.to_owned(), bport.to_owned()),
        dir,
        api_a,
        api_b,
        _hil: hil,
        a: Some(a),
        _b: b,
    }
}

/// The battery's available energy (SunSpec 713 `WHAvail`), read over Modbus by a separate scan.
fn wh_avail(battery: &(String, String)) -> f64 {
    let (ok, out, err) = run(Command::new(BIN).args([
        "sunspec", "scan", "--host", &battery.0, "--port", &battery.1, "--unit", "1",
    ]));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 713)
        .and_then(|m| m["points"]["WHAvail"].as_f64())
        .expect("model 713 with WHAvail")
}

#[test]
fn an_offer_made_through_the_api_is_bought_and_released_by_the_battery() {
    let h = homes(100.0);
    let before = wh_avail(&h.battery);
    let (api_a, api_b, token) = (h.api_a, h.api_b, TOKEN);
    let (code, status) = http(api_a, "GET", "/api/status", None, "");
    assert_eq!(code, 200);
    assert_eq!(status["member"].as_str().unwrap().len(), 66);
    let offer = r#"{"interval": 7, "energy_wh": 150, "price": 200000, "expiry_height": 100000}"#;
    assert_eq!(http(api_a, "POST", "/api/offers", None, offer).0, 401);
    assert_eq!(
        http(
            api_a,
            "POST",
            "/api/offers",
            Some("wrong-token-wrong-token"),
            offer
        )
        .0,
        401
    );
    // An expired offer is refused with its reason, and spends no nonce: the valid offer right
    // behind it lands.
    let expired = r#"{"interval": 7, "energy_wh": 150, "price": 200000, "expiry_height": 0}"#;
    let (code, refused) = http(api_a, "POST", "/api/offers", Some(token), expired);
    assert_eq!(code, 400, "{refused}");
    assert_eq!(refused["submitted"], false);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("expiry height 0"),
        "{refused}"
    );
    // A charge offer (PV surplus into the buyer's battery) is bounded by what the home exports
    // now: this home has no grid meter, so it cannot tell, and the offer is refused; a mode
    // that does not exist is a bad body.
    let charge = r#"{"mode": "charge", "interval": 7, "energy_wh": 150, "price": 100000, "expiry_height": 100000}"#;
    let (code, refused) = http(api_a, "POST", "/api/offers", Some(token), charge);
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("cannot tell its surplus"),
        "{refused}"
    );
    let odd = r#"{"mode": "gift", "interval": 7, "energy_wh": 150, "price": 100000, "expiry_height": 100000}"#;
    let (code, refused) = http(api_a, "POST", "/api/offers", Some(token), odd);
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("unknown variant"),
        "{refused}"
    );
    // More than the battery holds (10 kWh at 60 %, 30 % kept back): refused, with the figures,
    // and nothing attested.
    let huge = r#"{"interval": 7, "energy_wh": 500000, "price": 200000, "expiry_height": 100000}"#;
    let (code, refused) = http(api_a, "POST", "/api/offers", Some(token), huge);
    assert_eq!(code, 400, "{refused}");
    let reason = refused["error"].as_str().unwrap();
    assert!(
        reason.contains("more than the battery can sell now") && reason.contains("reserve"),
        "{refused}"
    );
    let (code, accepted) = http(api_a, "POST", "/api/offers", Some(token), offer);
    assert_eq!(code, 201, "{accepted}");
    assert_eq!(
        accepted["tx"].as_str().map(str::len),
        Some(64),
        "{accepted}"
    );
    // The id the API answered with can be followed until its block is quorum-final.
    let id = accepted["tx"].as_str().unwrap().to_owned();
    let fate = wait_until(30, || {
        let (_, v) = http(api_a, "GET", &format!("/api/tx/{id}"), None, "");
        (v["status"] == "final").then_some(v)
    });
    assert!(fate["height"].as_u64().unwrap() > 0, "{fate}");
    let (code, v) = http(api_a, "GET", "/api/tx/not-an-id", None, "");
    assert_eq!(code, 400, "{v}");
    let (_, v) = http(
        api_a,
        "GET",
        &format!("/api/tx/{}", "ab".repeat(32)),
        None,
        "",
    );
    assert_eq!(v["status"], "unknown", "{v}");
    let contract = wait_until(30, || {
        let (_, offers) = http(api_b, "GET", "/api/offers", None, "");
        offers.as_array().and_then(|a| a.first().cloned())
    });
    assert_eq!(contract["energy_wh"], 150);
    let buy = format!(
        r#"{{"contract": "{}", "payment": {}}}"#,
        contract["contract"].as_str().unwrap(),
        contract["payment"]
    );
    assert_eq!(
        http(api_b, "POST", "/api/purchases", Some(token), &buy).0,
        201
    );
    let trade = wait_until(60, || {
        let (_, trades) = http(api_b, "GET", "/api/trades", None, "");
        trades
            .as_array()
            .and_then(|a| a.iter().find(|t| t["settled"] == true).cloned())
    });
    assert_eq!(trade["delivered_wh"], 150);
    // Home B reads its grid meter over SunSpec (model 203 of the HIL, unit 3): importing 800 W,
    // counters read, every poll accepted.
    let (_, b_devices) = http(api_b, "GET", "/api/devices", None, "");
    let meter = &b_devices["meter"];
    assert_eq!(meter["power_w"]["quality"], "good", "{b_devices}");
    let w = meter["power_w"]["value"].as_f64().unwrap();
    assert!((790.0..=810.0).contains(&w), "{b_devices}");
    assert!(
        meter["import_wh"]["value"].as_f64().is_some(),
        "{b_devices}"
    );
    assert!(meter["accepted"].as_u64().unwrap() > 10, "{b_devices}");
    assert_eq!(meter["rejected"], 0, "{b_devices}");
    assert_eq!(trade["stage"], "delivered", "{trade}");
    assert!(trade["buyers"][0]["buyer"].is_string(), "{trade}");
    // A body that is not JSON is refused as JSON, naming the problem.
    let (code, bad) = http(api_a, "POST", "/api/offers", Some(token), "{oops");
    assert_eq!(code, 400, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("bad request body"),
        "{bad}"
    );
    let (_, devices) = http(api_a, "GET", "/api/devices", None, "");
    assert_eq!(devices["battery"]["releases"], 1);
    // Every reading the same shape: value, age and quality.
    assert_eq!(
        devices["battery"]["soc_pct"]["quality"], "good",
        "{devices}"
    );
    assert!(
        devices["battery"]["soc_pct"]["age_ms"].as_u64().is_some(),
        "{devices}"
    );
    // The OpenAPI document is valid OpenAPI (openapi-spec-validator) and the live answers
    // match it field for field (every object closed: no field it does not name).
    let (code, doc) = http(api_a, "GET", "/api/openapi.json", None, "");
    assert_eq!(code, 200);
    let files = h.dir.path().join("openapi");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("doc.json"), doc.to_string()).unwrap();
    let mut args = vec![
        common::script("openapi_check.py").display().to_string(),
        files.join("doc.json").display().to_string(),
    ];
    for (i, path) in ["/api/status", "/api/devices", "/api/trades", "/api/offers"]
        .iter()
        .enumerate()
    {
        let (code, answer) = http(api_a, "GET", path, None, "");
        assert_eq!(code, 200, "{path}");
        let f = files.join(format!("answer-{i}.json"));
        std::fs::write(&f, answer.to_string()).unwrap();
        args.extend([path.to_string(), f.display().to_string()]);
    }
    let (ok, out, err) = run(Command::new(common::python()).args(&args));
    assert!(ok, "openapi check: {err}");
    assert!(out.contains("\"answers\": 4"), "{out}");
    // Read back over Modbus: the battery gave exactly the traded energy (to the Wh, as the
    // device counts it).
    let after = wh_avail(&h.battery);
    assert!(
        (150.0..=151.0).contains(&(before - after)),
        "battery went from {before} to {after} Wh for a 150 Wh trade"
    );
    // The discharge counter (Home Assistant's "energy coming out of the battery"), integrated
    // from the battery's power readings on the gateway's clock, agrees with what its store
    // lost — on the simulated battery's clock, 100 times faster than the gateway's here.
    let (_, devices) = http(api_a, "GET", "/api/devices", None, "");
    let out = devices["battery"]["discharged_wh"].as_f64().unwrap() * 100.0;
    assert!(
        (0.5 * (before - after)..=1.5 * (before - after)).contains(&out),
        "discharged_wh {out} for a store that lost {} Wh: {devices}",
        before - after
    );
    assert_eq!(devices["battery"]["charged_wh"], 0.0, "{devices}");

    // A sealed bid: committed in the next commit phase, revealed in the reveal phase (the
    // gateway keeps the salt on disk meanwhile and never shows it).
    let bid = r#"{"energy_wh": 400, "price": 150000}"#;
    assert_eq!(http(api_b, "POST", "/api/bids", None, bid).0, 401);
    let (code, err) = http(
        api_b,
        "POST",
        "/api/bids",
        Some(token),
        r#"{"energy_wh": 0, "price": 1}"#,
    );
    assert_eq!(code, 400, "{err}");
    assert_eq!(http(api_b, "POST", "/api/bids", Some(token), bid).0, 202);
    let saved = std::fs::read_to_string(h.dir.path().join("db/bids.json")).unwrap();
    assert!(saved.contains("\"salt\""), "{saved}");
    let mut seen = Vec::new();
    wait_until(60, || {
        let (_, bids) = http(api_b, "GET", "/api/bids", None, "");
        let b = bids.as_array()?.first()?.clone();
        assert!(b.get("salt").is_none(), "the API shows a salt: {b}");
        let p = b["progress"].as_str()?.to_owned();
        if seen.last() != Some(&p) {
            seen.push(p.clone());
        }
        (p == "revealed").then_some(())
    });
    // It went through an earlier stage (waiting or committed) before the reveal.
    assert!(seen.len() >= 2 && seen[0] != "revealed", "{seen:?}");
    // The round clears with no seller: the bid is done and its escrow comes back.
    wait_until(60, || {
        let (_, bids) = http(api_b, "GET", "/api/bids", None, "");
        bids.as_array()?.is_empty().then_some(())
    });
}

#[test]
fn a_gateway_killed_mid_release_never_releases_twice() {
    // A slower battery clock, so the kill lands in the middle of the release.
    let mut h = homes(20.0);
    let (api_a, api_b) = (h.api_a, h.api_b);
    let offer = r#"{"interval": 3, "energy_wh": 150, "price": 100000, "expiry_height": 100000}"#;
    assert_eq!(
        http(api_a, "POST", "/api/offers", Some(TOKEN), offer).0,
        201
    );
    let contract = wait_until(30, || {
        let (_, offers) = http(api_b, "GET", "/api/offers", None, "");
        offers.as_array().and_then(|a| a.first().cloned())
    });
    let buy = format!(
        r#"{{"contract": "{}", "payment": {}}}"#,
        contract["contract"].as_str().unwrap(),
        contract["payment"]
    );
    assert_eq!(
        http(api_b, "POST", "/api/purchases", Some(TOKEN), &buy).0,
        201
    );
    // Wait until A's battery is discharging for the trade, then SIGKILL A.
    wait_until(60, || {
        let (_, devices) = http(api_a, "GET", "/api/devices", None, "");
        devices["battery"]["power_w"]["value"]
            .as_f64()
            .filter(|p| *p > 0.0)
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(h.a.take()); // SIGKILL
    std::thread::sleep(Duration::from_secs(1));
    let d = h.dir.path().to_owned();
    h.a = Some(spawn_gateway(&d, "a.toml"));
    // The restart reports what the battery gave before the kill (a partial delivery settles
    // at the trade's deadline, minutes away: the report is what counts here).
    let trade = wait_until(60, || {
        let (_, trades) = http(api_b, "GET", "/api/trades", None, "");
        trades
            .as_array()
            .and_then(|a| a.iter().find(|t| t["delivered_wh"].is_u64()).cloned())
    });
    let log = std::fs::read_to_string(d.join("a.toml.log")).unwrap_or_default();
    let delivered = trade["delivered_wh"]
        .as_u64()
        .unwrap_or_else(|| panic!("no delivery reported: {trade}\n--- gateway A log ---\n{log}"));
    assert!(delivered > 0 && delivered <= 150, "{trade}");
    // The journal holds exactly one begin for the trade: the restart did not command it again.
    let journal = std::fs::read_to_string(d.join("da/release.journal")).unwrap();
    let id = trade["trade"].as_str().unwrap();
    let begins = journal
        .lines()
        .filter(|l| l.contains("\"begin\"") && l.contains(id))
        .count();
    let ends = journal
        .lines()
        .filter(|l| l.contains("\"end\"") && l.contains(id))
        .count();
    assert_eq!((begins, ends), (1, 1), "{journal}");
    let log = std::fs::read_to_string(d.join("a.toml.log")).unwrap();
    assert!(
        log.contains("not repeated"),
        "the restart must close the interrupted release"
    );
    assert!(!log.contains("panicked"));
}
