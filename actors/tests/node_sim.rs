//! Several community nodes driven in lock-step on a virtual clock, with a simulated bus that
//! can drop messages or keep a node offline: they must agree on one chain, every member must
//! produce, and a node that joins late must catch up by asking for blocks by height.

use gridlet_actors::node::{BusMessage, Effect, Input, Node, NodeConfig};
use gridlet_ledger::crypto::deterministic_key;
use gridlet_ledger::genesis::Member;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{MemStore, PersistentChain, SignerGuard};
use gridlet_ledger::{Genesis, MemberKey, Transaction, TxPayload};

struct Net {
    nodes: Vec<Node<MemStore>>,
    online: Vec<bool>,
    inbox: Vec<Vec<BusMessage>>,
    now_ms: u64,
    drop_every: Option<u64>,
    sent: u64,
    committed: Vec<u64>,
    strict: bool,
    rejected: u64,
    _dirs: Vec<tempfile::TempDir>,
}

fn genesis(n: usize) -> Genesis {
    let members = (0..n as u64)
        .map(|i| Member {
            name: format!("home-{i}"),
            key: MemberKey::from_secret(&deterministic_key(77, i)),
            attestor: MemberKey::from_secret(&deterministic_key(78, i)),
            balance: 1_000_000,
        })
        .collect();
    Genesis::with_defaults("node-sim", 0, members, SelectionRule::Paper)
}

impl Net {
    fn new(n: usize) -> Net {
        let g = genesis(n);
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let (chain, _) =
                PersistentChain::open(MemStore::default(), g.clone(), u64::MAX).unwrap();
            let guard = SignerGuard::open(dir.path()).unwrap();
            let cfg = NodeConfig {
                name: format!("node-{i}"),
                max_mempool: 10_000,
                sync_batch: 50,
            };
            nodes.push(Node::new(
                cfg,
                deterministic_key(77, i as u64),
                chain,
                guard,
            ));
            dirs.push(dir);
        }
        Net {
            online: vec![true; n],
            inbox: vec![Vec::new(); n],
            committed: vec![0; n],
            nodes,
            now_ms: 0,
            drop_every: None,
            sent: 0,
            strict: true,
            rejected: 0,
            _dirs: dirs,
        }
    }

    fn deliver(&mut self, from: usize, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Publish(m) => {
                    for to in 0..self.nodes.len() {
                        if to == from || !self.online[to] {
                            continue;
                        }
                        self.sent += 1;
                        if self.drop_every.is_some_and(|k| self.sent.is_multiple_of(k)) {
                            continue;
                        }
                        self.inbox[to].push(m.clone());
                    }
                }
                Effect::Committed { .. } => self.committed[from] += 1,
                Effect::Rejected { what, reason } => {
                    if self.strict {
                        panic!("node {from} rejected a {what}: {reason}");
                    }
                    self.rejected += 1;
                }
                Effect::Duplicate => {}
            }
        }
    }

    /// Advances 100 ms: every online node ticks and reads what arrived in the last step.
    fn step(&mut self) {
        self.now_ms += 100;
        for i in 0..self.nodes.len() {
            if !self.online[i] {
                continue;
            }
            let msgs = std::mem::take(&mut self.inbox[i]);
            let mut effects = Vec::new();
            for m in msgs {
                effects.extend(self.nodes[i].handle(Input::Bus(m)).unwrap());
            }
            effects.extend(
                self.nodes[i]
                    .handle(Input::Tick {
                        now_ms: self.now_ms,
                    })
                    .unwrap(),
            );
            self.deliver(i, effects);
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 100 {
            self.step();
            if std::env::var("NODE_SIM_TRACE").is_ok() && self.now_ms.is_multiple_of(5_000) {
                eprintln!(
                    "t={} heads={:?} inbox={:?}",
                    self.now_ms,
                    self.heads().iter().map(|h| h.0).collect::<Vec<_>>(),
                    self.inbox.iter().map(|i| i.len()).collect::<Vec<_>>()
                );
            }
        }
    }

    fn heads(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .map(|n| {
                (
                    n.chain().chain().head_height(),
                    n.chain().chain().head_hash().to_hex(),
                )
            })
            .collect()
    }
}

#[test]
fn four_nodes_agree_and_every_member_produces() {
    let mut net = Net::new(4);
    // A transfer submitted at node 0 reaches the producer, whoever it is.
    let tx = Transaction {
        chain_id: net.nodes[0].chain().chain().chain_id(),
        sender: net.nodes[0].member(),
        nonce: 0,
        fee: 100,
        payload: TxPayload::Transfer {
            to: net.nodes[1].member(),
            amount: 42,
        },
    }
    .sign(&deterministic_key(77, 0));
    let effects = net.nodes[0].handle(Input::Submit(Box::new(tx))).unwrap();
    net.deliver(0, effects);
    net.run(60_000);
    net.run(500); // let the last block propagate
    let heads = net.heads();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    assert!(heads[0].0 >= 55, "{heads:?}");
    let state = net.nodes[2].chain().chain().head_state().clone();
    assert_eq!(state.account(&net.nodes[1].member()).balance, 1_000_042);
    for n in &net.nodes {
        let k = n.member();
        let produced = (1..=heads[0].0)
            .filter(|h| n.chain().block_at(*h).unwrap().unwrap().header.producer == k)
            .count();
        assert!(produced > 0, "{k:?} never produced");
    }
}

#[test]
fn a_late_node_catches_up_by_height_and_lost_messages_are_recovered() {
    let mut net = Net::new(4);
    net.drop_every = Some(7); // one message in seven is lost
    net.strict = false; // stale blocks from lost-message forks are refused, and counted
    net.online[3] = false;
    net.run(40_000);
    let ahead = net.nodes[0].chain().chain().head_height();
    assert!(ahead >= 30);
    assert_eq!(net.nodes[3].chain().chain().head_height(), 0);
    net.online[3] = true;
    net.run(30_000);
    net.drop_every = None;
    net.run(3_000);
    let heads = net.heads();
    assert!(heads.iter().all(|h| *h == heads[0]), "{heads:?}");
    assert!(heads[0].0 > ahead);
}
