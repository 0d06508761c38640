//! The day-ahead rules on chain: the schedule commitment (verified by replaying the dispatch
//! step over the signed proposals it carries) and the meter readings that bill the day once
//! every home's are in (docs/scheduling.md, docs/protocol.md).

use crate::units::MicroCredits;
use std::collections::BTreeMap;

use super::billing::{amount_owed, verify_readings, DayPrices, Reading};
use super::book::{DayRecord, MarketEvent};
use super::dispatch::{proposal_digest, replay_checked, DispatchParams, ProposalMw};
use crate::crypto::MemberKey;
use crate::error::TxError;
use crate::genesis::ScheduleParams;
use crate::state::{LedgerState, Rules};
use crate::tx::{ScheduleCommit, SignedProposal};

fn schedule_params(rules: &Rules) -> Result<&ScheduleParams, TxError> {
    rules.schedule.as_ref().ok_or(TxError::ScheduleDisabled)
}

/// The day's grid import tariff and feed-in price per interval, micro-credits per kWh.
pub fn day_tariffs(p: &ScheduleParams, grid_tariff: u64) -> (Vec<i64>, Vec<i64>) {
    let intervals = usize::try_from(p.intervals).unwrap_or(0);
    let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    (
        (0..intervals)
            .map(|t| signed(p.import_price_at(grid_tariff, t)))
            .collect(),
        vec![signed(p.feed_in_price); intervals],
    )
}

/// Builds the commitment of a day from every iteration's signed proposals (any member order:
/// they are put in key order). The figures are the replay's, so the transaction is valid
/// exactly when the proposals are.
pub fn build_commit(
    p: &ScheduleParams,
    grid_tariff: u64,
    day: u64,
    mut rounds: Vec<Vec<(MemberKey, SignedProposal)>>,
) -> ScheduleCommit {
    for round in &mut rounds {
        round.sort_by_key(|(k, _)| *k);
    }
    let keyed: Vec<Vec<(MemberKey, ProposalMw)>> = rounds
        .iter()
        .map(|r| r.iter().map(|(k, s)| (*k, s.values_mw.clone())).collect())
        .collect();
    let replayed = super::dispatch::replay(&DispatchParams::from_schedule(p, grid_tariff), &keyed);
    ScheduleCommit {
        day,
        rounds: rounds
            .into_iter()
            .map(|r| r.into_iter().map(|(_, s)| s).collect())
            .collect(),
        schedule_wh: replayed.schedule_wh.into_iter().map(|(_, v)| v).collect(),
        prices: replayed.prices,
        inputs_hash: replayed.inputs_hash,
        primal_w: replayed.primal_w,
        dual_w: replayed.dual_w,
    }
}

impl LedgerState {
    /// Verifies a schedule commitment completely, then records the day.
    pub(crate) fn apply_schedule_commit(
        &mut self,
        rules: &Rules,
        commit: &ScheduleCommit,
    ) -> Result<MarketEvent, TxError> {
        let p = schedule_params(rules)?;
        let day = commit.day;
        if self.market.days.contains_key(&day) {
            return Err(TxError::ScheduleExists { day });
        }
        if day < self.market.days_from {
            return Err(TxError::DayRetired {
                day,
                from: self.market.days_from,
            });
        }
        let intervals = usize::try_from(p.intervals).unwrap_or(0);
        let bad = |round: usize, reason: String| TxError::BadProposal { day, round, reason };
        let mut rounds: Vec<Vec<(MemberKey, ProposalMw)>> = Vec::with_capacity(commit.rounds.len());
        for (i, round) in commit.rounds.iter().enumerate() {
            if round.len() != self.members().len() {
                return Err(bad(
                    i,
                    format!(
                        "{} proposals for {} members",
                        round.len(),
                        self.members().len()
                    ),
                ));
            }
            let index = u32::try_from(i).map_err(|_| bad(i, "too many iterations".into()))?;
            let mut keyed = Vec::with_capacity(round.len());
            for ((home, key), proposal) in self.members().iter().zip(round) {
                if proposal.values_mw.len() != intervals {
                    return Err(bad(
                        i,
                        format!(
                            "home {home} proposed {} values for {intervals} intervals",
                            proposal.values_mw.len()
                        ),
                    ));
                }
                let digest =
                    proposal_digest(&rules.chain_id, day, index, home, &proposal.values_mw);
                if !proposal.signature.verify(&digest, key) {
                    return Err(bad(i, format!("home {home}'s signature does not verify")));
                }
                keyed.push((*home, proposal.values_mw.clone()));
            }
            rounds.push(keyed);
        }
        let params = DispatchParams::from_schedule(p, rules.grid_tariff.get());
        let replayed = replay_checked(
            &params,
            &rounds,
            DispatchParams::tolerance_kw(p),
            p.max_iterations,
        )
        .map_err(|source| TxError::BadDispatch { day, source })?;
        let mismatch = |field| TxError::ScheduleMismatch { day, field };
        let schedule: Vec<&Vec<i64>> = replayed.schedule_wh.iter().map(|(_, v)| v).collect();
        if schedule.len() != commit.schedule_wh.len()
            || schedule
                .iter()
                .zip(&commit.schedule_wh)
                .any(|(a, b)| *a != b)
        {
            return Err(mismatch("schedule"));
        }
        if replayed.prices != commit.prices {
            return Err(mismatch("prices"));
        }
        if replayed.inputs_hash != commit.inputs_hash {
            return Err(mismatch("inputs hash"));
        }
        if replayed.primal_w != commit.primal_w || replayed.dual_w != commit.dual_w {
            return Err(mismatch("residuals"));
        }
        self.market.days.insert(
            day,
            DayRecord {
                schedule_wh: replayed.schedule_wh.into_iter().collect(),
                prices: replayed.prices,
                inputs_hash: replayed.inputs_hash,
                iterations: replayed.iterations,
                primal_w: replayed.primal_w,
                dual_w: replayed.dual_w,
                metered_wh: BTreeMap::new(),
                bills: None,
                billed_height: 0,
            },
        );
        Ok(MarketEvent::ScheduleCommitted { day })
    }

