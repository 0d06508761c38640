//! Energy contracts end to end on a chain: attestations, sales, purchases with escrow, release
//! orders after finality, delivery receipts, refunds, provenance, and sealed-bid auctions.

mod common;

use common::Community;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::crypto::{deterministic_key, Signature};
use gridlet_ledger::market::book::ContractStatus;
use gridlet_ledger::market::clearing::{Bid, SellerOffer};
use gridlet_ledger::market::{
    attestation_digest, bid_commitment, clear, receipt_digest, ClearingInput, MarketEvent, Pricing,
};
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::tx::Attestation;
use gridlet_ledger::MicroCredits;
use gridlet_ledger::{Chain, Hash32, SignedTransaction, Transaction, TxError, TxPayload};
use gridlet_ledger::{Price, WattHours};

struct Market {
    c: Community,
    chain: Chain,
    nonces: Vec<u64>,
    events: Vec<MarketEvent>,
}

impl Market {
    fn new(homes: usize) -> Market {
        Market::with_community(Community::new(homes, SelectionRule::Paper))
    }

    fn with_community(c: Community) -> Market {
        let homes = c.keys.len();
        let chain = Chain::new(c.genesis.clone()).unwrap();
        Market {
            nonces: vec![0; homes],
            c,
            chain,
            events: Vec::new(),
        }
    }

    fn attestation(&self, home: usize, interval: u64, wh: u64) -> Attestation {
        let wh = WattHours::new(wh);
        let digest = attestation_digest(&self.c.genesis.hash(), &self.c.member(home), interval, wh);
        Attestation {
            interval,
            energy_wh: wh,
            signature: Signature::sign(&digest, &deterministic_key(43, home as u64)),
        }
    }

    fn receipt(&self, home: usize, trade: &Hash32, wh: u64) -> Signature {
        Signature::sign(
            &receipt_digest(&self.c.genesis.hash(), trade, WattHours::new(wh)),
            &deterministic_key(43, home as u64),
        )
    }

    /// A signed transaction from `home` with its next nonce.
    fn tx(&mut self, home: usize, payload: TxPayload) -> SignedTransaction {
        let t = Transaction {
            chain_id: self.c.genesis.hash(),
            sender: self.c.member(home),
            nonce: self.nonces[home],
            fee: self.c.genesis.tx_fee,
            payload,
        }
        .sign(&self.c.keys[home]);
        self.nonces[home] += 1;
        t
    }

    /// Produces a block with the candidates; returns the rejections. Nonces of rejected
    /// transactions are handed back so the next ones stay in order.
    fn block(&mut self, txs: &[SignedTransaction]) -> Vec<(Hash32, TxError)> {
        let slot = self.chain.head_state().slot + 1;
        let producer = self.chain.ranked_producers(slot)[0];
        let out = self
            .chain
            .produce(self.c.key_of(&producer), slot, txs)
            .unwrap();
        for (id, _) in &out.rejected {
            let t = txs.iter().find(|t| t.id() == *id).unwrap();
            let home = (0..self.nonces.len())
                .find(|i| self.c.member(*i) == t.tx().sender)
                .unwrap();
            self.nonces[home] = self.nonces[home].min(t.tx().nonce);
        }
        let ins = self.chain.insert(out.block, Checks::FULL).unwrap();
        self.events.extend(ins.events);
        out.rejected
    }

    fn empty_blocks(&mut self, n: usize) {
        for _ in 0..n {
            self.block(&[]);
        }
    }

    fn balance(&self, home: usize) -> u64 {
        self.chain
            .head_state()
            .account(&self.c.member(home))
            .balance
            .get()
    }

    fn total(&self) -> u128 {
        self.chain.head_state().total_credits()
    }
}

const TOTAL: u128 = 4 * 1_000_000;

