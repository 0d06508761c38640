//! Anything a neighbour can publish on the community bus, fed to a node as its gateway would
//! feed it (JSON decode, then `Node::handle`): never panics, and the node keeps working (its
//! chain only grows by blocks it validated).
#![no_main]

use std::sync::{Mutex, OnceLock};

use gridlet_core::node::{BusMessage, Input, Node, NodeConfig};
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::{Equipment, Member};
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{MemStore, PersistentChain, SignerGuard, VoteGuard};
use gridlet_ledger::{Genesis, MemberKey, MicroCredits};
use libfuzzer_sys::fuzz_target;

struct Harness {
    node: Node<MemStore>,
    now_ms: u64,
}

fn harness() -> &'static Mutex<Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        let keys: Vec<_> = (0..2u64).map(|i| deterministic_key(7, i)).collect();
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                name: format!("home-{i}"),
                key: MemberKey::from_secret(k),
                attestor: MemberKey::from_secret(&deterministic_key(8, i as u64)),
                equipment: Equipment::device(10_000, 5_000),
                balance: MicroCredits::new(1_000_000),
            })
            .collect();
        let genesis = Genesis::with_defaults("fuzz", 0, members, SelectionRule::Paper);
        let (chain, _) = PersistentChain::open(MemStore::default(), genesis, u64::MAX)
            .expect("a fresh chain opens");
        let dir = std::env::temp_dir().join(format!("gridlet-fuzz-bus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let node = Node::new(
            NodeConfig {
                name: "home-0".into(),
                max_mempool: 1_000,
                sync_batch: 50,
                last_slot: u64::MAX,
            },
            keys[0],
            chain,
            SignerGuard::open(&dir, 0).expect("guard"),
            VoteGuard::open(&dir, 0).expect("guard"),
        );
        Mutex::new(Harness { node, now_ms: 0 })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = serde_json::from_slice::<BusMessage>(data) else {
        return;
    };
    let mut h = harness().lock().unwrap_or_else(|p| p.into_inner());
    let before = h.node.chain().chain().finalized().1;
    let _ = h.node.handle(Input::Bus(msg));
    h.now_ms += 250;
    let now_ms = h.now_ms;
    let _ = h.node.handle(Input::Tick { now_ms });
    // Nothing a lone neighbour sends can make a block final: the quorum is both homes.
    assert_eq!(h.node.chain().chain().finalized().1, before);
});
