//! The battery actor against the HIL battery over real Modbus TCP: a final trade's energy is
//! released exactly (read back from the simulator), journaled first, reported once, and never
//! released again after a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use gridlet_actors::battery::{
    BatterySettings, BatteryStatus, BatteryStorage, BuyerPower, Delivered, Release,
};
use gridlet_actors::clock::Clock;
use gridlet_actors::devices::{MeterFeed, MeterReadings};
use gridlet_actors::journal::{ReleaseJournal, ReleaseState};
use gridlet_core::net_power::NetPowerMessage;
use gridlet_core::release::ReleaseOrder;
use gridlet_hil::devices::DeviceModel;
use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};
use gridlet_ledger::Hash32;

struct Collector(Arc<Mutex<Vec<Delivered>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Delivered> for Collector {
    type Result = ();
    fn handle(&mut self, msg: Delivered, _: &mut Context<Self>) {
        self.0.lock().unwrap().push(msg);
    }
}

const SPEEDUP: f64 = 100.0;

fn chain_id() -> Hash32 {
    Hash32::sha256(b"battery release test")
}

async fn battery_actor(
    sim: &ModbusSim,
    journal_dir: &std::path::Path,
    out: Arc<Mutex<Vec<Delivered>>>,
) -> Addr<BatteryStorage> {
    battery_with_meter(sim, journal_dir, out, None, Arc::default()).await
}

async fn battery_with_meter(
    sim: &ModbusSim,
    journal_dir: &std::path::Path,
    out: Arc<Mutex<Vec<Delivered>>>,
    meter: Option<MeterFeed>,
    status: Arc<Mutex<BatteryStatus>>,
) -> Addr<BatteryStorage> {
    let (link, device) = common::discover_battery(sim.addr).await;
    let collector = Collector(out).start();
    let battery = BatteryStorage::new(
        link,
        device,
        ReleaseJournal::open(journal_dir).unwrap(),
        BatterySettings {
            release_power_w: 2_000,
            clock: Clock::scenario(0, SPEEDUP),
            poll: Duration::from_millis(20),
            safe_after: Duration::from_millis(300),
            chain_id: chain_id(),
        },
        collector.recipient(),
        status,
    );
    match meter {
        Some(m) => battery.watch_meter(m).start(),
        None => battery.start(),
    }
}

/// A discharge order with no deadline, the whole trade this home's (the tests' usual order).
fn discharge(trade: Hash32, energy_wh: u64, peers: Vec<gridlet_ledger::MemberKey>) -> ReleaseOrder {
    ReleaseOrder {
        trade,
        energy_wh,
        deadline_ms: u64::MAX,
        peers,
        share_ppm: 1_000_000,
        mode: gridlet_ledger::DeliveryMode::Discharge,
    }
}

/// Sends the battery, every `every`, what `messages(at)` returns (homes' signed net power).
fn spawn_net_power(
    battery: &Addr<BatteryStorage>,
    every: Duration,
    messages: impl Fn(u64) -> Vec<NetPowerMessage> + 'static,
) {
    let battery = battery.clone();
    actix::spawn(async move {
        for at in 1u64.. {
            for m in messages(at) {
                battery.do_send(BuyerPower(m));
            }
            tokio::time::sleep(every).await;
        }
    });
}

fn battery_power_w(sim: &ModbusSim) -> i32 {
    match &sim.devices.lock().unwrap()[&1].model {
        DeviceModel::Battery(b) => b.power_w,
        _ => unreachable!(),
    }
}

fn discharged_mwh(sim: &ModbusSim) -> u64 {
    match &sim.devices.lock().unwrap()[&1].model {
        DeviceModel::Battery(b) => b.discharged_mwh,
        _ => unreachable!(),
    }
}

#[actix_rt::test]
async fn a_trade_is_released_exactly_once_even_across_a_restart() {
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::battery(40000, 10_000, 5_000, 50));
    let sim = ModbusSim::start(
        "127.0.0.1:0".parse().unwrap(),
        devices,
        FaultPlan::default(),
    )
    .await
    .unwrap();
    spawn_physics(sim.devices.clone());
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let battery = battery_actor(&sim, dir.path(), delivered.clone()).await;
    let trade = Hash32::sha256(b"trade-1");
    let order = discharge(trade, 300, Vec::new());
    battery.send(Release(order.clone())).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while delivered.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no delivery reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = delivered.lock().unwrap()[0];
    assert_eq!(
        report,
        Delivered {
            trade,
            delivered_wh: 300
        }
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let released = discharged_mwh(&sim);
    // The battery's own energy integration agrees with the traded Wh within 1 Wh.
    assert!(
        (299_000..=301_000).contains(&released),
        "discharged {released} mWh for 300 Wh"
    );
    // The same order again: nothing moves, nothing is reported twice; nor after a restart (a new
    // actor on the same journal).
    battery.send(Release(order.clone())).await.unwrap();
    drop(battery);
    let again = Arc::new(Mutex::new(Vec::new()));
    let battery = battery_actor(&sim, dir.path(), again.clone()).await;
    battery.send(Release(order)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(discharged_mwh(&sim), released, "a trade was released twice");
    // It is reported again, once (the gateway hands on only orders with no delivery on chain).
    assert_eq!(*again.lock().unwrap(), vec![report]);
    assert_eq!(
        ReleaseJournal::open(dir.path()).unwrap().state(&trade),
        Some(ReleaseState::Done { delivered_wh: 300 })
    );
}

#[actix_rt::test]
async fn a_release_finished_before_a_crash_is_reported_again_once_and_not_repeated() {
    let sim = battery_sim().await;
    let dir = tempfile::tempdir().unwrap();
    // A crash after the journal recorded the end, before the report reached the chain.
    let trade = Hash32::sha256(b"trade-finished-unreported");
    {
        let mut j = ReleaseJournal::open(dir.path()).unwrap();
        j.begin(trade, 250, 0, false, false).unwrap();
        j.end(trade, 240).unwrap();
    }
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let battery = battery_actor(&sim, dir.path(), delivered.clone()).await;
    let order = discharge(trade, 250, Vec::new());
    // The restarted gateway hands the open order on (twice: it may come with a new block too).
    battery.send(Release(order.clone())).await.unwrap();
    battery.send(Release(order)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        *delivered.lock().unwrap(),
        vec![Delivered {
            trade,
            delivered_wh: 240
        }],
        "reported once, with what the journal recorded"
    );
    assert_eq!(
        discharged_mwh(&sim),
        0,
        "a finished release moved energy again"
    );
}

async fn battery_sim() -> ModbusSim {
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::battery(40000, 10_000, 5_000, 50));
    let sim = ModbusSim::start(
        "127.0.0.1:0".parse().unwrap(),
        devices,
        FaultPlan::default(),
    )
    .await
    .unwrap();
    spawn_physics(sim.devices.clone());
    sim
}

/// Battery physics on the scenario clock.
fn spawn_physics(devices: gridlet_hil::modbus_sim::SharedDevices) {
    actix::spawn(gridlet_hil::modbus_sim::run_physics(
        devices,
        SPEEDUP,
        |_| {},
    ));
}

/// The home's grid meter, computed from the simulated battery every 10 ms while `alive`:
/// `load_w − battery` (positive = import; PV, if any, is in `load_w`).
fn spawn_meter(
    sim: &ModbusSim,
    load_w: i32,
    alive: Arc<std::sync::atomic::AtomicBool>,
) -> MeterFeed {
    let (meter, feed) = tokio::sync::watch::channel(MeterReadings::default());
    let devices = sim.devices.clone();
    actix::spawn(async move {
        loop {
            if alive.load(std::sync::atomic::Ordering::SeqCst) {
                let battery_w = match &devices.lock().unwrap()[&1].model {
                    DeviceModel::Battery(b) => b.power_w,
                    _ => 0,
                };
                meter.send_modify(|m| {
                    m.power_w = Some((f64::from(load_w - battery_w), std::time::Instant::now()));
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    feed
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn a_metered_release_covers_the_buyers_draw_only_and_stops_on_stale_meter_data() {
    let sim = battery_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    // The seller home: a 500 W load, no PV; its meter reads `load − battery` every 10 ms
    // while it is alive (positive = import).
    const LOAD_W: i32 = 500;
    let meter_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feed = spawn_meter(&sim, LOAD_W, meter_alive.clone());
    let status = Arc::new(Mutex::new(BatteryStatus::default()));
    let battery = battery_with_meter(
        &sim,
        dir.path(),
        delivered.clone(),
        Some(feed),
        status.clone(),
    )
    .await;
    // The buyer imports 800 W and says so, signed, on the bus; another home claims 5 kW.
    let buyer = gridlet_ledger::crypto::deterministic_key(9, 1);
    let stranger = gridlet_ledger::crypto::deterministic_key(9, 2);
    spawn_net_power(&battery, Duration::from_millis(10), move |at| {
        let mut forged = NetPowerMessage::sign(&chain_id(), &buyer, at, 800);
        forged.net_w = 5_000;
        vec![
            NetPowerMessage::sign(&chain_id(), &buyer, at, 800),
            NetPowerMessage::sign(&chain_id(), &stranger, at, 5_000),
            forged,
        ]
    });
    let trade = Hash32::sha256(b"trade-metered");
    battery
        .send(Release(discharge(
            trade,
            100,
            vec![gridlet_ledger::MemberKey::from_secret(&buyer)],
        )))
        .await
        .unwrap();
    // The battery covers the home's 500 W and the buyer's 800 W: 1 300 W, not the 2 kW limit.
    wait_for("the release to follow the buyer", 10, || {
        battery_power_w(&sim) == LOAD_W + 800
    })
    .await;
    let mut highest = 0;
    for _ in 0..20 {
        highest = highest.max(battery_power_w(&sim));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        highest <= LOAD_W + 800 + 10,
        "exported beyond the buyer's draw: {highest} W"
    );
    // The meter goes silent mid-release: the battery stops.
    meter_alive.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("the safe state", 10, || battery_power_w(&sim) == 0).await;
    assert!(status.lock().unwrap().safe_state);
    assert!(status.lock().unwrap().meter_stale_polls > 0);
    let paused_at = discharged_mwh(&sim);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        discharged_mwh(&sim),
        paused_at,
        "discharged while the meter was stale"
    );
    assert!(delivered.lock().unwrap().is_empty());
    // The meter comes back: the release resumes and ends on the traded Wh, counted as what
    // reached the buyer (its 800 W), not what the battery gave (its own home's load too).
    meter_alive.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for("the delivery", 30, || !delivered.lock().unwrap().is_empty()).await;
    assert_eq!(
        delivered.lock().unwrap()[0],
        Delivered {
            trade,
            delivered_wh: 100
        }
    );
    let discharged = discharged_mwh(&sim);
    assert!(
        discharged > 130_000,
        "the battery gave the home's load besides the trade: {discharged} mWh"
    );
    assert!(!status.lock().unwrap().safe_state);
    let journal = ReleaseJournal::open(dir.path()).unwrap();
    assert_eq!(
        journal.state(&trade),
        Some(ReleaseState::Done { delivered_wh: 100 })
    );
}

#[actix_rt::test]
async fn without_a_grid_meter_a_release_runs_at_the_limit_until_the_battery_dropped_by_the_trade() {
    let sim = battery_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let battery = battery_actor(&sim, dir.path(), delivered.clone()).await;
    let trade = Hash32::sha256(b"trade-unmetered");
    battery
        .send(Release(discharge(trade, 300, Vec::new())))
        .await
        .unwrap();
    // Without a grid meter the battery releases at its limit until it dropped by 300 Wh.
    wait_for("the release to start", 10, || {
        battery_power_w(&sim) == 2_000
    })
    .await;
    wait_for("the delivery", 20, || !delivered.lock().unwrap().is_empty()).await;
    assert_eq!(
        delivered.lock().unwrap()[0],
        Delivered {
            trade,
            delivered_wh: 300
        }
    );
}

fn charged_mwh(sim: &ModbusSim) -> u64 {
    match &sim.devices.lock().unwrap()[&1].model {
        DeviceModel::Battery(b) => b.charged_mwh,
        _ => unreachable!(),
    }
}

#[actix_rt::test]
async fn a_charge_trade_fills_the_buyers_battery_by_what_the_seller_exports() {
    let sim = battery_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    // The buying home at noon: its PV covers its load (net 0 without the battery); its meter
    // reads `−battery` every 10 ms (positive = import).
    let feed = spawn_meter(&sim, 0, Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let status = Arc::new(Mutex::new(BatteryStatus::default()));
    let battery = battery_with_meter(
        &sim,
        dir.path(),
        delivered.clone(),
        Some(feed),
        status.clone(),
    )
    .await;
    // The seller's battery is full and it exports 1 200 W, signed on the bus; another home
    // claims a 5 kW export it is not party to.
    let seller = gridlet_ledger::crypto::deterministic_key(9, 3);
    let stranger = gridlet_ledger::crypto::deterministic_key(9, 4);
    spawn_net_power(&battery, Duration::from_millis(20), move |at| {
        vec![
            NetPowerMessage::sign(&chain_id(), &seller, at, -1_200),
            NetPowerMessage::sign(&chain_id(), &stranger, at, -5_000),
        ]
    });
    let charged_before = charged_mwh(&sim);
    let trade = Hash32::sha256(b"charge-1");
    battery
        .send(Release(ReleaseOrder {
            mode: gridlet_ledger::DeliveryMode::Charge,
            ..discharge(
                trade,
                100,
                vec![gridlet_ledger::MemberKey::from_secret(&seller)],
            )
        }))
        .await
        .unwrap();
    wait_for("the battery to charge by the seller's export", 10, || {
        battery_power_w(&sim) == -1_200
    })
    .await;
    let mut lowest = 0;
    for _ in 0..20 {
        lowest = lowest.min(battery_power_w(&sim));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        lowest >= -1_210,
        "charged beyond the seller's export: {lowest} W"
    );
    wait_for("the delivery", 30, || !delivered.lock().unwrap().is_empty()).await;
    assert_eq!(
        delivered.lock().unwrap()[0],
        Delivered {
            trade,
            delivered_wh: 100
        }
    );
    // Read back from the simulated battery: it took the traded energy (to a few Wh: the
    // meter samples every 10 ms, the battery every 20 ms).
    let charged = charged_mwh(&sim) - charged_before;
    assert!(
        (95_000..=106_000).contains(&charged),
        "the battery took {charged} mWh for a 100 Wh charge trade"
    );
    let journal = ReleaseJournal::open(dir.path()).unwrap();
    assert_eq!(
        journal.state(&trade),
        Some(ReleaseState::Done { delivered_wh: 100 })
    );
    // After the trade the battery is its own controller's again.
    wait_for("the battery back to its own control", 10, || {
        battery_power_w(&sim) == 0
    })
    .await;
}

#[actix_rt::test]
async fn a_default_genesis_trade_of_1000_wh_is_delivered_in_full() {
    // The delivery window the default genesis gives a 1 000 Wh trade: delivery_blocks plus the
    // slots 1 000 Wh take at the planning power (2 kW), less the report margin the market actor
    // keeps — on the community clock, from the release.
    let home = gridlet_ledger::crypto::deterministic_key(9, 5);
    let key = gridlet_ledger::MemberKey::from_secret(&home);
    let genesis = gridlet_ledger::Genesis::with_defaults(
        "default-window",
        0,
        vec![gridlet_ledger::genesis::Member {
            name: "seller".into(),
            key,
            attestor: key,
            equipment: gridlet_ledger::genesis::Equipment::device(10_000, 5_000),
            balance: gridlet_ledger::MicroCredits::new(1),
        }],
        gridlet_ledger::selection::SelectionRule::Paper,
    );
    let rules = gridlet_ledger::state::Rules::from_genesis(&genesis).unwrap();
    let blocks = rules.delivery_deadline(0, gridlet_ledger::WattHours::new(1_000)) - 5;
    let deadline_ms = blocks * genesis.slot_ms;
    assert_eq!(deadline_ms, (60 + 1_800 - 5) * 1_000, "the default window");

    let sim = battery_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    // The seller at noon: its PV covers its own load; its meter reads `−battery`.
    let feed = spawn_meter(&sim, 0, Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let battery = battery_with_meter(
        &sim,
        dir.path(),
        delivered.clone(),
        Some(feed),
        Arc::default(),
    )
    .await;
    // The buyer draws 2.2 kW, above the 2 kW release limit, for the whole window.
    let buyer = gridlet_ledger::crypto::deterministic_key(9, 6);
    spawn_net_power(&battery, Duration::from_millis(20), move |at| {
        vec![NetPowerMessage::sign(&chain_id(), &buyer, at, 2_200)]
    });
    let before = discharged_mwh(&sim);
    let trade = Hash32::sha256(b"default-1000");
    battery
        .send(Release(ReleaseOrder {
            // The scenario clock starts at 0 with the release.
            deadline_ms,
            ..discharge(
                trade,
                1_000,
                vec![gridlet_ledger::MemberKey::from_secret(&buyer)],
            )
        }))
        .await
        .unwrap();
    // 1 855 s of community time at 100×: about 19 s.
    wait_for("the delivery", 40, || !delivered.lock().unwrap().is_empty()).await;
    assert_eq!(
        delivered.lock().unwrap()[0],
        Delivered {
            trade,
            delivered_wh: 1_000
        },
        "not delivered in full within the default window"
    );
    let gave = discharged_mwh(&sim) - before;
    assert!(
        (990_000..=1_010_000).contains(&gave),
        "the battery gave {gave} mWh for 1 000 Wh"
    );
}

/// Row D5 of the fault matrix: the grid meter goes silent mid-release 20 times; each time the
/// battery must be at 0 W within T + δ of the last fresh reading (T = `safe_after`, 300 ms here;
/// δ = 250 ms: a few 20 ms polls and the Modbus write on a loaded CI machine), and resume once
/// the meter is back. Prints the row's JSON line.
#[actix_rt::test]
async fn d5_a_silent_meter_puts_the_battery_in_its_safe_state_within_t_plus_delta() {
    const T_MS: u128 = 300;
    const DELTA_MS: u128 = 250;
    const CYCLES: usize = 20;
    let sim = battery_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let meter_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // No PV, a 1.5 kW home load, and a buyer importing 400 W on the bus.
    let feed = spawn_meter(&sim, 1_500, meter_alive.clone());
    let status = Arc::new(Mutex::new(BatteryStatus::default()));
    let battery =
        battery_with_meter(&sim, dir.path(), Arc::default(), Some(feed), status.clone()).await;
    let buyer = gridlet_ledger::crypto::deterministic_key(9, 1);
    spawn_net_power(&battery, Duration::from_millis(10), move |at| {
        vec![NetPowerMessage::sign(&chain_id(), &buyer, at, 400)]
    });
    battery
        .send(Release(discharge(
            Hash32::sha256(b"trade-d5"),
            5_000,
            vec![gridlet_ledger::MemberKey::from_secret(&buyer)],
        )))
        .await
        .unwrap();
    let mut times_ms = Vec::new();
    for cycle in 0..CYCLES {
        wait_for("the release to run", 10, || battery_power_w(&sim) > 0).await;
        // Let fresh readings flow a little, then silence the meter.
        tokio::time::sleep(Duration::from_millis(50)).await;
        meter_alive.store(false, std::sync::atomic::Ordering::SeqCst);
        let silent = std::time::Instant::now();
        while battery_power_w(&sim) != 0 {
            assert!(
                silent.elapsed() < Duration::from_secs(5),
                "cycle {cycle}: no safe state after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times_ms.push(silent.elapsed().as_millis());
        assert!(status.lock().unwrap().safe_state, "cycle {cycle}");
        meter_alive.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    times_ms.sort();
    let max = *times_ms.last().unwrap();
    let median = times_ms[CYCLES / 2];
    println!(
        "{}",
        serde_json::json!({
            "row": "D5",
            "cycles": CYCLES,
            "t_ms": T_MS,
            "delta_ms": DELTA_MS,
            "time_to_safe_state_ms_median": median,
            "time_to_safe_state_ms_max": max,
            "within_t_plus_delta": times_ms.iter().filter(|t| **t <= T_MS + DELTA_MS).count(),
        })
    );
    assert!(
        max <= T_MS + DELTA_MS,
        "safe state took {max} ms (> T + δ = {} ms): {times_ms:?}",
        T_MS + DELTA_MS
    );
    assert!(
        median >= T_MS - 20,
        "stopped before the data was stale ({median} ms): the check is not what is measured"
    );
}
