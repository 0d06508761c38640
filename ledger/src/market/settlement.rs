//! The market's end-of-block steps: settling delivered trades, refunding what was not
//! delivered, and clearing an auction round at its last block. Like every rule in
//! [`super::contracts`], each step validates before it changes anything.

use super::auction_trade_id;
use super::book::{
    Allocation, AuctionRound, ContractStatus, MarketEvent, RevealedBid, Trade, TradeSource,
};
use super::clearing::{clear, split_largest_remainder, Bid, ClearingInput, SellerOffer};
use crate::crypto::{Hash32, MemberKey};
use crate::error::TxError;
use crate::state::{LedgerState, Rules};
use crate::units::{MicroCredits, WattHours};

pub(super) use super::contracts::round_phase;

impl LedgerState {
    /// Pays out what is left in a trade's escrow: the rest after the seller's pay goes back to
    /// the payers (largest remainder), and undelivered energy back to the seller.
    pub(super) fn settle(&mut self, id: Hash32) -> Result<MarketEvent, TxError> {
        let Some(t) = self.market.trades.get(&id).cloned() else {
            return Err(TxError::UnknownTrade { trade: id });
        };
        let refund = t.payment.saturating_sub(t.paid_out);
        let weights: Vec<u64> = t.payers.iter().map(|(_, v)| v.get()).collect();
        for ((payer, _), part) in t
            .payers
            .iter()
            .zip(split_largest_remainder(refund.get(), &weights))
        {
            self.escrow_pay(*payer, MicroCredits::new(part))?;
        }
        let delivered = t.delivered_wh.unwrap_or(WattHours::ZERO);
        self.give_back(
            t.seller,
            &t.allocation,
            t.energy_wh.saturating_sub(delivered),
        );
        self.market.trades.update(&id, |tr| tr.settled = true);
        Ok(MarketEvent::Settled {
            trade: id,
            delivered_wh: delivered,
            paid_to_seller: t.paid_out,
            refunded: refund,
        })
    }

