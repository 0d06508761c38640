//! The market's transaction rules and end-of-block steps.
//!
//! Design: every rule validates completely before it changes anything, so a rejected
//! transaction leaves the state as it was. The sender's fee and nonce are handled by
//! [`crate::state::LedgerState::apply_tx`]; here `available` is what the sender can spend on top
//! of the fee.
//!
//! Decisions: purchases buy a whole contract (no partial purchases: a seller who wants smaller
//! lots offers several contracts); heights are the market's clock; a purchase at height `p` is
//! final at `p + F`, when the release order goes out; delivery may be reported until
//! `p + F + delivery_blocks`, and at the end of that block the undelivered part is refunded and
//! its energy returns to the seller's sellable energy.

use secp256k1::PublicKey;

use super::book::{
    Allocation, AttestationRecord, ContractStatus, RevealedBid, RoundSeller, SaleContract, Trade,
    TradeSource,
};
use super::clearing::{payment, split_largest_remainder};
use super::{attestation_digest, bid_commitment, receipt_digest};
use crate::crypto::MemberKey;
use crate::error::TxError;
use crate::state::{LedgerState, Rules};
use crate::tx::{Attestation, SignedTransaction, TxPayload};
use crate::units::{MicroCredits, WattHours};

pub(super) fn overflow(account: MemberKey) -> TxError {
    TxError::Overflow { account }
}

/// Which phase of an auction round a height is in, if auctions are on.
pub(super) fn round_phase(rules: &Rules, height: u64) -> Option<(u64, bool, bool)> {
    super::auction_phase(rules.market.auction_round_blocks, height)
        .map(|p| (p.round, p.commit, p.last))
}

/// Checks that `height` is in `round`'s commit phase (`commit`) or reveal phase (`!commit`).
pub(super) fn expect_phase(
    rules: &Rules,
    height: u64,
    round: u64,
    commit: bool,
) -> Result<(), TxError> {
    let (current, in_commit, _) = round_phase(rules, height).ok_or(TxError::AuctionsDisabled)?;
    if round != current || in_commit != commit {
        return Err(TxError::WrongPhase {
            round,
            phase: if commit { "commit" } else { "reveal" },
            height,
        });
    }
    Ok(())
}

impl LedgerState {
    pub(super) fn verify_attestation(
        &self,
        rules: &Rules,
        home: &MemberKey,
        a: &Attestation,
    ) -> Result<(), TxError> {
        if a.energy_wh.is_zero() {
            return Err(TxError::ZeroEnergy);
        }
        let key: &PublicKey = self
            .attestors()
            .get(home)
            .ok_or(TxError::BadAttestation { home: *home })?;
        let digest = attestation_digest(&rules.chain_id, home, a.interval, a.energy_wh);
        if !a.signature.verify(&digest, key) {
            return Err(TxError::BadAttestation { home: *home });
        }
        if self.market.attestations.contains_key(&(*home, a.interval)) {
            return Err(TxError::AlreadyAttested {
                home: *home,
                interval: a.interval,
            });
        }
        let from = self.market.homes.get(home).map_or(0, |t| t.attest_from);
        if a.interval < from {
            return Err(TxError::IntervalRetired {
                home: *home,
                interval: a.interval,
                from,
            });
        }
        let bound = self
            .membership()
            .equipment(home)
            .map_or(0, |e| e.attest_bound_wh());
        let outstanding = self
            .market
            .outstanding_wh(home)
            .get()
            .saturating_add(a.energy_wh.get());
        if outstanding > bound {
            return Err(TxError::BeyondEquipment {
                home: *home,
                attested: a.energy_wh.get(),
                outstanding,
                bound,
            });
        }
        Ok(())
    }

    pub(super) fn record_attestation(&mut self, home: MemberKey, a: &Attestation) {
        let totals = self.market.totals_of(home);
        totals.attested_wh = totals.attested_wh.saturating_add(a.energy_wh.get());
        self.market.attestations.insert(
            (home, a.interval),
            AttestationRecord {
                energy_wh: a.energy_wh,
                remaining_wh: a.energy_wh,
            },
        );
    }

    /// Checks that `home` can commit `wh` (with an attestation riding along, if any).
    pub(super) fn check_sellable(
        &self,
        rules: &Rules,
        home: &MemberKey,
        wh: WattHours,
        attestation: &Option<Attestation>,
    ) -> Result<(), TxError> {
        if wh.is_zero() {
            return Err(TxError::ZeroEnergy);
        }
        let mut available = self.market.sellable_wh(home);
        if let Some(a) = attestation {
            self.verify_attestation(rules, home, a)?;
            available = available.checked_add(a.energy_wh).ok_or(overflow(*home))?;
        }
        if wh > available {
            return Err(TxError::EnergyInsufficient {
                home: *home,
                needed: wh,
                available,
            });
        }
        Ok(())
    }

