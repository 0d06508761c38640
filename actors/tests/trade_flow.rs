//! The whole trading flow between two homes' actors over the embedded MQTT broker: home A's
//! battery attests and offers energy, home B buys it, the purchase becomes final, A's battery
//! (the HIL simulator over Modbus) releases exactly the traded Wh, A's battery signs the
//! receipt, and escrow pays A.

mod common;

use gridlet_ledger::{MicroCredits, Price, WattHours};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use gridlet_actors::battery::{BatterySettings, BatteryStatus, BatteryStorage};
use gridlet_actors::bus::{self, BusConfig};
use gridlet_actors::journal::ReleaseJournal;
use gridlet_actors::ledger_actor::{
    forward_bus, Clock, GetState, LedgerActor, LedgerStatus, NodeWorker, Subscribe,
};
use gridlet_actors::market_actor::{Buy, HomeLink, MarketActor, Offer};
use gridlet_core::node::{Node, NodeConfig};
use gridlet_core::strategy::StrategyConfig;
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_hil::devices::DeviceModel;
use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::market::book::ContractStatus;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{open_store, SignerGuard};
use gridlet_ledger::{Genesis, LedgerState, MemberKey};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn state_until(
    ledger: &Addr<LedgerActor>,
    what: impl Fn(&LedgerState) -> bool,
    secs: u64,
) -> LedgerState {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = ledger.send(GetState).await.unwrap() {
            if what(&s) {
                return s;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn an_offer_bought_by_a_neighbour_is_released_exactly_and_paid() {
    let keys = [deterministic_key(501, 0), deterministic_key(501, 1)];
    let attestors = [deterministic_key(502, 0), deterministic_key(502, 1)];
    let members: Vec<Member> = (0..2)
        .map(|i| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(&keys[i]),
            attestor: MemberKey::from_secret(&attestors[i]),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(10_000_000),
        })
        .collect();
    let mut genesis = Genesis::with_defaults("trade-flow", now_ms(), members, SelectionRule::Paper);
    genesis.slot_ms = 300;
    genesis.selection.fallback_ranks = 2;
    genesis.market.delivery_blocks = 200;
    let port = free_port();
    bus::start_embedded_broker(port, 8 * 1024 * 1024).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut ledgers = Vec::new();
    for i in 0..2 {
        let (chain, _) = open_store(dirs[i].path(), genesis.clone(), u64::MAX).unwrap();
        let height = chain.chain().head_height();
        let guard = SignerGuard::open(dirs[i].path(), height).unwrap();
        let votes = gridlet_ledger::store::VoteGuard::open(dirs[i].path(), height).unwrap();
        let node = Node::new(
            NodeConfig {
                name: format!("home-{i}"),
                max_mempool: 1000,
                sync_batch: 100,
                last_slot: u64::MAX,
            },
            keys[i],
            chain,
            guard,
            votes,
        );
        let cell = std::sync::Mutex::new(Some(node));
        let worker = SyncArbiter::start(1, move || {
            NodeWorker::new(cell.lock().unwrap().take().unwrap())
        });
        let (handle, events, _task) = bus::spawn(BusConfig {
            host: "127.0.0.1".into(),
            port,
            node: format!("home-{i}"),
            prefix: "trade-flow".into(),
            chain_id: genesis.hash().to_hex(),
            persistent_session: false,
            backoff: BackoffPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            max_packet_bytes: 8 * 1024 * 1024,
        });
        let ledger = LedgerActor::new(
            worker,
            handle,
            Clock::real(),
            Duration::from_millis(50),
            Arc::new(Mutex::new(LedgerStatus::default())),
        )
        .start();
        forward_bus(events, ledger.clone());
        ledgers.push(ledger);
    }
    // Home A's battery: the HIL simulator, physics 100× faster than real time.
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::battery(40000, 10_000, 5_000, 60));
    let sim = ModbusSim::start(
        "127.0.0.1:0".parse().unwrap(),
        devices,
        FaultPlan::default(),
    )
    .await
    .unwrap();
    let physics = sim.devices.clone();
    actix::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            for d in physics.lock().unwrap().values_mut() {
                d.step(500);
            }
        }
    });
    let (link, device) = common::discover_battery(sim.addr).await;
    let journal_dir = tempfile::tempdir().unwrap();
    let journal = ReleaseJournal::open(journal_dir.path()).unwrap();
    let ledger_a = ledgers[0].clone();
    let chain_id = genesis.hash();
    let slot_ms = genesis.slot_ms;
    let me_a = MemberKey::from_secret(&keys[0]);
    let attestor_a = attestors[0];
    let data_a = tempfile::tempdir().unwrap();
    let data_a_path = data_a.path().to_path_buf();
    let market_a = MarketActor::create(move |ctx| {
        let battery = BatteryStorage::new(
            link,
            device,
            journal,
            BatterySettings {
                release_power_w: 2_000,
                clock: Clock::real(),
                poll: Duration::from_millis(20),
                safe_after: Duration::from_secs(5),
                chain_id,
            },
            ctx.address().recipient(),
            Arc::new(Mutex::new(BatteryStatus::default())),
        );
        let feed = battery.feed();
        let battery = battery.start();
        // The battery's readings tell the market actor what it may offer; no strategy runs.
        let home = HomeLink {
            strategy: StrategyConfig {
                enabled: false,
                ..StrategyConfig::default()
            },
            decide_every: Duration::from_secs(3_600),
            meter: None,
            battery: Some(feed),
            max_age: Duration::from_secs(5),
            data_dir: data_a_path,
            auction_round_blocks: 0,
            forecast: None,
        };
        MarketActor::new(
            me_a,
            gridlet_actors::attestor::Attestor::Gateway(attestor_a),
            chain_id,
            slot_ms,
            Clock::real(),
            ledger_a,
        )
        .with_home(home)
        .unwrap()
        .with_battery(battery)
    });
    ledgers[0]
        .send(Subscribe(market_a.clone().recipient()))
        .await
        .unwrap();
    let market_b = MarketActor::new(
        MemberKey::from_secret(&keys[1]),
        gridlet_actors::attestor::Attestor::Gateway(attestors[1]),
        chain_id,
        slot_ms,
        Clock::real(),
        ledgers[1].clone(),
    )
    .start();

    // A offers 400 Wh at 200 000 µcr/kWh, once its battery has been read.
    let offer = Offer {
        mode: gridlet_ledger::DeliveryMode::Discharge,
        interval: 1,
        energy_wh: WattHours::new(400),
        price: Price::new(200_000),
        expiry_height: 10_000,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match market_a.send(offer).await.unwrap() {
            Ok(_) => break,
            Err(e) if e.to_string().contains("not known") => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the battery was never read"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the offer was refused: {e}"),
        }
    }
    let state = state_until(
        &ledgers[1],
        |s| {
            s.market()
                .contracts
                .values()
                .any(|c| c.status == ContractStatus::Open)
        },
        20,
    )
    .await;
    let (contract, c) = state
        .market()
        .contracts
        .iter()
        .next()
        .map(|(id, c)| (*id, c.clone()))
        .unwrap();
    assert_eq!(c.seller, me_a);
    let payment = c.price.cost_of(c.energy_wh).unwrap();
    let a_before = state.account(&me_a).balance;
    market_b
        .send(Buy { contract, payment })
        .await
        .unwrap()
        .expect("the purchase is submitted");
    // Final, released, delivered by the battery, reported with the battery's receipt, settled.
    let state = state_until(
        &ledgers[1],
        |s| s.market().trades.values().any(|t| t.settled),
        60,
    )
    .await;
    let trade = state.market().trades.values().next().unwrap();
    assert_eq!(trade.delivered_wh, Some(WattHours::new(400)));
    assert_eq!(trade.paid_out, payment);
    assert_eq!(
        state.account(&me_a).balance.get(),
        a_before.get() + payment.get() - genesis.tx_fee.get()
    );
    let discharged = match &sim.devices.lock().unwrap()[&1].model {
        DeviceModel::Battery(b) => b.discharged_mwh,
        _ => unreachable!(),
    };
    assert!(
        (399_000..=401_000).contains(&discharged),
        "battery released {discharged} mWh for 400 Wh"
    );
}
