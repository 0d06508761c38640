//! Retention (protocol.md §12.9): what is over leaves the consensus state once it has been over
//! for `retention_blocks`, so the state — and the cost of every block, which re-encodes it —
//! stays the size of the recent market, not of the whole history. Running totals per home
//! ([`super::book::HomeTotals`]) keep what the rules need of it.

use std::collections::{BTreeMap, BTreeSet};

use super::book::{Allocation, ContractStatus, MarketEvent};
use crate::crypto::MemberKey;
use crate::state::{LedgerState, Rules};

impl LedgerState {
    /// At the end of block `height`: retires settled trades `retention_blocks` after their
    /// deadline, contracts expired as long or sold with a retired trade, billed days
    /// `retention_blocks` after their billing, and attestation records used up, referenced by
    /// nothing that can still give energy back, and older than the home's newest record.
    pub(super) fn retire(&mut self, rules: &Rules, height: u64) -> Option<MarketEvent> {
        let keep = rules.market.retention_blocks;
        if keep == 0 {
            return None;
        }
        let over = |since: u64| since.saturating_add(keep) <= height;
        let m = &mut self.market;
        let done: Vec<_> = m
            .trades
            .iter()
            .filter(|(_, t)| t.settled && over(t.deadline_height))
            .map(|(id, _)| *id)
            .collect();
        let trades: Vec<_> = done
            .iter()
            .filter_map(|id| m.trades.remove(id).map(|t| (*id, t)))
            .collect();
        let before = m.contracts.len();
        m.contracts.retain(|_, c| match c.status {
            ContractStatus::Open => true,
            ContractStatus::Expired => !over(c.expiry_height),
            ContractStatus::Sold { trade } => m.trades.contains_key(&trade),
        });
        let contracts = before.saturating_sub(m.contracts.len()) as u64;
        let days: Vec<u64> = m
            .days
            .iter()
            .filter(|(_, d)| d.bills.is_some() && over(d.billed_height))
            .map(|(day, _)| *day)
            .collect();
        for day in &days {
            m.days.remove(day);
            m.days_from = m.days_from.max(day.saturating_add(1));
        }
        // Intervals that can still get energy back: those of open contracts, of trades not
        // settled and of auction pools.
        let mut referenced: BTreeSet<(MemberKey, u64)> = BTreeSet::new();
        let mut refer = |home: MemberKey, allocation: &[Allocation]| {
            referenced.extend(allocation.iter().map(|a| (home, a.interval)));
        };
        for c in m.contracts.values() {
            if c.status == ContractStatus::Open {
                refer(c.seller, &c.allocation);
            }
        }
        for t in m.trades.values().filter(|t| !t.settled) {
            refer(t.seller, &t.allocation);
        }
        for r in m.rounds.values() {
            for s in &r.sellers {
                refer(s.seller, &s.allocation);
            }
        }
        let mut newest: BTreeMap<MemberKey, u64> = BTreeMap::new();
        for (home, interval) in m.attestations.keys() {
            newest.insert(*home, *interval);
        }
        let used: Vec<(MemberKey, u64)> = m
            .attestations
            .iter()
            .filter(|(key, r)| {
                r.remaining_wh.is_zero()
                    && !referenced.contains(key)
                    && newest.get(&key.0).is_some_and(|n| key.1 < *n)
            })
            .map(|(key, _)| *key)
            .collect();
        for (home, interval) in &used {
            m.attestations.remove(&(*home, *interval));
            let t = m.totals_of(*home);
            t.attest_from = t.attest_from.max(interval.saturating_add(1));
        }
        let attestations = used.len() as u64;
        if trades.is_empty() && contracts == 0 && attestations == 0 && days.is_empty() {
            return None;
        }
        Some(MarketEvent::Retired {
            trades,
            contracts,
            attestations,
            days,
        })
    }
}