    /// Takes `wh` from the home's attested intervals, oldest first (checked beforehand).
    pub(super) fn allocate(&mut self, home: MemberKey, mut wh: WattHours) -> Vec<Allocation> {
        let mut out = Vec::new();
        let intervals: Vec<u64> = self
            .market
            .attestations
            .range((home, 0)..=(home, u64::MAX))
            .map(|((_, interval), _)| *interval)
            .collect();
        for interval in intervals {
            if wh.is_zero() {
                break;
            }
            let taken = self
                .market
                .attestations
                .update(&(home, interval), |record| {
                    let take = record.remaining_wh.min(wh);
                    record.remaining_wh = record.remaining_wh.saturating_sub(take);
                    take
                })
                .unwrap_or(WattHours::ZERO);
            if !taken.is_zero() {
                wh = wh.saturating_sub(taken);
                out.push(Allocation {
                    interval,
                    wh: taken,
                });
            }
        }
        out
    }

    /// Gives `wh` back to the home's intervals, from the end of the allocation.
    pub(super) fn give_back(
        &mut self,
        home: MemberKey,
        allocation: &[Allocation],
        mut wh: WattHours,
    ) {
        for a in allocation.iter().rev() {
            if wh.is_zero() {
                break;
            }
            let give = a.wh.min(wh);
            self.market.attestations.update(&(home, a.interval), |r| {
                // Never more than was attested for the interval.
                r.remaining_wh = r
                    .remaining_wh
                    .checked_add(give)
                    .map_or(r.energy_wh, |back| back.min(r.energy_wh));
            });
            wh = wh.saturating_sub(give);
        }
    }

    pub(super) fn credit(&mut self, who: MemberKey, amount: MicroCredits) -> Result<(), TxError> {
        let account = self.accounts.entry(who).or_default();
        account.balance = account.balance.checked_add(amount).ok_or(overflow(who))?;
        Ok(())
    }

    pub(super) fn debit(&mut self, who: MemberKey, amount: MicroCredits) -> Result<(), TxError> {
        let account = self.accounts.entry(who).or_default();
        account.balance =
            account
                .balance
                .checked_sub(amount)
                .ok_or(TxError::BalanceInsufficient {
                    account: who,
                    needed: amount,
                    available: account.balance,
                })?;
        Ok(())
    }

    pub(super) fn escrow_from(
        &mut self,
        from: MemberKey,
        amount: MicroCredits,
    ) -> Result<(), TxError> {
        let escrow = self
            .market
            .escrow
            .checked_add(amount)
            .ok_or(overflow(from))?;
        self.debit(from, amount)?;
        self.market.escrow = escrow;
        Ok(())
    }

    pub(super) fn escrow_pay(
        &mut self,
        to: MemberKey,
        amount: MicroCredits,
    ) -> Result<(), TxError> {
        let escrow = self.market.escrow.checked_sub(amount).ok_or(overflow(to))?;
        self.credit(to, amount)?;
        self.market.escrow = escrow;
        Ok(())
    }

