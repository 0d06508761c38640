//! `gridlet sim` end to end: real gateway processes, simulated devices over Modbus TCP, DSMR on
//! socat ptys and one MQTT meter, joined by the embedded broker or by Mosquitto. The community
//! trades, every home produces blocks, every invariant holds, and every home's data dir
//! verifies to the same tip.

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::{free_port, run, BIN};

/// The simulations time their slots in wall time (150 ms slots here): one at a time on this
/// 2-core machine. Under heavy load, blocks late by more than F slots let homes finalize
/// different branches (finality without votes; see the issue note), so slots stay this long.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// 150 ms slots: at 100 ms, homes ended on different tips now and then in full CI runs
/// (finality without votes; see the issue notes), never when run alone.
fn sim(report: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    sim_at(report, "600", extra)
}

/// What the gateways warned about, for a failed run.
fn gateway_warnings(report: &std::path::Path) -> String {
    let mut out = String::new();
    for i in 0..8 {
        let Ok(log) = std::fs::read_to_string(report.join(format!("homes/{i}/gateway.log"))) else {
            break;
        };
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        out += &format!("home {i}: {} warnings; the last:\n", warnings.len());
        for l in warnings.iter().rev().take(8).rev() {
            out += &format!("  {}\n", l.chars().take(300).collect::<String>());
        }
    }
    out
}

fn sim_at(report: &std::path::Path, speedup: &str, extra: &[&str]) -> serde_json::Value {
    sim_with(report, speedup, extra, None)
}