#[test]
fn sale_purchase_release_delivery_pays_the_seller_and_traces_provenance() {
    let mut m = Market::new(4);
    let att = m.attestation(0, 7, 3_000);
    let attest = m.tx(0, TxPayload::Attest(att));
    assert!(m.block(&[attest]).is_empty());
    assert_eq!(
        m.chain
            .head_state()
            .market()
            .sellable_wh(&m.c.member(0))
            .get(),
        3_000
    );
    let sale = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(2_000),
            price: Price::new(250_000),
            expiry_height: 10,
            attestation: None,
        },
    );
    let contract = sale.id();
    assert!(m.block(&[sale]).is_empty());
    assert_eq!(
        m.chain
            .head_state()
            .market()
            .sellable_wh(&m.c.member(0))
            .get(),
        1_000
    );
    let buyer_before = m.balance(1);
    let purchase = m.tx(
        1,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(500_000),
        },
    );
    let trade = purchase.id();
    assert!(m.block(&[purchase]).is_empty());
    // Contracted energy earns no election weight: only delivered energy counts for E.
    for home in [0, 1] {
        assert_eq!(m.chain.head_state().traded_in_window(&m.c.member(home)), 0);
    }
    assert_eq!(m.balance(1), buyer_before - 500_000 - 100);
    assert_eq!(m.chain.head_state().market().escrow.get(), 500_000);
    assert!(matches!(
        m.chain.head_state().market().contracts[&contract].status,
        ContractStatus::Sold { .. }
    ));
    // The release order comes with the purchase's own block: nodes act on it once that block
    // is quorum-final (the node's business, not the ledger's).
    let f = 0usize;
    let release = m
        .events
        .iter()
        .find(|e| matches!(e, MarketEvent::Release { .. }))
        .expect("release order in the purchase's block")
        .clone();
    let purchase_height = 3;
    assert_eq!(
        release,
        MarketEvent::Release {
            trade,
            seller: m.c.member(0),
            buyers: vec![m.c.member(1)],
            share_ppm: 1_000_000,
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(2_000),
            // 2 000 Wh at the planning power of 2 kW take an hour: 3 600 one-second slots.
            deadline_height: purchase_height
                + f as u64
                + m.c.genesis.market.delivery_blocks
                + 3_600,
        }
    );
    // Until its delivery is reported, the order stays open in the state: a gateway restarted
    // after that block rebuilds it from there, the same.
    assert_eq!(
        m.chain.head_state().market().open_releases(),
        vec![release.clone()]
    );
    let seller_before = m.balance(0);
    let deliver = m.tx(
        0,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(2_000),
            receipt: m.receipt(0, &trade, 2_000),
        },
    );
    assert!(m.block(&[deliver]).is_empty());
    assert!(m.chain.head_state().market().open_releases().is_empty());
    // Delivered between two homes: both sides count it for E.
    for home in [0, 1] {
        assert_eq!(
            m.chain.head_state().traded_in_window(&m.c.member(home)),
            2_000
        );
    }
    assert_eq!(m.balance(0), seller_before + 500_000 - 100);
    assert_eq!(m.chain.head_state().market().escrow.get(), 0);
    let t = &m.chain.head_state().market().trades[&trade];
    assert!(t.settled);
    assert_eq!(
        t.allocation
            .iter()
            .map(|a| (a.interval, a.wh.get()))
            .collect::<Vec<_>>(),
        vec![(7, 2_000)]
    );
    assert_eq!(m.total(), TOTAL);
    assert!(m.events.iter().any(|e| matches!(
        e,
        MarketEvent::Settled {
            refunded: MicroCredits::ZERO,
            ..
        }
    )));
}

#[test]
fn a_charge_sale_is_measured_and_reported_by_the_buyer_and_pays_the_seller() {
    let mut m = Market::new(4);
    let sale = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Charge,
            energy_wh: WattHours::new(1_000),
            price: Price::new(100_000),
            expiry_height: 10,
            attestation: Some(m.attestation(0, 3, 1_000)),
        },
    );
    // Kind 14 on the wire, decoded back to the same charge sale.
    let bytes = sale.bytes();
    assert_eq!(
        SignedTransaction::decode(bytes)
            .unwrap()
            .tx()
            .payload
            .kind(),
        gridlet_ledger::tx::KIND_CHARGE_SALE
    );
    let contract = sale.id();
    assert!(m.block(&[sale]).is_empty());
    assert_eq!(
        m.chain.head_state().market().contracts[&contract].mode,
        gridlet_ledger::DeliveryMode::Charge
    );
    let purchase = m.tx(
        1,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(100_000),
        },
    );
    let trade = purchase.id();
    assert!(m.block(&[purchase]).is_empty());
    // The release order names the mode: the buyer's battery takes the seller's export.
    assert!(m.events.iter().any(|e| matches!(
        e,
        MarketEvent::Release {
            mode: gridlet_ledger::DeliveryMode::Charge,
            ..
        }
    )));
    // The seller cannot report a charge (the buyer's battery measured it), nor can a receipt
    // signed by the seller's battery stand for the buyer's.
    let by_seller = m.tx(
        0,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(1_000),
            receipt: m.receipt(0, &trade, 1_000),
        },
    );
    let forged = m.tx(
        1,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(1_000),
            receipt: m.receipt(0, &trade, 1_000),
        },
    );
    let refused = m.block(&[by_seller, forged]);
    assert_eq!(
        refused.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        vec![TxError::NotSeller { trade }, TxError::BadReceipt { trade }]
    );
    let seller_before = m.balance(0);
    let by_buyer = m.tx(
        1,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(600),
            receipt: m.receipt(1, &trade, 600),
        },
    );
    assert!(m.block(&[by_buyer]).is_empty());
    // 600 of 1 000 Wh: the seller is paid 60 %, and both count the 600 Wh for E.
    assert_eq!(m.balance(0), seller_before + 60_000);
    for home in [0, 1] {
        assert_eq!(
            m.chain.head_state().traded_in_window(&m.c.member(home)),
            600
        );
    }
    assert_eq!(m.total(), TOTAL);
}

