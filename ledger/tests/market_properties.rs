//! Property tests of the market against conservation laws and a plain model of contract state:
//! credits are conserved (balances + escrow + community account), energy is conserved per home
//! (attested = sellable + committed + delivered), no contract is sold twice, replays and
//! purchases of expired or sold contracts are rejected.

mod common;

use gridlet_ledger::{MicroCredits, Price, WattHours};
use std::collections::BTreeMap;

use common::Community;
use gridlet_ledger::crypto::{deterministic_key, Signature};
use gridlet_ledger::market::book::{ContractStatus, TradeSource};
use gridlet_ledger::market::{attestation_digest, receipt_digest};
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::state::Rules;
use gridlet_ledger::tx::Attestation;
use gridlet_ledger::{Hash32, LedgerState, SignedTransaction, Transaction, TxPayload};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Attest {
        home: usize,
        interval: u64,
        wh: u64,
    },
    Sale {
        home: usize,
        wh: u64,
        price: u64,
        life: u64,
    },
    Purchase {
        buyer: usize,
        pick: usize,
        exact: bool,
    },
    Deliver {
        pick: usize,
        share_pct: u64,
        honest: bool,
    },
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
    },
    Replay {
        pick: usize,
    },
    Idle {
        blocks: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..4, 0u64..6, 0u64..3_000).prop_map(|(home, interval, wh)| Op::Attest { home, interval, wh }),
        3 => (0usize..4, 0u64..2_000, 0u64..305_000, 0u64..12).prop_map(|(home, wh, price, life)| Op::Sale { home, wh, price, life }),
        4 => (0usize..4, any::<usize>(), prop::bool::weighted(0.85)).prop_map(|(buyer, pick, exact)| Op::Purchase { buyer, pick, exact }),
        4 => (any::<usize>(), 0u64..115, prop::bool::weighted(0.85)).prop_map(|(pick, share_pct, honest)| Op::Deliver { pick, share_pct, honest }),
        1 => (0usize..4, 0usize..4, 0u64..400_000).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        1 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        2 => (1u64..40).prop_map(|blocks| Op::Idle { blocks }),
    ]
}

struct World {
    c: Community,
    rules: Rules,
    state: LedgerState,
    nonces: [u64; 4],
    accepted: Vec<SignedTransaction>,
    contracts: Vec<Hash32>,
    trades: Vec<Hash32>,
}

impl World {
    fn tx(&mut self, home: usize, payload: TxPayload) -> SignedTransaction {
        Transaction {
            chain_id: self.c.genesis.hash(),
            sender: self.c.member(home),
            nonce: self.nonces[home],
            fee: self.c.genesis.tx_fee,
            payload,
        }
        .sign(&self.c.keys[home])
    }

    fn submit(&mut self, home: usize, t: SignedTransaction) -> bool {
        let ok = self.state.apply_tx(&self.rules, &t).is_ok();
        if ok {
            self.nonces[home] += 1;
            self.accepted.push(t);
        }
        self.end_block();
        ok
    }

    fn end_block(&mut self) {
        let h = self.state.height + 1;
        let producer = self.c.member(0);
        self.state.finish_block(&self.rules, h, h, producer);
    }
}

