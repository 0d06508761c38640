//! Row D6 of the fault matrix: the gateway's battery path (`gridlet release-orders`: discovery,
//! release journal, battery actor) is SIGKILLed 100 times at random moments while it releases
//! trades into the HIL battery over Modbus TCP. The test plays the chain: a printed report is
//! on chain, and each restart gets only the orders with no report yet — as a restarted gateway
//! hands on the open releases of its final state. Every trade must be reported exactly once
//! (0 duplicates, 0 missed), never above its energy, and journaled done exactly once.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridlet_hil::devices::DeviceModel;
use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};
use gridlet_ledger::Hash32;

use common::{spawn_reading_lines, BIN};
const KILLS: usize = 100;
const TRADES: u64 = 120;
const TRADE_WH: u64 = 15;
const SPEEDUP: f64 = 100.0;
/// Kills fall uniformly within this long after a start.
const KILL_WINDOW_MS: u64 = 600;

fn discharged_mwh(sim: &ModbusSim) -> u64 {
    match &sim.devices.lock().unwrap()[&1].model {
        DeviceModel::Battery(b) => b.discharged_mwh,
        _ => unreachable!(),
    }
}

/// A deterministic draw in `0..n` for kill `i`.
fn draw(i: u64, n: u64) -> u64 {
    let h = Hash32::sha256(&i.to_be_bytes());
    u64::from_be_bytes(h.0[..8].try_into().unwrap()) % n.max(1)
}

/// Starts the battery path on `orders`; the reports it prints land in `reports`.
fn start(
    data: &std::path::Path,
    port: u16,
    orders: &[(Hash32, u64)],
    reports: &Arc<Mutex<Vec<(Hash32, u64)>>>,
) -> (std::process::Child, std::thread::JoinHandle<()>) {
    let list: Vec<String> = orders
        .iter()
        .map(|(t, wh)| format!("{}:{wh}", t.to_hex()))
        .collect();
    let reports = reports.clone();
    spawn_reading_lines(
        Command::new(BIN)
            .args([
                "release-orders",
                "--data",
                data.to_str().unwrap(),
                "--port",
                &port.to_string(),
                "--speedup",
                &SPEEDUP.to_string(),
                "--orders",
                &list.join(","),
            ])
            .stderr(Stdio::null()),
        move |line| {
            let mut w = line.split_whitespace();
            if let (Some("reported"), Some(t), Some(wh)) = (w.next(), w.next(), w.next()) {
                let trade = Hash32::from_hex(t).unwrap();
                reports.lock().unwrap().push((trade, wh.parse().unwrap()));
            }
        },
    )
}

#[test]
fn d6_sigkills_around_battery_commands_report_every_trade_exactly_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(async {
        let mut devices = BTreeMap::new();
        devices.insert(1, SimDevice::battery(40000, 10_000, 5_000, 60));
        ModbusSim::start(
            "127.0.0.1:0".parse().unwrap(),
            devices,
            FaultPlan::default(),
        )
        .await
        .unwrap()
    });
    // Battery physics on the same sped-up clock as the gateway's counters.
    rt.spawn(gridlet_hil::modbus_sim::run_physics(
        sim.devices.clone(),
        SPEEDUP,
        |_| {},
    ));
    let port = sim.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let trades: Vec<(Hash32, u64)> = (0..TRADES)
        .map(|i| (Hash32::sha256(format!("d6 trade {i}").as_bytes()), TRADE_WH))
        .collect();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let open = |reports: &Arc<Mutex<Vec<(Hash32, u64)>>>| -> Vec<(Hash32, u64)> {
        let done: Vec<Hash32> = reports.lock().unwrap().iter().map(|(t, _)| *t).collect();
        trades
            .iter()
            .filter(|(t, _)| !done.contains(t))
            .copied()
            .collect()
    };
    let started = Instant::now();
    let mut killed_with_orders_left = 0;
    for i in 0..KILLS as u64 {
        let orders = open(&reports);
        let (mut child, reader) = start(dir.path(), port, &orders, &reports);
        std::thread::sleep(Duration::from_millis(draw(i, KILL_WINDOW_MS)));
        if child.try_wait().unwrap().is_none() {
            killed_with_orders_left += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
    }
    // The last run, left alone, finishes what is open.
    let (mut child, reader) = start(dir.path(), port, &open(&reports), &reports);
    // A trade that is never reported keeps it waiting: after a minute it is ended, and the
    // checks below name what is missing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().unwrap();
    reader.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let reports = reports.lock().unwrap().clone();
    let mut per_trade: BTreeMap<Hash32, Vec<u64>> = BTreeMap::new();
    for (t, wh) in &reports {
        per_trade.entry(*t).or_default().push(*wh);
    }
    let duplicates = per_trade.values().filter(|r| r.len() > 1).count();
    let missed = trades
        .iter()
        .filter(|(t, _)| !per_trade.contains_key(t))
        .count();
    let over = reports.iter().filter(|(_, wh)| *wh > TRADE_WH).count();
    let short = reports.iter().filter(|(_, wh)| *wh < TRADE_WH).count();
    let reported_wh: u64 = reports.iter().map(|(_, wh)| wh).sum();
    let discharged_wh = discharged_mwh(&sim) / 1_000;
    let journal = gridlet_actors::journal::ReleaseJournal::open(dir.path()).unwrap();
    let done = journal
        .entries()
        .iter()
        .filter(|(_, s)| matches!(s, gridlet_actors::journal::ReleaseState::Done { .. }))
        .count();
    println!(
        "{}",
        serde_json::json!({
            "row": "D6",
            "kills": KILLS,
            "kills_with_orders_left": killed_with_orders_left,
            "trades": TRADES,
            "duplicate_reports": duplicates,
            "missed": missed,
            "reports_above_the_trade": over,
            "closed_short_by_a_kill": short,
            "reported_wh": reported_wh,
            "battery_discharged_wh": discharged_wh,
            // Given while a killed gateway was down (the battery holds its last command):
            "discharged_beyond_the_reports_wh": discharged_wh.saturating_sub(reported_wh),
            "seconds": started.elapsed().as_secs(),
        })
    );
    assert_eq!(duplicates, 0, "{per_trade:?}");
    assert_eq!(missed, 0, "trades never reported");
    assert_eq!(over, 0);
    assert_eq!(done, TRADES as usize, "each trade journaled done once");
    assert!(
        killed_with_orders_left >= KILLS / 2,
        "most kills must hit a run with work left ({killed_with_orders_left})"
    );
    // Every reported Wh left the battery (within a Wh of rounding per trade).
    assert!(
        reported_wh <= discharged_wh + TRADES,
        "reported {reported_wh} Wh, the battery gave {discharged_wh} Wh"
    );
}