#[test]
fn partial_and_missing_deliveries_are_refunded_after_the_deadline() {
    let mut m = Market::new(4);
    let a1 = m.attestation(0, 1, 1_000);
    let a2 = m.attestation(2, 1, 1_000);
    // The request/response path: the attestation rides along with the sale.
    let s1 = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(1_000),
            price: Price::new(100_000),
            expiry_height: 50,
            attestation: Some(a1),
        },
    );
    let s2 = m.tx(
        2,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(1_000),
            price: Price::new(100_000),
            expiry_height: 50,
            attestation: Some(a2),
        },
    );
    let (c1, c2) = (s1.id(), s2.id());
    assert!(m.block(&[s1, s2]).is_empty());
    let p1 = m.tx(
        1,
        TxPayload::Purchase {
            contract: c1,
            payment: MicroCredits::new(100_000),
        },
    );
    let p2 = m.tx(
        3,
        TxPayload::Purchase {
            contract: c2,
            payment: MicroCredits::new(100_000),
        },
    );
    let (t1, t2) = (p1.id(), p2.id());
    assert!(m.block(&[p1, p2]).is_empty());
    let d1 = m.tx(
        0,
        TxPayload::Deliver {
            trade: t1,
            delivered_wh: WattHours::new(600),
            receipt: m.receipt(0, &t1, 600),
        },
    );
    assert!(m.block(&[d1]).is_empty());
    let (buyer1, buyer3, seller0) = (m.balance(1), m.balance(3), m.balance(0));
    // The window fits the energy: 1 000 Wh at the planning 2 kW are 1 800 one-second slots.
    let deadline = m.chain.head_state().market().trades[&t2].deadline_height;
    assert_eq!(deadline, 2 + m.c.genesis.market.delivery_blocks + 1_800);
    let now = m.chain.head_state().height;
    m.empty_blocks((deadline - now) as usize);
    // 60 % delivered: seller got 60 000, buyer 1 gets 40 000 back; buyer 3 everything.
    assert_eq!(m.balance(1), buyer1 + 40_000);
    assert_eq!(m.balance(3), buyer3 + 100_000);
    assert_eq!(m.balance(0), seller0);
    let market = m.chain.head_state().market();
    assert_eq!(market.escrow.get(), 0);
    assert_eq!(
        market.sellable_wh(&m.c.member(0)).get(),
        400,
        "undelivered energy is sellable again"
    );
    assert_eq!(market.sellable_wh(&m.c.member(2)).get(), 1_000);
    assert_eq!(market.delivered_wh(&m.c.member(0)).get(), 600);
    assert!(market.trades[&t2].settled && market.trades[&t2].delivered_wh.is_none());
    assert_eq!(m.total(), TOTAL);
    // Too late now.
    let late = m.tx(
        2,
        TxPayload::Deliver {
            trade: t2,
            delivered_wh: WattHours::new(1_000),
            receipt: m.receipt(2, &t2, 1_000),
        },
    );
    assert!(matches!(
        m.block(&[late])[0].1,
        TxError::AlreadyDelivered { .. }
    ));
}