    /// Clears an auction round at its last block: fills become trades, unused escrow and
    /// unsold energy go back. If clearing overflows (it cannot with u64 energies summing in
    /// range), the round is void and everything goes back.
    fn clear_round(
        &mut self,
        rules: &Rules,
        round: u64,
        height: u64,
    ) -> Result<Vec<MarketEvent>, TxError> {
        let Some(r) = self.market.rounds.remove(&round) else {
            return Ok(Vec::new());
        };
        let AuctionRound {
            sellers, reveals, ..
        } = r;
        let mut bids: Vec<(MemberKey, RevealedBid)> = reveals.into_iter().collect();
        bids.sort_by_key(|(_, b)| b.seq);
        let input = ClearingInput {
            grid_tariff: i64::try_from(rules.grid_tariff.get()).unwrap_or(i64::MAX),
            floor_price: i64::try_from(rules.floor_price.get()).unwrap_or(i64::MAX),
            pricing: rules.market.pricing,
            sellers: sellers
                .iter()
                .map(|s| SellerOffer {
                    id: s.seller.to_hex(),
                    energy_wh: s.energy_wh.get(),
                })
                .collect(),
            bids: bids
                .iter()
                .map(|(k, b)| Bid {
                    id: k.to_hex(),
                    energy_wh: i64::try_from(b.energy_wh.get()).unwrap_or(i64::MAX),
                    price: i64::try_from(b.price.get()).unwrap_or(i64::MAX),
                    seq: b.seq,
                })
                .collect(),
        };
        let out = clear(&input).ok();
        let mut payers: Vec<(MemberKey, MicroCredits)> = Vec::new();
        for (buyer, bid) in &bids {
            let fill = out
                .as_ref()
                .and_then(|o| o.fills.iter().find(|f| f.bid == buyer.to_hex()));
            let paid = fill.map_or(MicroCredits::ZERO, |f| {
                MicroCredits::new(f.paid).min(bid.escrowed)
            });
            self.escrow_pay(*buyer, bid.escrowed.saturating_sub(paid))?;
            if fill.is_some() {
                payers.push((*buyer, paid));
            }
        }
        let release = height;
        let shares = out.as_ref().map(|o| o.sellers.clone()).unwrap_or_default();
        for (i, s) in sellers.iter().enumerate() {
            let (sold, revenue) = shares.get(i).map_or((WattHours::ZERO, 0), |x| {
                (WattHours::new(x.sold_wh), x.revenue)
            });
            // Keep the first `sold` Wh of the allocation, give the rest back.
            let mut kept = Vec::new();
            let mut left = sold;
            for a in &s.allocation {
                let take = a.wh.min(left);
                if !take.is_zero() {
                    kept.push(Allocation {
                        interval: a.interval,
                        wh: take,
                    });
                }
                left = left.saturating_sub(take);
            }
            self.give_back(s.seller, &s.allocation, s.energy_wh.saturating_sub(sold));
            if !sold.is_zero() {
                let totals = self.market.totals_of(s.seller);
                totals.sold_wh = totals.sold_wh.saturating_add(sold.get());
                self.market.trades.insert(
                    auction_trade_id(&rules.chain_id, round, &s.seller),
                    Trade {
                        source: TradeSource::Auction { round },
                        seller: s.seller,
                        energy_wh: sold,
                        payment: MicroCredits::new(revenue),
                        payers: payers.clone(),
                        traded_height: height,
                        release_height: release,
                        deadline_height: rules.delivery_deadline(release, sold),
                        allocation: kept,
                        released: false,
                        delivered_wh: None,
                        paid_out: MicroCredits::ZERO,
                        settled: false,
                    },
                );
            }
        }
        Ok(vec![MarketEvent::RoundCleared {
            round,
            sold_wh: WattHours::new(out.as_ref().map_or(0, |o| o.sold_wh)),
            revenue: MicroCredits::new(out.as_ref().map_or(0, |o| o.revenue)),
        }])
    }

    /// The market's end-of-block steps at `height`: clear a finished auction round, release
    /// trades that became final, settle trades whose deadline ends, expire contracts.
    pub(crate) fn end_block_market(&mut self, rules: &Rules, height: u64) -> Vec<MarketEvent> {
        let mut events = Vec::new();
        if let Some((round, _, true)) = round_phase(rules, height) {
            if let Ok(mut e) = self.clear_round(rules, round, height) {
                events.append(&mut e);
            }
        }
        let due: Vec<Hash32> = self
            .market
            .trades
            .iter()
            .filter(|(_, t)| !t.released && t.release_height <= height)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(t) = self.market.trades.get(&id) else {
                continue;
            };
            events.push(self.market.release_event(id, t));
            self.market.trades.update(&id, |t| t.released = true);
        }
        let to_settle: Vec<Hash32> = self
            .market
            .trades
            .iter()
            .filter(|(_, t)| t.released && !t.settled && t.deadline_height <= height)
            .map(|(id, _)| *id)
            .collect();
        for id in to_settle {
            if let Ok(e) = self.settle(id) {
                events.push(e);
            }
        }
        let expired: Vec<(Hash32, MemberKey, Vec<Allocation>, WattHours)> = self
            .market
            .contracts
            .iter()
            .filter(|(_, c)| c.status == ContractStatus::Open && c.expiry_height <= height)
            .map(|(id, c)| (*id, c.seller, c.allocation.clone(), c.energy_wh))
            .collect();
        for (id, seller, allocation, wh) in expired {
            self.give_back(seller, &allocation, wh);
            self.market
                .contracts
                .update(&id, |c| c.status = ContractStatus::Expired);
            events.push(MarketEvent::ContractExpired { contract: id });
        }
        if let Some(e) = self.retire(rules, height) {
            events.push(e);
        }
        events
    }
}