    /// Applies a market transaction (not a transfer). `available` is what the sender holds
    /// beyond the fee. Validates fully before changing anything.
    pub(crate) fn apply_market(
        &mut self,
        rules: &Rules,
        stx: &SignedTransaction,
        available: MicroCredits,
    ) -> Result<(), TxError> {
        let tx = stx.tx();
        let me = tx.sender;
        let height = self.height.saturating_add(1);
        match &tx.payload {
            // Credit transfers, evidence and membership are not market rules: `LedgerState`
            // has them.
            TxPayload::Transfer { .. }
            | TxPayload::Evidence(_)
            | TxPayload::MemberPropose(_)
            | TxPayload::MemberApprove { .. } => Ok(()),
            TxPayload::ScheduleCommit(commit) => {
                let event = self.apply_schedule_commit(rules, commit)?;
                self.pending_events.push(event);
                Ok(())
            }
            TxPayload::MeterReadings { day, readings } => {
                if let Some(event) =
                    self.apply_meter_readings(rules, me, *day, readings, available)?
                {
                    self.pending_events.push(event);
                }
                Ok(())
            }
            TxPayload::Attest(a) => {
                self.verify_attestation(rules, &me, a)?;
                self.record_attestation(me, a);
                Ok(())
            }
            TxPayload::Sale {
                mode,
                energy_wh,
                price,
                expiry_height,
                attestation,
            } => {
                if *price > rules.grid_tariff {
                    return Err(TxError::PriceAboveTariff {
                        price: *price,
                        tariff: rules.grid_tariff,
                    });
                }
                if *expiry_height < height {
                    return Err(TxError::ExpiryPassed {
                        expiry: *expiry_height,
                        height,
                    });
                }
                self.check_sellable(rules, &me, *energy_wh, attestation)?;
                if let Some(a) = attestation {
                    self.record_attestation(me, a);
                }
                let allocation = self.allocate(me, *energy_wh);
                self.market.contracts.insert(
                    stx.id(),
                    SaleContract {
                        seller: me,
                        energy_wh: *energy_wh,
                        price: *price,
                        expiry_height: *expiry_height,
                        mode: *mode,
                        allocation,
                        status: ContractStatus::Open,
                    },
                );
                Ok(())
            }
            TxPayload::Purchase {
                contract,
                payment: offered,
            } => {
                let c = self
                    .market
                    .contracts
                    .get(contract)
                    .ok_or(TxError::UnknownContract {
                        contract: *contract,
                    })?;
                if c.status != ContractStatus::Open || height > c.expiry_height {
                    return Err(TxError::ContractNotOpen {
                        contract: *contract,
                    });
                }
                if c.seller == me {
                    return Err(TxError::OwnContract);
                }
                let expected = payment(c.energy_wh, c.price).map_err(|_| overflow(me))?;
                if *offered != expected {
                    return Err(TxError::WrongPayment {
                        expected,
                        found: *offered,
                    });
                }
                if *offered > available {
                    return Err(TxError::BalanceInsufficient {
                        account: me,
                        needed: offered.checked_add(rules.tx_fee).ok_or(overflow(me))?,
                        available: available.checked_add(rules.tx_fee).ok_or(overflow(me))?,
                    });
                }
                // Released once this block is quorum-final (the node acts on final blocks only).
                let release = height;
                let deadline = rules.delivery_deadline(release, c.energy_wh);
                let trade = Trade {
                    source: TradeSource::Sale {
                        contract: *contract,
                    },
                    seller: c.seller,
                    energy_wh: c.energy_wh,
                    payment: *offered,
                    payers: vec![(me, *offered)],
                    traded_height: height,
                    release_height: release,
                    deadline_height: deadline,
                    allocation: c.allocation.clone(),
                    released: false,
                    delivered_wh: None,
                    paid_out: MicroCredits::ZERO,
                    settled: false,
                };
                self.escrow_from(me, *offered)?;
                self.market.contracts.update(contract, |c| {
                    c.status = ContractStatus::Sold { trade: stx.id() };
                });
                let totals = self.market.totals_of(trade.seller);
                totals.sold_wh = totals.sold_wh.saturating_add(trade.energy_wh.get());
                self.market.trades.insert(stx.id(), trade);
                Ok(())
            }
            TxPayload::Deliver {
                trade,
                delivered_wh,
                receipt,
            } => {
                let t = self
                    .market
                    .trades
                    .get(trade)
                    .ok_or(TxError::UnknownTrade { trade: *trade })?;
                // The seller reports a discharge, the buyer a charge (each measures it).
                if self.market.reporter(t) != Some(me) {
                    return Err(TxError::NotSeller { trade: *trade });
                }
                let seller = t.seller;
                if !t.released {
                    return Err(TxError::NotReleased { trade: *trade });
                }
                if t.delivered_wh.is_some() || t.settled {
                    return Err(TxError::AlreadyDelivered { trade: *trade });
                }
                if height > t.deadline_height {
                    return Err(TxError::DeadlinePassed {
                        deadline: t.deadline_height,
                        height,
                    });
                }
                if *delivered_wh > t.energy_wh {
                    return Err(TxError::OverDelivery {
                        delivered: *delivered_wh,
                        sold: t.energy_wh,
                    });
                }
                let key = self
                    .attestors()
                    .get(&me)
                    .ok_or(TxError::BadReceipt { trade: *trade })?;
                if !receipt.verify(&receipt_digest(&rules.chain_id, trade, *delivered_wh), key) {
                    return Err(TxError::BadReceipt { trade: *trade });
                }
                // Delivered ≤ sold (checked above), so the share fits.
                let pay = t
                    .payment
                    .prorate(delivered_wh.get(), t.energy_wh.get())
                    .unwrap_or(MicroCredits::ZERO);
                let full = *delivered_wh == t.energy_wh;
                // E counts energy delivered between homes, not energy contracted: the seller
                // and the payers (in proportion to what each paid) are credited now.
                let weights: Vec<u64> = t.payers.iter().map(|(_, v)| v.get()).collect();
                let shares = split_largest_remainder(delivered_wh.get(), &weights);
                let buyers: Vec<(MemberKey, u64)> =
                    t.payers.iter().map(|(k, _)| *k).zip(shares).collect();
                self.escrow_pay(seller, pay)?;
                self.pending_traded.push((seller, delivered_wh.get()));
                self.pending_traded.extend(buyers);
                self.market.trades.update(trade, |t| {
                    t.delivered_wh = Some(*delivered_wh);
                    t.paid_out = pay;
                });
                let totals = self.market.totals_of(seller);
                totals.delivered_wh = totals.delivered_wh.saturating_add(delivered_wh.get());
                totals.paid_out = totals.paid_out.saturating_add(pay.get());
                if full {
                    let event = self.settle(*trade)?;
                    self.pending_events.push(event);
                }
                Ok(())
            }
            TxPayload::AuctionJoin {
                round,
                energy_wh,
                attestation,
            } => {
                expect_phase(rules, height, *round, true)?;
                let round_now = self.market.rounds.get(round);
                if round_now.is_some_and(|r| r.sellers.iter().any(|s| s.seller == me)) {
                    return Err(TxError::AlreadyInRound {
                        member: me,
                        round: *round,
                    });
                }
                if round_now.is_some_and(|r| r.commits.iter().any(|(k, _)| *k == me)) {
                    return Err(TxError::BothSidesOfRound {
                        member: me,
                        round: *round,
                    });
                }
                self.check_sellable(rules, &me, *energy_wh, attestation)?;
                if let Some(a) = attestation {
                    self.record_attestation(me, a);
                }
                let allocation = self.allocate(me, *energy_wh);
                self.market
                    .rounds
                    .entry(*round)
                    .or_default()
                    .sellers
                    .push(RoundSeller {
                        seller: me,
                        energy_wh: *energy_wh,
                        allocation,
                    });
                Ok(())
            }
            TxPayload::BidCommit { round, commitment } => {
                expect_phase(rules, height, *round, true)?;
                let round_now = self.market.rounds.get(round);
                if round_now.is_some_and(|r| r.commits.iter().any(|(k, _)| *k == me)) {
                    return Err(TxError::AlreadyInRound {
                        member: me,
                        round: *round,
                    });
                }
                if round_now.is_some_and(|r| r.sellers.iter().any(|s| s.seller == me)) {
                    return Err(TxError::BothSidesOfRound {
                        member: me,
                        round: *round,
                    });
                }
                self.market
                    .rounds
                    .entry(*round)
                    .or_default()
                    .commits
                    .push((me, *commitment));
                Ok(())
            }
            TxPayload::BidReveal {
                round,
                energy_wh,
                price,
                salt,
            } => {
                expect_phase(rules, height, *round, false)?;
                let no_commitment = TxError::NoCommitment {
                    member: me,
                    round: *round,
                };
                let r = self.market.rounds.get(round).ok_or(no_commitment.clone())?;
                if r.reveals.contains_key(&me) {
                    return Err(no_commitment);
                }
                let (seq, committed) = r
                    .commits
                    .iter()
                    .enumerate()
                    .find(|(_, (k, _))| *k == me)
                    .map(|(i, (_, h))| (i, *h))
                    .ok_or(no_commitment)?;
                let opened = bid_commitment(&rules.chain_id, *round, &me, *energy_wh, *price, salt);
                if opened != committed {
                    return Err(TxError::CommitmentMismatch { member: me });
                }
                // Only a bid that can win needs money behind it.
                let valid = !energy_wh.is_zero()
                    && *price <= rules.grid_tariff
                    && *price >= rules.floor_price;
                let escrowed = if valid {
                    payment(*energy_wh, *price).map_err(|_| overflow(me))?
                } else {
                    MicroCredits::ZERO
                };
                if escrowed > available {
                    return Err(TxError::BalanceInsufficient {
                        account: me,
                        needed: escrowed.checked_add(rules.tx_fee).ok_or(overflow(me))?,
                        available: available.checked_add(rules.tx_fee).ok_or(overflow(me))?,
                    });
                }
                self.escrow_from(me, escrowed)?;
                if let Some(r) = self.market.rounds.get_mut(round) {
                    r.reveals.insert(
                        me,
                        RevealedBid {
                            energy_wh: *energy_wh,
                            price: *price,
                            seq: u64::try_from(seq).unwrap_or(u64::MAX),
                            escrowed,
                        },
                    );
                }
                Ok(())
            }
        }
    }
}