#[test]
fn invalid_market_transactions_are_rejected_with_their_reason() {
    let mut m = Market::new(4);
    let genesis_hash = m.c.genesis.hash();
    // A forged attestation: signed by home 1's battery for home 0.
    let forged = Attestation {
        interval: 1,
        energy_wh: WattHours::new(500),
        signature: Signature::sign(
            &attestation_digest(&genesis_hash, &m.c.member(0), 1, WattHours::new(500)),
            &deterministic_key(43, 1),
        ),
    };
    let bad = m.tx(0, TxPayload::Attest(forged));
    assert_eq!(
        m.block(&[bad])[0].1,
        TxError::BadAttestation {
            home: m.c.member(0)
        }
    );
    let a = m.attestation(0, 1, 500);
    let good = m.tx(0, TxPayload::Attest(a.clone()));
    let again = m.tx(0, TxPayload::Attest(a));
    let rejected = m.block(&[good, again]);
    assert_eq!(
        rejected[0].1,
        TxError::AlreadyAttested {
            home: m.c.member(0),
            interval: 1
        }
    );
    // One rejection per block: a rejected transaction leaves its sender's nonce unused.
    let too_much = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(501),
            price: Price::new(1),
            expiry_height: 100,
            attestation: None,
        },
    );
    assert_eq!(
        m.block(&[too_much])[0].1,
        TxError::EnergyInsufficient {
            home: m.c.member(0),
            needed: WattHours::new(501),
            available: WattHours::new(500)
        }
    );
    let too_dear = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(100),
            price: Price::new(300_001),
            expiry_height: 100,
            attestation: None,
        },
    );
    assert_eq!(
        m.block(&[too_dear])[0].1,
        TxError::PriceAboveTariff {
            price: Price::new(300_001),
            tariff: Price::new(300_000)
        }
    );
    let expired = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(100),
            price: Price::new(1),
            expiry_height: 1,
            attestation: None,
        },
    );
    assert!(matches!(
        m.block(&[expired])[0].1,
        TxError::ExpiryPassed { .. }
    ));
    let sale = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(500),
            price: Price::new(200_000),
            expiry_height: 12,
            attestation: None,
        },
    );
    let contract = sale.id();
    assert!(m.block(&[sale]).is_empty());
    let own = m.tx(
        0,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(100_000),
        },
    );
    let wrong = m.tx(
        1,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(99_999),
        },
    );
    let unknown = m.tx(
        2,
        TxPayload::Purchase {
            contract: Hash32::sha256(b"nope"),
            payment: MicroCredits::new(1),
        },
    );
    let rejected = m.block(&[own, wrong, unknown]);
    assert_eq!(rejected[0].1, TxError::OwnContract);
    assert_eq!(
        rejected[1].1,
        TxError::WrongPayment {
            expected: MicroCredits::new(100_000),
            found: MicroCredits::new(99_999)
        }
    );
    assert!(matches!(rejected[2].1, TxError::UnknownContract { .. }));
    let first = m.tx(
        1,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(100_000),
        },
    );
    let second = m.tx(
        2,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(100_000),
        },
    );
    let trade = first.id();
    let rejected = m.block(&[first, second]);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].1, TxError::ContractNotOpen { contract });
    let stranger = m.tx(
        2,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(500),
            receipt: m.receipt(2, &trade, 500),
        },
    );
    assert_eq!(m.block(&[stranger])[0].1, TxError::NotSeller { trade });
    let forged_receipt = m.tx(
        0,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(500),
            receipt: m.receipt(1, &trade, 500),
        },
    );
    assert_eq!(
        m.block(&[forged_receipt])[0].1,
        TxError::BadReceipt { trade }
    );
    let over = m.tx(
        0,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(501),
            receipt: m.receipt(0, &trade, 501),
        },
    );
    assert_eq!(
        m.block(&[over])[0].1,
        TxError::OverDelivery {
            delivered: WattHours::new(501),
            sold: WattHours::new(500)
        }
    );
    // An unbought contract expires and its energy becomes sellable again.
    let a = m.attestation(3, 9, 800);
    let s = m.tx(
        3,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(800),
            price: Price::new(1_000),
            expiry_height: m.chain.head_height() + 2,
            attestation: Some(a),
        },
    );
    let c3 = s.id();
    m.block(&[s]);
    assert_eq!(
        m.chain
            .head_state()
            .market()
            .sellable_wh(&m.c.member(3))
            .get(),
        0
    );
    m.empty_blocks(2);
    assert_eq!(
        m.chain.head_state().market().contracts[&c3].status,
        ContractStatus::Expired
    );
    assert_eq!(
        m.chain
            .head_state()
            .market()
            .sellable_wh(&m.c.member(3))
            .get(),
        800
    );
    let late = m.tx(
        1,
        TxPayload::Purchase {
            contract: c3,
            payment: MicroCredits::new(800),
        },
    );
    assert_eq!(
        m.block(&[late])[0].1,
        TxError::ContractNotOpen { contract: c3 }
    );
    assert_eq!(m.total(), TOTAL);
}

