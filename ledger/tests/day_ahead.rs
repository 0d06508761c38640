//! The day-ahead schedule on chain: a commitment is accepted only if every node's replay of
//! its signed proposals gives the same figures; meter readings bill the day once every home's
//! are in, following the schedule pays exactly the clearing price, and credits are conserved.

mod common;

use common::Community;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::crypto::{deterministic_key, Signature};
use gridlet_ledger::genesis::ScheduleParams;
use gridlet_ledger::market::billing::{reading_digest, BillingError, Reading};
use gridlet_ledger::market::day_ahead::build_commit;
use gridlet_ledger::market::dispatch::{proposal_digest, DispatchError};
use gridlet_ledger::market::MarketEvent;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::tx::{ScheduleCommit, SignedProposal};
use gridlet_ledger::MicroCredits;
use gridlet_ledger::{Chain, MemberKey, SignedTransaction, Transaction, TxError, TxPayload};

const DAY: u64 = 20_000;

struct Net {
    c: Community,
    chain: Chain,
    nonces: Vec<u64>,
    events: Vec<MarketEvent>,
}

fn params() -> ScheduleParams {
    ScheduleParams {
        intervals: 4,
        interval_min: 360,
        feeder_w: 8_000,
        import_prices: vec![200_000, 300_000, 300_000, 250_000],
        feed_in_price: 80_000,
        rho_milli: 50,
        tolerance_w: 10,
        max_iterations: 3,
    }
}

impl Net {
    fn new() -> Net {
        let mut c = Community::new(3, SelectionRule::Paper);
        c.genesis.schedule = Some(params());
        for m in &mut c.genesis.members {
            m.balance = MicroCredits::new(100_000_000);
        }
        let chain = Chain::new(c.genesis.clone()).unwrap();
        Net {
            c,
            chain,
            nonces: vec![0; 3],
            events: Vec::new(),
        }
    }

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

    /// One block with `tx`; the rejection, if any.
    fn submit(&mut self, home: usize, payload: TxPayload) -> Option<TxError> {
        let t = self.tx(home, payload);
        let slot = self.chain.head_state().slot + 1;
        let producer = self.chain.ranked_producers(slot)[0];
        let out = self
            .chain
            .produce(self.c.key_of(&producer), slot, std::slice::from_ref(&t))
            .unwrap();
        let rejected = out.rejected.first().map(|(_, e)| e.clone());
        if rejected.is_some() {
            self.nonces[home] -= 1;
        }
        let ins = self.chain.insert(out.block, Checks::FULL).unwrap();
        self.events.extend(ins.events);
        rejected
    }

    fn sign_proposal(&self, home: usize, round: u32, values_mw: Vec<i32>) -> SignedProposal {
        let digest = proposal_digest(
            &self.c.genesis.hash(),
            DAY,
            round,
            &self.c.member(home),
            &values_mw,
        );
        SignedProposal {
            signature: Signature::sign(&digest, &self.c.keys[home]),
            values_mw,
        }
    }

    /// Three iterations of made-up proposals (the limit: accepted unconverged).
    fn rounds(&self) -> Vec<Vec<(MemberKey, SignedProposal)>> {
        (0..3u32)
            .map(|r| {
                (0..3usize)
                    .map(|h| {
                        // mW
                        let base = [1_500_000, -2_000_000, 800_000, 300_000][..].to_vec();
                        let values: Vec<i32> = base
                            .iter()
                            .map(|v| v + (h as i32 - 1) * 400_000 - r as i32 * 37_000)
                            .collect();
                        (self.c.member(h), self.sign_proposal(h, r, values))
                    })
                    .collect()
            })
            .collect()
    }

    fn commit(&self) -> ScheduleCommit {
        build_commit(
            &params(),
            self.c.genesis.grid_tariff.get(),
            DAY,
            self.rounds(),
        )
    }

    fn readings(&self, home: usize, day: u64, wh: &[i64]) -> Vec<Reading> {
        let meter = deterministic_key(43, home as u64);
        wh.iter()
            .enumerate()
            .map(|(i, w)| Reading {
                interval: i as u32,
                net_wh: *w,
                signature: Some(Signature::sign(
                    &reading_digest(
                        &self.c.genesis.hash(),
                        &self.c.member(home),
                        day,
                        i as u32,
                        *w,
                    ),
                    &meter,
                )),
            })
            .collect()
    }