    /// Verifies a home's readings of a scheduled day and records them; when they are the last
    /// home's, bills the day: every home pays (or receives) its amount to (from) the community
    /// account. `available` is what the sender holds beyond the fee. Nothing changes on error.
    pub(crate) fn apply_meter_readings(
        &mut self,
        rules: &Rules,
        home: MemberKey,
        day: u64,
        readings: &[Reading],
        available: MicroCredits,
    ) -> Result<Option<MarketEvent>, TxError> {
        let p = schedule_params(rules)?;
        let record = self
            .market
            .days
            .get(&day)
            .ok_or(TxError::UnknownDay { day })?;
        if record.bills.is_some() {
            return Err(TxError::DayBilled { day });
        }
        if record.metered_wh.contains_key(&home) {
            return Err(TxError::ReadingsExist { day, home });
        }
        // The day is billed among the homes it scheduled (the members of its commit).
        if !record.schedule_wh.contains_key(&home) {
            return Err(TxError::UnknownSender { sender: home });
        }
        let meter_key = self
            .attestors()
            .get(&home)
            .ok_or(TxError::UnknownSender { sender: home })?;
        let intervals = usize::try_from(p.intervals).unwrap_or(0);
        let metered = verify_readings(&rules.chain_id, day, &home, meter_key, readings, intervals)?;
        let complete = record
            .schedule_wh
            .keys()
            .all(|k| *k == home || record.metered_wh.contains_key(k));
        if !complete {
            if let Some(r) = self.market.days.get_mut(&day) {
                r.metered_wh.insert(home, metered);
            }
            return Ok(None);
        }
        // The last readings: bill everyone, checking every balance before moving anything.
        let (tariff, feed_in) = day_tariffs(p, rules.grid_tariff.get());
        let prices = DayPrices {
            clearing: &record.prices,
            tariff: &tariff,
            feed_in: &feed_in,
        };
        let overflow = || TxError::Overflow { account: home };
        let mut bills = BTreeMap::new();
        let mut new_balances = Vec::with_capacity(record.schedule_wh.len());
        let mut community = i128::from(self.community_balance);
        for member in record.schedule_wh.keys() {
            let metered_wh = if *member == home {
                &metered
            } else {
                record.metered_wh.get(member).ok_or_else(overflow)?
            };
            let scheduled = record
                .schedule_wh
                .get(member)
                .ok_or(TxError::UnknownDay { day })?;
            let owed = amount_owed(member, &prices, scheduled, metered_wh)?;
            let owed = i64::try_from(owed).map_err(|_| overflow())?;
            let balance = if *member == home {
                available
            } else {
                self.account(member).balance
            };
            let after = i128::from(balance.get())
                .checked_sub(i128::from(owed))
                .ok_or_else(overflow)?;
            let after = u64::try_from(after).map(MicroCredits::new).map_err(|_| {
                TxError::BalanceInsufficient {
                    account: *member,
                    needed: MicroCredits::new(u64::try_from(owed).unwrap_or(0)),
                    available: balance,
                }
            })?;
            // The sender's fee is taken from its balance afterwards.
            let stored = if *member == home {
                after.checked_add(rules.tx_fee).ok_or_else(overflow)?
            } else {
                after
            };
            community = community
                .checked_add(i128::from(owed))
                .ok_or_else(overflow)?;
            new_balances.push((*member, stored));
            bills.insert(*member, owed);
        }
        let community = i64::try_from(community).map_err(|_| overflow())?;
        for (member, balance) in new_balances {
            self.accounts.entry(member).or_default().balance = balance;
        }
        self.community_balance = community;
        if let Some(r) = self.market.days.get_mut(&day) {
            r.metered_wh.insert(home, metered);
            r.bills = Some(bills.clone());
            r.billed_height = self.height.saturating_add(1);
        }
        Ok(Some(MarketEvent::DayBilled {
            day,
            bills: bills.into_iter().collect(),
        }))
    }
}