fn check_invariants(w: &World) -> Result<(), TestCaseError> {
    let s = &w.state;
    prop_assert_eq!(s.total_credits(), 4 * 1_000_000u128);
    let m = s.market();
    for home in 0..4 {
        let k = w.c.member(home);
        let open: u64 = m
            .contracts
            .values()
            .filter(|c| c.seller == k && c.status == ContractStatus::Open)
            .map(|c| c.energy_wh.get())
            .sum();
        let unsettled: u64 = m
            .trades
            .values()
            .filter(|t| t.seller == k && !t.settled)
            .map(|t| t.energy_wh.get())
            .sum();
        let settled_delivered: u64 = m
            .trades
            .values()
            .filter(|t| t.seller == k && t.settled)
            .map(|t| t.delivered_wh.map_or(0, WattHours::get))
            .sum();
        prop_assert_eq!(
            m.attested_wh(&k).get(),
            m.sellable_wh(&k).get() + open + unsettled + settled_delivered,
            "energy of home {}",
            home
        );
        prop_assert!(m.delivered_wh(&k).get() <= m.attested_wh(&k).get());
    }
    let escrow: u64 = m
        .trades
        .values()
        .filter(|t| !t.settled)
        .map(|t| t.payment.get() - t.paid_out.get())
        .sum();
    prop_assert_eq!(m.escrow.get(), escrow);
    let mut sold: BTreeMap<Hash32, usize> = BTreeMap::new();
    for t in m.trades.values() {
        if let TradeSource::Sale { contract } = t.source {
            *sold.entry(contract).or_default() += 1;
        }
    }
    prop_assert!(sold.values().all(|n| *n == 1), "a contract sold twice");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn market_conserves_credits_and_energy_and_never_sells_twice(ops in prop::collection::vec(op(), 1..120)) {
        let c = Community::new(4, SelectionRule::Paper);
        let rules = Rules::from_genesis(&c.genesis).unwrap();
        let state = LedgerState::genesis(&c.genesis);
        let mut w = World { c, rules, state, nonces: [0; 4], accepted: Vec::new(), contracts: Vec::new(), trades: Vec::new() };
        let chain = w.c.genesis.hash();
        for op in ops {
            match op {
                Op::Attest { home, interval, wh } => {
                    let digest = attestation_digest(&chain, &w.c.member(home), interval, WattHours::new(wh));
                    let a = Attestation { interval, energy_wh: WattHours::new(wh), signature: Signature::sign(&digest, &deterministic_key(43, home as u64)) };
                    let t = w.tx(home, TxPayload::Attest(a));
                    w.submit(home, t);
                }
                Op::Sale { home, wh, price, life } => {
                    let expiry = w.state.height + 1 + life;
                    let t = w.tx(home, TxPayload::Sale { mode: gridlet_ledger::DeliveryMode::Discharge, energy_wh: WattHours::new(wh), price: Price::new(price), expiry_height: expiry, attestation: None });
                    let id = t.id();
                    let sellable = w.state.market().sellable_wh(&w.c.member(home)).get();
                    let ok = w.submit(home, t);
                    prop_assert_eq!(ok, wh > 0 && wh <= sellable && price <= 300_000);
                    if ok {
                        w.contracts.push(id);
                    }
                }
                Op::Purchase { buyer, pick, exact } => {
                    if w.contracts.is_empty() {
                        continue;
                    }
                    let id = w.contracts[pick % w.contracts.len()];
                    let contract = w.state.market().contracts[&id].clone();
                    let price = contract.energy_wh.get() * contract.price.get() / 1000;
                    let pay = if exact { price } else { price + 1 };
                    let height = w.state.height + 1;
                    let t = w.tx(buyer, TxPayload::Purchase { contract: id, payment: MicroCredits::new(pay) });
                    let trade = t.id();
                    let can_pay = w.state.account(&w.c.member(buyer)).balance.get() >= pay + 100;
                    let open = contract.status == ContractStatus::Open && height <= contract.expiry_height;
                    let ok = w.submit(buyer, t);
                    prop_assert_eq!(ok, open && exact && can_pay && contract.seller != w.c.member(buyer));
                    if !open {
                        prop_assert!(!ok, "bought an expired or sold contract");
                    }
                    if ok {
                        w.trades.push(trade);
                    }
                }
                Op::Deliver { pick, share_pct, honest } => {
                    if w.trades.is_empty() {
                        continue;
                    }
                    let id = w.trades[pick % w.trades.len()];
                    let t = w.state.market().trades[&id].clone();
                    let seller = (0..4).find(|h| w.c.member(*h) == t.seller).unwrap();
                    let wh = WattHours::new(t.energy_wh.get() * share_pct / 100);
                    let signer = if honest { seller } else { (seller + 1) % 4 };
                    let receipt = Signature::sign(&receipt_digest(&chain, &id, wh), &deterministic_key(43, signer as u64));
                    let tx = w.tx(seller, TxPayload::Deliver { trade: id, delivered_wh: wh, receipt });
                    let height = w.state.height + 1;
                    let ok = w.submit(seller, tx);
                    let expected = honest && t.released && t.delivered_wh.is_none() && !t.settled && height <= t.deadline_height && wh <= t.energy_wh;
                    prop_assert_eq!(ok, expected);
                }
                Op::Transfer { from, to, amount } => {
                    let t = w.tx(from, TxPayload::Transfer { to: w.c.member(to), amount: MicroCredits::new(amount) });
                    w.submit(from, t);
                }
                Op::Replay { pick } => {
                    if w.accepted.is_empty() {
                        continue;
                    }
                    let t = w.accepted[pick % w.accepted.len()].clone();
                    prop_assert!(w.state.apply_tx(&w.rules, &t).is_err(), "a replay was accepted");
                }
                Op::Idle { blocks } => {
                    for _ in 0..blocks {
                        w.end_block();
                    }
                }
            }
            check_invariants(&w)?;
        }
    }
}