#[test]
fn attestations_beyond_the_homes_equipment_are_invalid_even_signed_by_its_battery() {
    // Home 0: a 10 kWh battery and 5 kW of PV — at most 15 000 Wh attested and not delivered.
    let mut c = Community::new(2, SelectionRule::Paper);
    c.genesis.members[0].equipment = gridlet_ledger::genesis::Equipment::device(10_000, 5_000);
    let mut m = Market::with_community(c);
    let first = m.tx(0, TxPayload::Attest(m.attestation(0, 1, 10_000)));
    assert!(m.block(&[first]).is_empty());
    // A stolen key (or a lying gateway) claiming a further 500 kWh, or only 5 001 Wh.
    for wh in [500_000, 5_001] {
        let claim = m.tx(0, TxPayload::Attest(m.attestation(0, 2, wh)));
        assert_eq!(
            m.block(&[claim])[0].1,
            TxError::BeyondEquipment {
                home: m.c.member(0),
                attested: wh,
                outstanding: 10_000 + wh,
                bound: 15_000,
            }
        );
    }
    // Riding on a sale it is refused the same way, and the sale with it.
    let sale = |m: &mut Market, wh: u64, interval: u64| {
        let attestation = Some(m.attestation(0, interval, wh));
        m.tx(
            0,
            TxPayload::Sale {
                mode: gridlet_ledger::DeliveryMode::Discharge,
                energy_wh: WattHours::new(wh),
                price: Price::new(100_000),
                expiry_height: 100,
                attestation,
            },
        )
    };
    let riding = sale(&mut m, 6_000, 2);
    assert!(matches!(
        m.block(&[riding])[0].1,
        TxError::BeyondEquipment {
            outstanding: 16_000,
            ..
        }
    ));
    // Up to the bound is valid; energy sold and not yet delivered still counts.
    let full = sale(&mut m, 5_000, 2);
    let contract = full.id();
    assert!(m.block(&[full]).is_empty());
    let purchase = m.tx(
        1,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(500_000),
        },
    );
    let trade = purchase.id();
    assert!(m.block(&[purchase]).is_empty());
    let more = m.tx(0, TxPayload::Attest(m.attestation(0, 3, 1)));
    assert!(matches!(
        m.block(&[more])[0].1,
        TxError::BeyondEquipment {
            outstanding: 15_001,
            ..
        }
    ));
    // Delivered energy has left the battery: it makes room again.
    let deliver = m.tx(
        0,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(5_000),
            receipt: m.receipt(0, &trade, 5_000),
        },
    );
    assert!(m.block(&[deliver]).is_empty());
    let again = m.tx(0, TxPayload::Attest(m.attestation(0, 3, 5_000)));
    assert!(m.block(&[again]).is_empty());
    assert_eq!(
        m.chain.head_state().market().outstanding_wh(&m.c.member(0)),
        WattHours::new(15_000)
    );
    // A home with no battery and no PV cannot attest at all.
    let mut c = Community::new(2, SelectionRule::Paper);
    c.genesis.members[1].equipment = gridlet_ledger::genesis::Equipment::gateway(0, 0);
    let mut m = Market::with_community(c);
    let none = m.tx(1, TxPayload::Attest(m.attestation(1, 1, 1)));
    assert!(matches!(
        m.block(&[none])[0].1,
        TxError::BeyondEquipment { bound: 0, .. }
    ));
}

