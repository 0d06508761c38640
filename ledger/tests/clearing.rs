//! Auction clearing against a plain model: a full sort and a greedy fill, written the obvious way.

use gridlet_ledger::market::clearing::{payment, Bid, RejectReason, SellerOffer};
use gridlet_ledger::market::{clear, ClearingInput, Pricing};
use gridlet_ledger::{Price, WattHours};
use proptest::prelude::*;

fn model(input: &ClearingInput) -> (Vec<(String, u64, u64)>, u64, u64) {
    let supply: u64 = input.sellers.iter().map(|s| s.energy_wh).sum();
    let mut valid: Vec<(usize, &Bid)> = input
        .bids
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.energy_wh > 0 && b.price <= input.grid_tariff && b.price >= input.floor_price
        })
        .collect();
    valid.sort_by(|(ia, a), (ib, b)| {
        b.price
            .cmp(&a.price)
            .then(a.seq.cmp(&b.seq))
            .then(ia.cmp(ib))
    });
    let mut left = supply;
    let mut fills = Vec::new();
    for (_, b) in &valid {
        if left == 0 {
            break;
        }
        let take = (b.energy_wh as u64).min(left);
        left -= take;
        fills.push((b.id.clone(), take, b.price as u64));
    }
    let demand: u64 = valid.iter().map(|(_, b)| b.energy_wh as u64).sum();
    (fills, supply - left, demand)
}

fn arb_input() -> impl Strategy<Value = ClearingInput> {
    (
        prop::collection::vec(0u64..5_000, 0..6),
        prop::collection::vec((-100i64..3_000, -10_000i64..400_000, 0u64..20), 0..40),
        any::<bool>(),
    )
        .prop_map(|(sellers, bids, uniform)| ClearingInput {
            grid_tariff: 300_000,
            floor_price: 50_000,
            pricing: if uniform {
                Pricing::Uniform
            } else {
                Pricing::PayAsBid
            },
            sellers: sellers
                .into_iter()
                .enumerate()
                .map(|(i, e)| SellerOffer {
                    id: format!("s{i}"),
                    energy_wh: e,
                })
                .collect(),
            bids: bids
                .into_iter()
                .enumerate()
                .map(|(i, (e, p, seq))| Bid {
                    id: format!("b{i}"),
                    energy_wh: e,
                    price: p,
                    seq,
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn clearing_matches_the_model_and_conserves_totals(input in arb_input()) {
        let out = clear(&input).unwrap();
        let (fills, sold, demand) = model(&input);
        let got: Vec<(String, u64)> = out.fills.iter().map(|f| (f.bid.clone(), f.energy_wh)).collect();
        let want: Vec<(String, u64)> = fills.iter().map(|(b, e, _)| (b.clone(), *e)).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(out.sold_wh, sold);
        prop_assert_eq!(out.unmet_wh, demand - sold);
        let supply: u64 = input.sellers.iter().map(|s| s.energy_wh).sum();
        prop_assert_eq!(out.sold_wh + out.unsold_wh, supply);
        // Splits conserve totals exactly.
        prop_assert_eq!(out.sellers.iter().map(|s| s.sold_wh).sum::<u64>(), out.sold_wh);
        prop_assert_eq!(out.sellers.iter().map(|s| s.revenue).sum::<u64>(), out.revenue);
        prop_assert_eq!(out.fills.iter().map(|f| f.paid).sum::<u64>(), out.revenue);
        // Prices and payments.
        let lowest = fills.iter().map(|f| f.2).min();
        for (f, (_, e, bid_price)) in out.fills.iter().zip(&fills) {
            let price = match input.pricing { Pricing::PayAsBid => *bid_price, Pricing::Uniform => lowest.unwrap() };
            prop_assert_eq!(f.price, price);
            prop_assert_eq!(f.paid, payment(WattHours::new(*e), Price::new(price)).unwrap().get());
        }
        // Every bid is either valid or rejected with the first reason that applies.
        for b in &input.bids {
            let reason = out.rejected.iter().find(|r| r.bid == b.id).map(|r| r.reason);
            let want = if b.energy_wh <= 0 { Some(RejectReason::Empty) }
                else if b.price > input.grid_tariff { Some(RejectReason::AboveGridTariff) }
                else if b.price < input.floor_price { Some(RejectReason::BelowFloor) }
                else { None };
            prop_assert_eq!(reason, want);
        }
    }
}
