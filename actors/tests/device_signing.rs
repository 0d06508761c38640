//! A battery that holds the home's attestor key, over real Modbus TCP: it signs an attestation
//! of what it stores and refuses more, receipts a trade only up to what it moved since the
//! release began (the battery actor tells it), and a gateway relaying for a battery with
//! another key refuses to pass its signature on. The chain takes the battery's attestation
//! and refuses one the gateway forged with a key of its own.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use gridlet_actors::attestor::{AttestError, Attestor};
use gridlet_actors::battery::{BatterySettings, BatteryStorage, Delivered, Release};
use gridlet_actors::clock::Clock;
use gridlet_actors::journal::ReleaseJournal;
use gridlet_core::release::ReleaseOrder;
use gridlet_hil::devices::DeviceModel;
use gridlet_hil::modbus_sim::SharedDevices;
use gridlet_hil::signing_device::SigningDevice;
use gridlet_hil::{FaultPlan, ModbusSim, SimDevice};
use gridlet_ledger::chain::{Chain, Checks};
use gridlet_ledger::crypto::{deterministic_key, Signature};
use gridlet_ledger::genesis::{Equipment, Member};
use gridlet_ledger::market::attestation_digest;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::tx::Attestation;
use gridlet_ledger::{
    Genesis, Hash32, MemberKey, MicroCredits, Transaction, TxError, TxPayload, WattHours,
};

const SPEEDUP: f64 = 100.0;

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

/// Battery physics on the scenario clock; the home has no load, so everything the battery
/// discharges leaves through the grid connection (what the device counts for a discharge).
fn spawn_physics(devices: SharedDevices) {
    actix::spawn(gridlet_hil::modbus_sim::run_physics(
        devices,
        SPEEDUP,
        |d| {
            if let (DeviceModel::Battery(b), Some(s)) = (&d.model, d.signer.as_mut()) {
                s.exported_mwh = b.discharged_mwh;
                s.grid_w = -i64::from(b.power_w.max(0));
            }
        },
    ));
}

async fn battery(sim: &ModbusSim, dir: &std::path::Path, chain_id: Hash32) -> BatteryStorage {
    let (link, device) = common::discover_battery(sim.addr).await;
    let out = Arc::new(Mutex::new(Vec::new()));
    BatteryStorage::new(
        link,
        device,
        ReleaseJournal::open(dir).unwrap(),
        BatterySettings {
            release_power_w: 2_000,
            clock: Clock::scenario(0, SPEEDUP),
            poll: Duration::from_millis(20),
            safe_after: Duration::from_millis(300),
            chain_id,
        },
        Collector(out).start().recipient(),
        Arc::default(),
    )
}