    fn balance(&self, home: usize) -> u64 {
        self.chain
            .head_state()
            .account(&self.c.member(home))
            .balance
            .get()
    }
}

#[test]
fn a_commitment_is_accepted_only_if_the_replay_of_its_signed_proposals_agrees() {
    let mut n = Net::new();
    let good = n.commit();
    let kinds = |f: &dyn Fn(&mut ScheduleCommit)| {
        let mut c = good.clone();
        f(&mut c);
        TxPayload::ScheduleCommit(Box::new(c))
    };
    // A value changed under a valid signature: the home never proposed it.
    let e = n.submit(0, kinds(&|c| c.rounds[1][2].values_mw[0] += 1));
    assert!(
        matches!(e, Some(TxError::BadProposal { round: 1, .. })),
        "{e:?}"
    );
    // A proposal signed by another member.
    let forged = n.sign_proposal(0, 2, good.rounds[2][1].values_mw.clone());
    let e = n.submit(1, kinds(&|c| c.rounds[2][1] = forged.clone()));
    assert!(
        matches!(e, Some(TxError::BadProposal { round: 2, .. })),
        "{e:?}"
    );
    // Prices, schedule or hash that the proposals do not give.
    let e = n.submit(1, kinds(&|c| c.prices[3] += 1));
    assert_eq!(
        e,
        Some(TxError::ScheduleMismatch {
            day: DAY,
            field: "prices"
        })
    );
    let e = n.submit(1, kinds(&|c| c.schedule_wh[0][0] -= 1));
    assert_eq!(
        e,
        Some(TxError::ScheduleMismatch {
            day: DAY,
            field: "schedule"
        })
    );
    let e = n.submit(1, kinds(&|c| c.inputs_hash.0[0] ^= 1));
    assert_eq!(
        e,
        Some(TxError::ScheduleMismatch {
            day: DAY,
            field: "inputs hash"
        })
    );
    // Stopped early: two unconverged iterations of three allowed.
    let mut rounds = n.rounds();
    rounds.pop();
    let short = build_commit(&params(), n.c.genesis.grid_tariff.get(), DAY, rounds);
    let e = n.submit(2, TxPayload::ScheduleCommit(Box::new(short)));
    assert_eq!(
        e,
        Some(TxError::BadDispatch {
            day: DAY,
            source: DispatchError::StoppedEarly { iterations: 2 }
        })
    );
    // The honest one, once.
    assert_eq!(
        n.submit(2, TxPayload::ScheduleCommit(Box::new(good.clone()))),
        None
    );
    assert_eq!(
        n.submit(0, TxPayload::ScheduleCommit(Box::new(good.clone()))),
        Some(TxError::ScheduleExists { day: DAY })
    );
    assert!(n
        .events
        .contains(&MarketEvent::ScheduleCommitted { day: DAY }));
    let day = &n.chain.head_state().market().days[&DAY];
    assert_eq!(day.prices, good.prices);
    assert_eq!(day.iterations, 3);
    // Both kinds survive the codec.
    let stx = n.tx(0, TxPayload::ScheduleCommit(Box::new(good)));
    let back = SignedTransaction::decode(stx.bytes()).unwrap();
    assert_eq!(back.tx().payload, stx.tx().payload);
    let readings = n.readings(0, DAY, &[1, -2, 3, -4]);
    let stx = n.tx(1, TxPayload::MeterReadings { day: DAY, readings });
    let back = SignedTransaction::decode(stx.bytes()).unwrap();
    assert_eq!(back.tx().payload, stx.tx().payload);
}