#[test]
fn a_thousand_conflicting_sale_pairs_sell_no_watt_hour_twice() {
    let mut m = Market::new(10);
    let mut committed_sales = 0;
    let mut rejected_sales = 0;
    for round in 0..100u64 {
        let mut txs = Vec::new();
        for pair in 0..10u64 {
            let home = pair as usize;
            let interval = round;
            txs.push(m.tx(
                home,
                TxPayload::Attest(m.attestation(home, interval, 1_000)),
            ));
        }
        assert!(m.block(&txs).is_empty());
        // Two contracts for the same 1 000 Wh per pair, submitted together.
        let mut txs = Vec::new();
        for pair in 0..10u64 {
            let home = pair as usize;
            let sellable = m
                .chain
                .head_state()
                .market()
                .sellable_wh(&m.c.member(home))
                .get();
            for _ in 0..2 {
                txs.push(m.tx(
                    home,
                    TxPayload::Sale {
                        mode: gridlet_ledger::DeliveryMode::Discharge,
                        energy_wh: WattHours::new(sellable.min(1_000 * 2) / 2 + 1),
                        price: Price::new(100_000),
                        expiry_height: 10_000,
                        attestation: None,
                    },
                ));
            }
        }
        let rejected = m.block(&txs);
        rejected_sales += rejected.len();
        committed_sales += txs.len() - rejected.len();
        assert!(rejected
            .iter()
            .all(|(_, e)| matches!(e, TxError::EnergyInsufficient { .. })));
    }
    let market = m.chain.head_state().market();
    for home in 0..10 {
        let k = m.c.member(home);
        let offered: u64 = market
            .contracts
            .values()
            .filter(|c| c.seller == k)
            .map(|c| c.energy_wh.get())
            .sum();
        assert!(
            offered <= market.attested_wh(&k).get(),
            "home {home} offered more than attested"
        );
    }
    assert_eq!(committed_sales + rejected_sales, 2_000);
    assert_eq!((committed_sales, rejected_sales), (1_000, 1_000));
    eprintln!("1000 conflicting pairs: {committed_sales} sales committed, {rejected_sales} rejected, 0 Wh sold twice");
}

