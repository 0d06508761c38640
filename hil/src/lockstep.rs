//! A community of ledger nodes driven in lock-step on a virtual clock, with a simulated bus
//! that can lose messages or keep a node offline (quinn-proto's `Pair::drive`, for many nodes).
//! Used by tests and by `gridlet bench trades`.

use gridlet_core::node::{BusMessage, Effect, Input, Node, NodeConfig};
use gridlet_ledger::finality::ConsensusMessage;
use gridlet_ledger::market::MarketEvent;
use gridlet_ledger::store::{BlockStore, MemStore, PersistentChain, SignerGuard, VoteGuard};
use gridlet_ledger::{Genesis, StoreError};
use secp256k1::SecretKey;

/// The simulated community.
pub struct LockstepNet {
    /// The nodes.
    pub nodes: Vec<Node<MemStore>>,
    /// Which nodes are online.
    pub online: Vec<bool>,
    inbox: Vec<Vec<BusMessage>>,
    /// Virtual time, ms.
    pub now_ms: u64,
    /// Drop every k-th message sent.
    pub drop_every: Option<u64>,
    /// Nodes that keep running (and producing) but neither send nor receive: a partition.
    pub isolated: Vec<bool>,
    /// Each node's side of a partition: messages pass only between nodes of one side.
    pub side: Vec<u8>,
    sent: u64,
    /// Refusals seen (stale blocks after lost messages, bad transactions).
    pub rejected: u64,
    /// Each refusal: what, its class and the reason.
    pub refusals: Vec<(String, String, String)>,
    /// Market events of blocks final on node 0, with the time they became final.
    pub events: Vec<(u64, MarketEvent)>,
    /// Transactions each node published (hex), in order, by node.
    pub published_txs: Vec<Vec<String>>,
    /// The (checkpoint, round) of every vote and proposal each node published under its own
    /// key, by node.
    pub own_votes: Vec<Vec<(u64, u32)>>,
    /// What each node said about a lost signer record: (node, what, signing again, reason).
    pub signer_notices: Vec<(usize, &'static str, bool, String)>,
    genesis: Genesis,
    keys: Vec<SecretKey>,
    _dirs: Vec<tempfile::TempDir>,
}

impl LockstepNet {
    /// A community of `keys.len()` nodes on `genesis`, every node online.
    pub fn new(genesis: &Genesis, keys: &[SecretKey]) -> std::io::Result<LockstepNet> {
        let mut nodes = Vec::new();
        let mut dirs = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            let (chain, _) = PersistentChain::open(MemStore::default(), genesis.clone(), u64::MAX)
                .map_err(std::io::Error::other)?;
            let guard = SignerGuard::open(dir.path(), 0).map_err(std::io::Error::other)?;
            let votes = VoteGuard::open(dir.path(), 0).map_err(std::io::Error::other)?;
            nodes.push(Node::new(node_config(i), *k, chain, guard, votes));
            dirs.push(dir);
        }
        let n = nodes.len();
        Ok(LockstepNet {
            online: vec![true; n],
            isolated: vec![false; n],
            side: vec![0; n],
            inbox: vec![Vec::new(); n],
            nodes,
            now_ms: genesis.genesis_time_ms,
            drop_every: None,
            sent: 0,
            rejected: 0,
            refusals: Vec::new(),
            events: Vec::new(),
            published_txs: vec![Vec::new(); n],
            own_votes: vec![Vec::new(); n],
            signer_notices: Vec::new(),
            genesis: genesis.clone(),
            keys: keys.to_vec(),
            _dirs: dirs,
        })
    }