#[actix_rt::test]
async fn the_battery_signs_what_it_measures_and_nothing_more() {
    let home_key = deterministic_key(31, 0);
    let attestor_key = deterministic_key(31, 1);
    let (home, attestor_pub) = (
        MemberKey::from_secret(&home_key),
        MemberKey::from_secret(&attestor_key),
    );
    let genesis = Genesis::with_defaults(
        "device-signing",
        0,
        vec![Member {
            name: "home".into(),
            key: home,
            attestor: attestor_pub,
            equipment: Equipment::device(10_000, 5_000),
            balance: MicroCredits::new(1_000_000),
        }],
        SelectionRule::Paper,
    );
    let chain_id = genesis.hash();
    // A 10 kWh battery at 50 %, commissioned with the home's attestor key.
    let mut battery_device = SimDevice::battery(40000, 10_000, 5_000, 50);
    battery_device.signer = Some(SigningDevice::new(attestor_key, chain_id, home));
    let sim = ModbusSim::start(
        "127.0.0.1:0".parse().unwrap(),
        BTreeMap::from([(1, battery_device)]),
        FaultPlan::default(),
    )
    .await
    .unwrap();
    spawn_physics(sim.devices.clone());
    let dir = tempfile::tempdir().unwrap();
    let (storage, signer) = battery(&sim, dir.path(), chain_id)
        .await
        .signing(attestor_pub.to_public_key().unwrap());
    let battery_addr = storage.start();
    let attestor = Attestor::Device(signer);

    // What it stores, it signs; the chain takes it.
    let a = attestor
        .attest(&chain_id, &home, 1, WattHours::new(4_000))
        .await
        .unwrap();
    let mut chain = Chain::new(genesis.clone()).unwrap();
    let tx = |nonce, payload| {
        Transaction {
            chain_id,
            sender: home,
            nonce,
            fee: genesis.tx_fee,
            payload,
        }
        .sign(&home_key)
    };
    let out = chain
        .produce(&home_key, 1, &[tx(0, TxPayload::Attest(a))])
        .unwrap();
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    chain.insert(out.block, Checks::FULL).unwrap();
    // A gateway signing with a key of its own forges: the chain refuses it.
    let forged = Attestation {
        interval: 2,
        energy_wh: WattHours::new(500),
        signature: Signature::sign(
            &attestation_digest(&chain_id, &home, 2, WattHours::new(500)),
            &home_key,
        ),
    };
    let out = chain
        .produce(&home_key, 2, &[tx(1, TxPayload::Attest(forged))])
        .unwrap();
    assert_eq!(out.rejected[0].1, TxError::BadAttestation { home });

    // More than it stores (5 000 Wh, nothing exported): refused, with its own figure.
    let refused = attestor
        .attest(&chain_id, &home, 2, WattHours::new(500_000))
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        AttestError::Refused {
            what: "an attestation",
            claimed_wh: 500_000,
            limit_wh: 5_000
        }
    );
    assert!(refused.to_string().contains("at most 5000 Wh"), "{refused}");

    // A receipt for a trade it never saw begin.
    let trade = Hash32::sha256(b"device-signed trade");
    assert_eq!(
        attestor
            .receipt(&chain_id, &trade, WattHours::new(100))
            .await
            .unwrap_err(),
        AttestError::UnknownTrade { trade }
    );
    // The battery actor tells the battery when the release begins; after 200 Wh left, the
    // battery receipts 200 Wh and refuses a claim of 1 000 Wh for the same trade.
    battery_addr
        .send(Release(ReleaseOrder {
            trade,
            energy_wh: 200,
            deadline_ms: u64::MAX,
            peers: Vec::new(),
            share_ppm: 1_000_000,
            mode: gridlet_ledger::DeliveryMode::Discharge,
        }))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let moved = match &sim.devices.lock().unwrap()[&1].model {
            DeviceModel::Battery(b) => b.discharged_mwh,
            _ => unreachable!(),
        };
        if moved >= 199_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the release did not run: {:?}",
            sim.devices.lock().unwrap()[&1].model
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let receipt = attestor
        .receipt(&chain_id, &trade, WattHours::new(200))
        .await
        .unwrap();
    assert!(receipt.verify(
        &gridlet_ledger::market::receipt_digest(&chain_id, &trade, WattHours::new(200)),
        &attestor_pub.to_public_key().unwrap()
    ));
    assert!(matches!(
        attestor
            .receipt(&chain_id, &trade, WattHours::new(1_000))
            .await
            .unwrap_err(),
        AttestError::Refused { limit_wh, .. } if (200..=215).contains(&limit_wh)
    ));

    // A gateway set up for another attestor key does not relay this battery's signatures.
    let stranger = MemberKey::from_secret(&deterministic_key(31, 9));
    let other = tempfile::tempdir().unwrap();
    let (_, wrong) = battery(&sim, other.path(), chain_id)
        .await
        .signing(stranger.to_public_key().unwrap());
    assert_eq!(
        Attestor::Device(wrong)
            .attest(&chain_id, &home, 3, WattHours::new(100))
            .await
            .unwrap_err(),
        AttestError::BadSignature
    );
}