/// Runs `gridlet sim`, with `PATH` replaced by `path` if given.
fn sim_with(
    report: &std::path::Path,
    speedup: &str,
    extra: &[&str],
    path: Option<&std::path::Path>,
) -> serde_json::Value {
    let mut args = vec![
        "sim",
        "--slot-ms",
        "90000",
        "--speedup",
        speedup,
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut command = Command::new(BIN);
    command.args(&args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let (ok, out, err) = run(&mut command);
    if !ok {
        // Keep the homes' data dirs and logs of a failed run for a look afterwards.
        let keep = std::env::temp_dir().join("gridlet-failed-sims");
        let _ = std::fs::create_dir_all(&keep);
        let _ = Command::new("cp")
            .args(["-r", report.to_str().unwrap_or_default()])
            .arg(keep.join(std::process::id().to_string()))
            .status();
    }
    assert!(ok, "sim failed: {err}\n{out}\n{}", gateway_warnings(report));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn check(report: &std::path::Path, summary: &serde_json::Value, homes: usize) {
    // No schedule ran in these markets: the report says nothing about one (null, not true).
    let mut invariants = summary["invariants"].as_object().unwrap().clone();
    let schedule = invariants.remove("scheduled_day_committed_and_billed");
    assert_eq!(schedule, Some(serde_json::Value::Null), "{summary:#}");
    for (name, v) in invariants {
        assert_eq!(v, true, "invariant {name} failed: {summary:#}");
    }
    let produced = summary["blocks_per_producer"].as_object().unwrap();
    assert_eq!(produced.len(), homes, "{summary:#}");
    let market = &summary["market"];
    assert!(market["trades"].as_u64().unwrap() > 0, "{summary:#}");
    // Batteries released traded energy and receipts reached the chain; a release that ended
    // in the day's last minutes may still have its receipt in flight when production stops.
    // What was delivered is what a buyer imported: the community drew less from the grid.
    assert!(market["battery_releases"].as_u64().unwrap() > 0);
    let released = market["wh_released"].as_u64().unwrap();
    let delivered = market["wh_delivered_on_chain"].as_u64().unwrap();
    assert!(delivered > 0 && delivered <= released, "{summary:#}");
    // The batteries hold the attestor keys and signed every claim on chain; the gateways hold
    // none.
    assert!(
        market["claims_signed_by_batteries"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    for i in 0..homes {
        let dir = report.join("homes").join(i.to_string());
        assert!(
            !dir.join("battery.key").exists(),
            "home {i} holds its attestor key"
        );
    }
    let grid = &summary["grid"];
    assert!(
        grid["community_import_wh"].as_u64() < grid["community_import_without_trading_wh"].as_u64(),
        "{summary:#}"
    );
    // `gridlet chain verify` on every home: the same tip.
    let mut tips = Vec::new();
    for i in 0..homes {
        let data = report.join("homes").join(i.to_string());
        let (ok, out, err) =
            run(Command::new(BIN).args(["chain", "verify", "--data", data.to_str().unwrap()]));
        assert!(ok, "home {i} does not verify: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        tips.push(v["tip_hash"].as_str().unwrap().to_owned());
    }
    assert!(tips.iter().all(|t| *t == tips[0]), "{tips:?}");
    assert_eq!(summary["tip_hash"], tips[0].as_str());
    let png = std::fs::read(report.join("chart.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(report.join("report.json").exists());
}

#[test]
fn a_community_with_the_embedded_broker_trades_and_agrees() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    // Nothing on PATH (no socat, no kill): the main job needs only what cargo built.
    let empty = tempfile::tempdir().unwrap();
    // Noon to midnight with four homes: the fourth (little PV, a small battery) imports in
    // the evening, so a neighbour has something to cover (delivery follows the buyer's meter).
    let summary = sim_with(
        &report,
        "600",
        &["--homes", "4", "--start-hour", "12", "--hours", "12"],
        Some(empty.path()),
    );
    check(&report, &summary, 4);
    // Three homes read DSMR over a pty, the last an MQTT meter: all traded on their readings.
    let cfg = std::fs::read_to_string(report.join("homes/3/gateway.toml")).unwrap();
    assert!(cfg.contains("kind = \"mqtt\""));
    let cfg = std::fs::read_to_string(report.join("homes/0/gateway.toml")).unwrap();
    assert!(cfg.contains("kind = \"dsmr\""));
    // A report directory is never reused.
    let (ok, _, err) = run(Command::new(BIN).args(["sim", "--report", report.to_str().unwrap()]));
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
}

/// Mosquitto and the directory of its config (kept until it stops).
struct Mosquitto {
    child: std::process::Child,
    _conf: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_community_on_mosquitto_trades_in_auctions_and_agrees() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_port();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_packet_size 8388608\n"),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed (scripts/test installs it)");
    let _broker = Mosquitto {
        child,
        _conf: conf_dir,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    let broker = format!("127.0.0.1:{port}");
    let summary = sim(
        &report,
        &[
            "--homes",
            "4",
            "--start-hour",
            "12",
            "--hours",
            "12",
            "--broker",
            &broker,
            "--auctions",
        ],
    );
    check(&report, &summary, 4);
    // Here the homes trade in auction rounds: sellers pool, buyers bid sealed, rounds clear.
    assert!(
        summary["market"]["auction_trades"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert!(
        summary["market"]["auction_rounds_cleared_with_trades"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Each auction trade's price (its seller's revenue per kWh) lies in the genesis's band
    // (the floor less integer rounding of the revenue shares: a few µcr on a small lot).
    let prices = summary["market"]["trade_prices"].as_array().unwrap();
    assert_eq!(
        prices.len() as u64,
        summary["market"]["auction_trades"].as_u64().unwrap(),
        "{summary:#}"
    );
    assert!(
        prices
            .iter()
            .all(|p| (49_500..=300_000).contains(&p["price"].as_u64().unwrap())),
        "{summary:#}"
    );
    let cfg = std::fs::read_to_string(report.join("homes/0/gateway.toml")).unwrap();
    assert!(cfg.contains("auctions = true"));
}

#[test]
fn gateways_stop_when_the_simulation_is_killed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    let mut sim = Command::new(BIN)
        .args([
            "sim",
            "--homes",
            "2",
            "--hours",
            "10",
            "--speedup",
            "900",
            "--slot-ms",
            "90000",
            "--report",
            report.to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The gateway processes of this simulation (not the simulation itself).
    let pattern = format!(
        "gridlet run --stop-on-stdin-eof --config {}",
        report.display()
    );
    let alive = || {
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while alive() < 2 || !report.join("homes/1/gateway.log").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateways did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(alive(), 2, "both gateways run");
    // SIGKILL: no chance to clean up; the gateways see their stdin close and stop.
    sim.kill().unwrap();
    sim.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while alive() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "gateways outlived the simulation"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_community_plans_its_day_ahead_follows_it_and_is_billed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r");
    let summary = sim(&report, &["--homes", "3", "--market", "schedule"]);
    for (name, v) in summary["invariants"].as_object().unwrap() {
        assert_eq!(v, true, "invariant {name} failed: {summary:#}");
    }
    let s = &summary["schedule"];
    // ADMM over the bus converged (10 W tolerance) in more than one iteration; every node
    // accepted the commitment by replaying it, or the day would not be on every chain.
    assert!(s["iterations"].as_u64().unwrap() >= 2, "{s:#}");
    assert!(s["primal_residual_w"].as_i64().unwrap() <= 10, "{s:#}");
    assert!(s["dual_residual_w"].as_i64().unwrap() <= 10, "{s:#}");
    // Every home was billed on its signed readings; no live trading in this mode.
    let bills = s["bills_microcredits"].as_object().unwrap();
    assert_eq!(bills.len(), 3, "{s:#}");
    assert_eq!(s["metered_net_wh"].as_object().unwrap().len(), 3);
    assert_eq!(summary["market"]["trades"], 0);
    // Home 0's API shows its part of the billed day, as on chain.
    let api = &s["home_0_api"];
    assert_eq!(api["enabled"], true, "{api:#}");
    let day0 = &api["days"][0];
    assert_eq!(day0["billed"], true, "{api:#}");
    assert_eq!(day0["bill"], bills["home-0"], "{api:#}");
    assert_eq!(day0["scheduled_wh"].as_array().unwrap().len(), 96);
    // Sharing batteries by the schedule draws no more from the main grid, and feeds no more
    // into it, than the same homes without trading (the plan keeps what the homes' own control
    // would have kept; the batteries hold the scheduled exchange).
    let grid = &summary["grid"];
    let figure = |k: &str| grid[k].as_u64().unwrap();
    assert!(
        figure("community_import_wh") <= figure("community_import_without_trading_wh"),
        "{grid:#}"
    );
    assert!(
        figure("community_export_wh") <= figure("community_export_without_trading_wh"),
        "{grid:#}"
    );
    // The community account holds the bills plus the fees of the day-ahead transactions
    // (at least one commitment and three readings, 100 µcredits each).
    let fees = s["community_account"].as_i64().unwrap() - s["bills_total"].as_i64().unwrap();
    assert!(fees >= 400 && fees % 100 == 0, "{s:#}");
    // Each home kept its plan (its private battery set-points) and its signed readings
    // durably.
    for i in 0..3 {
        let home = report.join(format!("homes/{i}"));
        let book: serde_json::Value =
            serde_json::from_slice(&std::fs::read(home.join("dayahead.json")).unwrap()).unwrap();
        let plan = &book["plans"]["0"];
        assert_eq!(plan["battery_w"].as_array().unwrap().len(), 96);
        assert_eq!(plan["net_w"].as_array().unwrap().len(), 96, "{plan}");
        assert!(plan["limit_w"].as_i64().unwrap() > 0, "{plan}");
        assert_eq!(book["readings"]["0"].as_array().unwrap().len(), 96);
        let log = std::fs::read_to_string(home.join("gateway.log")).unwrap();
        assert!(log.contains("day-ahead schedule agreed"), "home {i}");
    }
}
