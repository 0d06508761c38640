//! A forged block kept as a *retained* message on the community's block topic (delivered to
//! every gateway at every (re)subscription): production and quorum finality go on, and a home
//! that joins later — meeting the forgery first — still syncs and finalizes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use gridlet_actors::bus::{self, BusConfig};
use gridlet_actors::ledger_actor::{forward_bus, Clock, LedgerActor, LedgerStatus, NodeWorker};
use gridlet_core::node::{BusMessage, Node, NodeConfig};
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_ledger::crypto::{deterministic_key, Signature};
use gridlet_ledger::genesis::Member;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{open_store, SignerGuard, VoteGuard};
use gridlet_ledger::{Block, BlockHeader, Genesis, Hash32, MemberKey, MicroCredits};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const PREFIX: &str = "forged";

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

/// The field report's forgery: an unknown producer and an absurd height.
fn forged_block(genesis: &Genesis) -> String {
    let outsider = deterministic_key(999, 9);
    let header = BlockHeader {
        chain_id: genesis.hash(),
        height: 999_999_999,
        slot: 999_999_999,
        prev_hash: Hash32([7; 32]),
        tx_root: Hash32([0; 32]),
        tx_count: 0,
        state_hash: Hash32([0; 32]),
        producer: MemberKey::from_secret(&outsider),
    };
    let block = Block {
        signature: Signature::sign(&header.hash(), &outsider),
        header,
        transactions: Vec::new(),
    };
    serde_json::to_string(&BusMessage::Block {
        hex: gridlet_ledger::codec::to_hex(&block.encode()),
    })
    .unwrap()
}

async fn publish_retained(port: u16, topic: String, payload: String) {
    let mut opts = MqttOptions::new("forger", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < deadline, "no PUBACK");
        if let Ok(Event::Incoming(Packet::PubAck(_))) = events.poll().await {
            break;
        }
    }
}

struct Home {
    status: Arc<Mutex<LedgerStatus>>,
    _ledger: Addr<LedgerActor>,
    _dir: tempfile::TempDir,
}

fn start_home(genesis: &Genesis, key: secp256k1::SecretKey, i: usize, port: u16) -> Home {
    let dir = tempfile::tempdir().unwrap();
    let (chain, _) = open_store(dir.path(), genesis.clone(), u64::MAX).unwrap();
    let node = Node::new(
        NodeConfig {
            name: format!("home-{i}"),
            max_mempool: 1000,
            sync_batch: 100,
            last_slot: u64::MAX,
        },
        key,
        chain,
        SignerGuard::open(dir.path(), 0).unwrap(),
        VoteGuard::open(dir.path(), 0).unwrap(),
    );
    let cell = Mutex::new(Some(node));
    let worker = SyncArbiter::start(1, move || {
        NodeWorker::new(cell.lock().unwrap().take().unwrap())
    });
    let (handle, events, _task) = bus::spawn(BusConfig {
        host: "127.0.0.1".into(),
        port,
        node: format!("home-{i}"),
        prefix: PREFIX.into(),
        chain_id: genesis.hash().to_hex(),
        persistent_session: false,
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        max_packet_bytes: 8 * 1024 * 1024,
    });
    let status = Arc::new(Mutex::new(LedgerStatus::default()));
    let ledger = LedgerActor::new(
        worker,
        handle,
        Clock::real(),
        Duration::from_millis(50),
        status.clone(),
    )
    .start();
    forward_bus(events, ledger.clone());
    Home {
        status,
        _ledger: ledger,
        _dir: dir,
    }
}

fn finalized(h: &Home) -> u64 {
    h.status.lock().unwrap().finalized
}

#[actix_rt::test]
async fn a_retained_forged_block_stops_neither_production_nor_finality() {
    let keys: Vec<_> = (0..4).map(|i| deterministic_key(611, i)).collect();
    let members: Vec<Member> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(k),
            attestor: MemberKey::from_secret(&deterministic_key(612, i as u64)),
            equipment: gridlet_ledger::genesis::Equipment::device(20_000, 10_000),
            balance: MicroCredits::new(1_000_000),
        })
        .collect();
    let mut genesis = Genesis::with_defaults("forged", now_ms(), members, SelectionRule::Paper);
    genesis.slot_ms = 300;
    let port = free_port();
    bus::start_embedded_broker(port, 8 * 1024 * 1024).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chain16: String = genesis.hash().to_hex().chars().take(16).collect();
    publish_retained(
        port,
        format!("{PREFIX}/{chain16}/block"),
        forged_block(&genesis),
    )
    .await;
    // Three of four homes: a quorum (3 of 4), each meeting the forgery on subscribing.
    let homes: Vec<Home> = (0..3)
        .map(|i| start_home(&genesis, keys[i], i, port))
        .collect();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let first: Vec<u64> = homes.iter().map(finalized).collect();
    for (i, h) in homes.iter().enumerate() {
        assert!(
            h.status.lock().unwrap().rejected >= 1,
            "home {i} never met the retained forgery"
        );
    }
    assert!(
        first.iter().all(|f| *f >= 5),
        "finality stalled behind the forgery: {first:?}"
    );
    // The fourth home starts now, meets the forgery first, and still catches up.
    let late = start_home(&genesis, keys[3], 3, port);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let later: Vec<u64> = homes.iter().map(finalized).collect();
    for (a, b) in first.iter().zip(&later) {
        assert!(b >= &(a + 5), "finality stopped: {first:?} → {later:?}");
    }
    assert!(late.status.lock().unwrap().rejected >= 1);
    let top = *later.iter().max().unwrap();
    assert!(
        finalized(&late) + 3 >= top,
        "the late home did not catch up: {} vs {top}",
        finalized(&late)
    );
}