#[test]
fn sealed_bid_auction_clears_like_the_cli_and_unrevealed_bids_get_nothing() {
    let mut m = Market::new(6);
    let round_len = m.c.genesis.market.auction_round_blocks;
    assert_eq!(round_len, 20);
    // Round 0: heights 1..=20, commits in 1..=10, reveals in 11..=20, clearing at 20.
    let joins = vec![
        m.tx(
            0,
            TxPayload::AuctionJoin {
                round: 0,
                energy_wh: WattHours::new(1_000),
                attestation: Some(m.attestation(0, 1, 1_000)),
            },
        ),
        m.tx(
            1,
            TxPayload::AuctionJoin {
                round: 0,
                energy_wh: WattHours::new(2_000),
                attestation: Some(m.attestation(1, 1, 2_500)),
            },
        ),
    ];
    assert!(m.block(&joins).is_empty());
    let chain_id = m.c.genesis.hash();
    let bids = [
        (2usize, 1_500u64, 250_000u64),
        (3, 1_000, 200_000),
        (4, 2_000, 200_000),
    ];
    let salts: Vec<Hash32> = (0..3u8).map(|i| Hash32::sha256(&[i, 7])).collect();
    let mut commits = Vec::new();
    for ((home, wh, price), salt) in bids.iter().zip(&salts) {
        let commitment = bid_commitment(
            &chain_id,
            0,
            &m.c.member(*home),
            WattHours::new(*wh),
            Price::new(*price),
            salt,
        );
        commits.push(m.tx(
            *home,
            TxPayload::BidCommit {
                round: 0,
                commitment,
            },
        ));
    }
    // Home 5 commits too but never reveals.
    commits.push(m.tx(
        5,
        TxPayload::BidCommit {
            round: 0,
            commitment: Hash32::sha256(b"sealed forever"),
        },
    ));
    assert!(m.block(&commits).is_empty());
    // A seller of the round cannot bid in it (it would be filled from its own pool), and a
    // bidder cannot join the coalition.
    let own_pool = m.tx(
        0,
        TxPayload::BidCommit {
            round: 0,
            commitment: Hash32::sha256(b"my own energy"),
        },
    );
    let both = m.tx(
        2,
        TxPayload::AuctionJoin {
            round: 0,
            energy_wh: WattHours::new(100),
            attestation: Some(m.attestation(2, 1, 100)),
        },
    );
    let refused = m.block(&[own_pool, both]);
    assert_eq!(
        refused.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        vec![
            TxError::BothSidesOfRound {
                member: m.c.member(0),
                round: 0
            },
            TxError::BothSidesOfRound {
                member: m.c.member(2),
                round: 0
            },
        ]
    );
    // Before the reveal, the chain holds only hashes: no price or amount is readable.
    for t in &commits {
        assert!(matches!(t.tx().payload, TxPayload::BidCommit { .. }));
        let bytes = t.bytes();
        assert!(!bytes
            .windows(8)
            .any(|w| w == 250_000u64.to_be_bytes() || w == 200_000u64.to_be_bytes()));
    }
    // A reveal in the commit phase is refused.
    let early = m.tx(
        2,
        TxPayload::BidReveal {
            round: 0,
            energy_wh: WattHours::new(1_500),
            price: Price::new(250_000),
            salt: salts[0],
        },
    );
    assert!(matches!(m.block(&[early])[0].1, TxError::WrongPhase { .. }));
    while m.chain.head_height() < 10 {
        m.block(&[]);
    }
    let balances_before: Vec<u64> = (0..5).map(|h| m.balance(h)).collect();
    let mut reveals = Vec::new();
    for ((home, wh, price), salt) in bids.iter().zip(&salts) {
        reveals.push(m.tx(
            *home,
            TxPayload::BidReveal {
                round: 0,
                energy_wh: WattHours::new(*wh),
                price: Price::new(*price),
                salt: *salt,
            },
        ));
    }
    // A reveal that does not match its commitment.
    let lie = m.tx(
        5,
        TxPayload::BidReveal {
            round: 0,
            energy_wh: WattHours::new(10),
            price: Price::new(60_000),
            salt: salts[0],
        },
    );
    reveals.push(lie);
    let rejected = m.block(&reveals);
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].1,
        TxError::CommitmentMismatch {
            member: m.c.member(5)
        }
    );
    while m.chain.head_height() < 20 {
        m.block(&[]);
    }
    let cleared = m.events.iter().find_map(|e| match e {
        MarketEvent::RoundCleared {
            round: 0,
            sold_wh,
            revenue,
        } => Some((*sold_wh, *revenue)),
        _ => None,
    });
    // The same clearing the CLI runs.
    let expected = clear(&ClearingInput {
        grid_tariff: 300_000,
        floor_price: 50_000,
        pricing: Pricing::PayAsBid,
        sellers: vec![
            SellerOffer {
                id: "s0".into(),
                energy_wh: 1_000,
            },
            SellerOffer {
                id: "s1".into(),
                energy_wh: 2_000,
            },
        ],
        bids: bids
            .iter()
            .enumerate()
            .map(|(i, (h, wh, p))| Bid {
                id: format!("b{h}"),
                energy_wh: *wh as i64,
                price: *p as i64,
                seq: i as u64,
            })
            .collect(),
    })
    .unwrap();
    assert_eq!(
        cleared.map(|(wh, pay)| (wh.get(), pay.get())),
        Some((expected.sold_wh, expected.revenue))
    );
    assert_eq!((expected.sold_wh, expected.revenue), (3_000, 675_000));
    let market = m.chain.head_state().market();
    let trades: Vec<_> = market.trades.values().collect();
    assert_eq!(trades.len(), 2);
    let share = |home: usize| {
        trades
            .iter()
            .find(|t| t.seller == m.c.member(home))
            .map(|t| (t.energy_wh.get(), t.payment.get()))
    };
    assert_eq!(share(0), Some((1_000, 225_000)));
    assert_eq!(share(1), Some((2_000, 450_000)));
    // Both sellers serve the same buyers: each release covers its share of their draw (1 of 3
    // kWh and 2 of 3), so together they export what the buyers draw, not twice it.
    let mut shares: Vec<(gridlet_ledger::MemberKey, u32, usize)> = m
        .events
        .iter()
        .filter_map(|e| match e {
            MarketEvent::Release {
                seller,
                share_ppm,
                buyers,
                ..
            } => Some((*seller, *share_ppm, buyers.len())),
            _ => None,
        })
        .collect();
    shares.sort_by_key(|s| s.1);
    assert_eq!(
        shares,
        vec![(m.c.member(0), 333_333, 3), (m.c.member(1), 666_666, 3)]
    );
    assert_eq!(market.escrow.get(), 675_000);
    // Buyers paid their fills and got the unused escrow back: home 4 bid for 2 000 Wh at
    // 200 000 (400 000 escrowed), was filled 500 Wh (100 000) and got 300 000 back.
    assert_eq!(m.balance(4), balances_before[4] - 100 - 100_000);
    assert_eq!(m.balance(2), balances_before[2] - 100 - 375_000);
    // Home 5's unrevealed commitment: nothing escrowed, nothing filled (it only paid fees).
    assert!(m.chain.head_state().market().rounds.is_empty());
    // Seller 1 pooled 2 000 of 2 500 attested and sold all of it: 500 remain sellable.
    assert_eq!(market.sellable_wh(&m.c.member(1)).get(), 500);
    assert_eq!(m.total(), 6 * 1_000_000);
}