#[test]
fn readings_bill_the_day_when_every_home_sent_them_and_credits_are_conserved() {
    let mut n = Net::new();
    let total = n.chain.head_state().total_credits();
    let early = n.readings(0, DAY, &[0, 0, 0, 0]);
    assert_eq!(
        n.submit(
            0,
            TxPayload::MeterReadings {
                day: DAY,
                readings: early
            }
        ),
        Some(TxError::UnknownDay { day: DAY })
    );
    let commit = n.commit();
    assert_eq!(
        n.submit(2, TxPayload::ScheduleCommit(Box::new(commit.clone()))),
        None
    );
    let plan = |h: usize| {
        commit.schedule_wh[(0..3).filter(|i| n.c.member(*i) < n.c.member(h)).count()].clone()
    };
    let (p0, p1, p2) = (plan(0), plan(1), plan(2));
    // Home 0 follows its schedule; home 1 imports 100 Wh more in interval 1; home 2 exports
    // 50 Wh more in interval 2.
    let m1: Vec<i64> = p1
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 1 { v + 100 } else { *v })
        .collect();
    let m2: Vec<i64> = p2
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 2 { v - 50 } else { *v })
        .collect();
    // Forged: home 1's values signed by home 2's meter; unsigned; another day's.
    let mut forged = n.readings(2, DAY, &m1);
    for r in &mut forged {
        r.signature = n.readings(2, DAY, &m1)[r.interval as usize].signature;
    }
    let e = n.submit(
        1,
        TxPayload::MeterReadings {
            day: DAY,
            readings: forged,
        },
    );
    assert!(
        matches!(e, Some(TxError::Billing(BillingError::Forged { .. }))),
        "{e:?}"
    );
    let mut unsigned = n.readings(1, DAY, &m1);
    unsigned[3].signature = None;
    let e = n.submit(
        1,
        TxPayload::MeterReadings {
            day: DAY,
            readings: unsigned,
        },
    );
    assert!(
        matches!(
            e,
            Some(TxError::Billing(BillingError::Unsigned { interval: 3, .. }))
        ),
        "{e:?}"
    );
    let e = n.submit(
        1,
        TxPayload::MeterReadings {
            day: DAY,
            readings: n.readings(1, DAY + 1, &m1),
        },
    );
    assert!(
        matches!(e, Some(TxError::Billing(BillingError::Forged { .. }))),
        "{e:?}"
    );

    let before: Vec<u64> = (0..3).map(|h| n.balance(h)).collect();
    let community_before = n.chain.head_state().community_balance();
    let fee = n.c.genesis.tx_fee;
    assert_eq!(
        n.submit(
            0,
            TxPayload::MeterReadings {
                day: DAY,
                readings: n.readings(0, DAY, &p0)
            }
        ),
        None
    );
    assert_eq!(
        n.submit(
            1,
            TxPayload::MeterReadings {
                day: DAY,
                readings: n.readings(1, DAY, &m1)
            }
        ),
        None
    );
    assert!(n.chain.head_state().market().days[&DAY].bills.is_none());
    assert_eq!(
        n.submit(
            1,
            TxPayload::MeterReadings {
                day: DAY,
                readings: n.readings(1, DAY, &m1)
            }
        ),
        Some(TxError::ReadingsExist {
            day: DAY,
            home: n.c.member(1)
        })
    );
    assert_eq!(
        n.submit(
            2,
            TxPayload::MeterReadings {
                day: DAY,
                readings: n.readings(2, DAY, &m2)
            }
        ),
        None
    );
    let day = n.chain.head_state().market().days[&DAY].clone();
    let bills = day.bills.clone().expect("billed");
    let clearing = |wh: &[i64]| -> i64 {
        wh.iter()
            .zip(&day.prices)
            .map(|(w, p)| (i128::from(*w) * i128::from(*p) / 1000) as i64)
            .sum()
    };
    // Following the schedule costs exactly the clearing price.
    assert_eq!(bills[&n.c.member(0)], clearing(&p0));
    // Deviations: 100 Wh more import at the tariff of interval 1; 50 Wh more export earns the
    // feed-in price.
    assert_eq!(bills[&n.c.member(1)], clearing(&p1) + 100 * 300_000 / 1000);
    assert_eq!(bills[&n.c.member(2)], clearing(&p2) - 50 * 80_000 / 1000);
    for h in 0..3 {
        let paid = bills[&n.c.member(h)];
        assert_eq!(
            i128::from(n.balance(h)),
            i128::from(before[h]) - i128::from(fee.get()) - i128::from(paid)
        );
    }
    let paid: i64 = bills.values().sum();
    assert_eq!(
        n.chain.head_state().community_balance(),
        community_before + paid + 3 * fee.get() as i64
    );
    assert_eq!(n.chain.head_state().total_credits(), total);
    assert!(n
        .events
        .iter()
        .any(|e| matches!(e, MarketEvent::DayBilled { day: DAY, .. })));
    assert_eq!(
        n.submit(
            0,
            TxPayload::MeterReadings {
                day: DAY,
                readings: n.readings(0, DAY, &p0)
            }
        ),
        Some(TxError::DayBilled { day: DAY })
    );
}