    /// Restarts node `i` from a copy of its stored chain (blocks and last certificate), after
    /// deleting the named files of its data directory (`signer.state`, `votes.state`): a
    /// process restart, or one after that record was lost.
    pub fn restart(&mut self, i: usize, forget: &[&str]) -> Result<(), StoreError> {
        let old = self.nodes[i].chain();
        let mut store = MemStore::default();
        store.set_chain_id(self.genesis.hash())?;
        for h in 1..=old.chain().head_height() {
            if let Some(b) = old.block_at(h)? {
                store.put(h, &b.encode())?;
            }
        }
        if let Some(c) = old.last_certificate() {
            store.put_certificate(c.block.height, &c.encode())?;
        }
        let dir = self._dirs[i].path().to_path_buf();
        for name in forget {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let (chain, _) = PersistentChain::open(store, self.genesis.clone(), u64::MAX)?;
        let height = chain.chain().head_height();
        let guard = SignerGuard::open(&dir, height)?;
        let votes = VoteGuard::open(&dir, height)?;
        self.nodes[i] = Node::new(node_config(i), self.keys[i], chain, guard, votes);
        self.inbox[i].clear();
        Ok(())
    }

    /// Hands an input to node `i` and delivers what it publishes.
    pub fn input(&mut self, i: usize, input: Input) -> Result<(), gridlet_ledger::StoreError> {
        let effects = self.nodes[i].handle(input)?;
        self.deliver(i, effects);
        Ok(())
    }

    fn deliver(&mut self, from: usize, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Publish(m) => {
                    if let BusMessage::Tx { hex } = &m {
                        self.published_txs[from].push(hex.clone());
                    }
                    if let BusMessage::Consensus { hex } = &m {
                        self.record_own_votes(from, hex);
                    }
                    for to in 0..self.nodes.len() {
                        if to == from
                            || !self.online[to]
                            || self.isolated[to]
                            || self.isolated[from]
                            || self.side[to] != self.side[from]
                        {
                            continue;
                        }
                        self.sent += 1;
                        if self.drop_every.is_some_and(|k| self.sent.is_multiple_of(k)) {
                            continue;
                        }
                        self.inbox[to].push(m.clone());
                    }
                }
                Effect::Finalized { events, .. } => {
                    if from == 0 {
                        let now = self.now_ms;
                        self.events.extend(events.into_iter().map(|e| (now, e)));
                    }
                }
                Effect::Rejected {
                    what,
                    class,
                    reason,
                } => {
                    self.rejected += 1;
                    self.refusals.push((what.to_string(), class, reason));
                }
                Effect::SignerState {
                    what,
                    signing,
                    reason,
                } => self.signer_notices.push((from, what, signing, reason)),
                Effect::Duplicate | Effect::Submitted { .. } | Effect::Committed { .. } => {}
            }
        }
    }

    fn record_own_votes(&mut self, from: usize, hex: &str) {
        let me = self.nodes[from].member();
        let Some(msg) =
            gridlet_ledger::codec::from_hex(hex).and_then(|b| ConsensusMessage::decode(&b).ok())
        else {
            return;
        };
        let mine: Vec<(u64, u32)> = match msg {
            ConsensusMessage::Vote(v) if v.vote.voter == me => {
                vec![(v.vote.checkpoint, v.vote.round)]
            }
            ConsensusMessage::Proposal(p) if p.proposal.proposer == me => {
                vec![(p.proposal.checkpoint, p.proposal.round)]
            }
            ConsensusMessage::Votes(vs) => vs
                .iter()
                .filter(|v| v.vote.voter == me)
                .map(|v| (v.vote.checkpoint, v.vote.round))
                .collect(),
            _ => Vec::new(),
        };
        self.own_votes[from].extend(mine);
    }

    /// Advances `step_ms`: every online node ticks and reads what arrived in the last step.
    pub fn step(&mut self, step_ms: u64) -> Result<(), gridlet_ledger::StoreError> {
        self.now_ms += step_ms;
        for i in 0..self.nodes.len() {
            if !self.online[i] {
                continue;
            }
            let msgs = std::mem::take(&mut self.inbox[i]);
            let mut effects = Vec::new();
            for m in msgs {
                effects.extend(self.nodes[i].handle(Input::Bus(m))?);
            }
            effects.extend(self.nodes[i].handle(Input::Tick {
                now_ms: self.now_ms,
            })?);
            self.deliver(i, effects);
        }
        Ok(())
    }

    /// Final heights of all nodes.
    pub fn final_heights(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.chain().chain().finalized().1)
            .collect()
    }

    /// Pairs of nodes whose final chains differ at some height both consider final (safety:
    /// always empty), as `(a, b, height)`.
    pub fn conflicting_final_blocks(&self) -> Vec<(usize, usize, u64)> {
        let mut out = Vec::new();
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (ca, cb) = (self.nodes[a].chain(), self.nodes[b].chain());
                let both = ca.chain().finalized().1.min(cb.chain().finalized().1);
                if let Some(h) = (1..=both).find(|h| ca.hash_at(*h) != cb.hash_at(*h)) {
                    out.push((a, b, h));
                }
            }
        }
        out
    }

    /// Heights and head hashes of all nodes.
    pub fn heads(&self) -> Vec<(u64, String)> {
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

fn node_config(i: usize) -> NodeConfig {
    NodeConfig {
        name: format!("node-{i}"),
        max_mempool: 100_000,
        sync_batch: 50,
        last_slot: u64::MAX,
    }
}