#[test]
fn what_is_over_is_retired_after_the_window_and_the_rules_keep_their_totals() {
    let mut c = Community::new(3, SelectionRule::Paper);
    c.genesis.market.retention_blocks = 5;
    c.genesis.market.delivery_blocks = 2;
    c.genesis.market.delivery_power_w = 1_000_000;
    let mut m = Market::with_community(c);
    // Two intervals attested; the first sold and delivered in full, the second one left.
    let a1 = m.attestation(0, 7, 1_000);
    let a2 = m.attestation(0, 8, 500);
    let t1 = m.tx(0, TxPayload::Attest(a1));
    let t2 = m.tx(0, TxPayload::Attest(a2));
    assert!(m.block(&[t1, t2]).is_empty());
    let sale = m.tx(
        0,
        TxPayload::Sale {
            mode: gridlet_ledger::DeliveryMode::Discharge,
            energy_wh: WattHours::new(1_000),
            price: Price::new(200_000),
            expiry_height: 50,
            attestation: None,
        },
    );
    let contract = sale.id();
    assert!(m.block(&[sale]).is_empty());
    let purchase = m.tx(
        1,
        TxPayload::Purchase {
            contract,
            payment: MicroCredits::new(200_000),
        },
    );
    let trade = purchase.id();
    assert!(m.block(&[purchase]).is_empty());
    let deliver = m.tx(
        0,
        TxPayload::Deliver {
            trade,
            delivered_wh: WattHours::new(1_000),
            receipt: m.receipt(0, &trade, 1_000),
        },
    );
    assert!(m.block(&[deliver]).is_empty());
    let deadline = m.chain.head_state().market().trades[&trade].deadline_height;
    let settled_at = m.chain.head_state().height;
    // Within the window everything is still there.
    while m.chain.head_state().height + 1 < deadline + 5 {
        m.block(&[]);
        assert!(m.chain.head_state().market().trades.contains_key(&trade));
    }
    m.block(&[]);
    let market = m.chain.head_state().market();
    assert!(
        !market.trades.contains_key(&trade),
        "retired at deadline + 5"
    );
    assert!(
        !market.contracts.contains_key(&contract),
        "its contract with it"
    );
    // The used-up interval 7 goes, the newest (8, unused) stays.
    assert!(!market.attestations.contains_key(&(m.c.member(0), 7)));
    assert!(market.attestations.contains_key(&(m.c.member(0), 8)));
    // The totals still count the retired trade, and the rules use them.
    assert_eq!(market.totals(), (1_000, 1_000, 200_000));
    assert_eq!(market.attested_wh(&m.c.member(0)).get(), 1_500);
    assert_eq!(market.outstanding_wh(&m.c.member(0)).get(), 500);
    // Over the blocks: the interval as soon as nothing could give energy back to it (its
    // trade settled), the trade and its contract after the window.
    let mut retired = (Vec::new(), 0, 0);
    for e in &m.events {
        if let MarketEvent::Retired {
            trades,
            contracts,
            attestations,
            ..
        } = e
        {
            retired.0.extend(trades.clone());
            retired.1 += contracts;
            retired.2 += attestations;
        }
    }
    assert_eq!(retired.0.len(), 1);
    assert_eq!(retired.0[0].0, trade);
    assert!(retired.0[0].1.settled);
    assert_eq!((retired.1, retired.2), (1, 1));
    assert!(settled_at < deadline);
    // A second claim for the retired interval is refused by name.
    let again = m.attestation(0, 7, 1_000);
    let again = m.tx(0, TxPayload::Attest(again));
    let refused = m.block(&[again]);
    assert!(
        matches!(
            refused.as_slice(),
            [(
                _,
                TxError::IntervalRetired {
                    interval: 7,
                    from: 8,
                    ..
                }
            )]
        ),
        "{refused:?}"
    );
    assert_eq!(m.total(), 3 * 1_000_000);
}

#[test]
fn without_a_retention_window_nothing_is_retired() {
    let mut c = Community::new(2, SelectionRule::Paper);
    c.genesis.market.retention_blocks = 0;
    let mut m = Market::with_community(c);
    let a = m.attestation(0, 3, 100);
    let t = m.tx(0, TxPayload::Attest(a));
    assert!(m.block(&[t]).is_empty());
    m.empty_blocks(20);
    assert!(m
        .events
        .iter()
        .all(|e| !matches!(e, MarketEvent::Retired { .. })));
}
