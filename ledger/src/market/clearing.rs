//! Clearing one sealed-bid auction round: sellers pooled in a coalition, bids filled by price.
//!
//! Rules (integers throughout):
//! - supply = Σ seller `energy_wh`;
//! - a bid is rejected as `empty` if `energy_wh` ≤ 0, else `above_grid_tariff` if `price` >
//!   `grid_tariff`, else `below_floor` if `price` < `floor_price`;
//! - valid bids are taken by price descending, ties by `seq` ascending, and filled greedily
//!   until supply runs out (the last fill may be partial);
//! - `pay_as_bid`: each fill at its bid's price; `uniform`: every fill at the lowest filled price;
//! - `paid = energy_wh × price / 1000`, rounded down (price in micro-credits per kWh);
//! - `sold_wh` and `revenue` are split among sellers in proportion to their `energy_wh` by the
//!   largest-remainder method (ties to the earlier seller), so the splits sum exactly;
//! - `unsold_wh` = supply − sold; `unmet_wh` = Σ valid-bid energy − sold.

use crate::units::{MicroCredits, Price, WattHours};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// How fills are priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pricing {
    /// Each winner pays its own bid (the seed paper's rule).
    #[default]
    PayAsBid,
    /// Every fill at the lowest filled bid's price.
    Uniform,
}

/// A seller in the coalition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerOffer {
    /// Seller id.
    pub id: String,
    /// Energy offered, Wh.
    pub energy_wh: u64,
}

/// A revealed bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bid {
    /// Bid id.
    pub id: String,
    /// Energy wanted, Wh (≤ 0 is rejected as `empty`).
    pub energy_wh: i64,
    /// Price, micro-credits per kWh.
    pub price: i64,
    /// Order of commitment (ties go to the earlier).
    pub seq: u64,
}

/// A clearing problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearingInput {
    /// No bid may pay more, micro-credits per kWh.
    pub grid_tariff: i64,
    /// No bid may pay less.
    pub floor_price: i64,
    /// Pricing rule.
    #[serde(default)]
    pub pricing: Pricing,
    /// The coalition.
    pub sellers: Vec<SellerOffer>,
    /// The revealed bids.
    pub bids: Vec<Bid>,
}

/// Why a bid was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// `energy_wh` ≤ 0.
    Empty,
    /// Price above the grid tariff.
    AboveGridTariff,
    /// Price below the floor.
    BelowFloor,
}

/// A filled (part of a) bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// Bid id.
    pub bid: String,
    /// Energy filled, Wh.
    pub energy_wh: u64,
    /// Price paid, micro-credits per kWh.
    pub price: u64,
    /// Micro-credits paid.
    pub paid: u64,
}

/// A rejected bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Bid id.
    pub bid: String,
    /// Why.
    pub reason: RejectReason,
}

/// A seller's share of the round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerShare {
    /// Seller id.
    pub id: String,
    /// Energy sold, Wh.
    pub sold_wh: u64,
    /// Micro-credits earned.
    pub revenue: u64,
}

/// The result of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearingOutput {
    /// Fills, in fill order.
    pub fills: Vec<Fill>,
    /// Rejected bids, in input order.
    pub rejected: Vec<Rejected>,
    /// Sellers, in input order.
    pub sellers: Vec<SellerShare>,
    /// Energy sold.
    pub sold_wh: u64,
    /// Supply not sold.
    pub unsold_wh: u64,
    /// Valid demand not met (it falls back to the main grid).
    pub unmet_wh: u64,
    /// Total paid.
    pub revenue: u64,
}

/// Why a round cannot be cleared at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClearingError {
    /// A total exceeds the integer range.
    #[error("{what} overflows")]
    Overflow {
        /// Which total.
        what: &'static str,
    },
    /// The floor is above the tariff.
    #[error("floor price {floor} is above the grid tariff {tariff}")]
    FloorAboveTariff {
        /// Floor.
        floor: i64,
        /// Tariff.
        tariff: i64,
    },
}

/// `energy × price / 1000`, rounded down.
pub fn payment(energy: WattHours, price: Price) -> Result<MicroCredits, ClearingError> {
    price
        .cost_of(energy)
        .ok_or(ClearingError::Overflow { what: "payment" })
}

/// [`payment`] on the clearing's raw integers.
fn payment_raw(energy_wh: u64, price: u64) -> Result<u64, ClearingError> {
    payment(WattHours::new(energy_wh), Price::new(price)).map(MicroCredits::get)
}

/// Splits `total` in proportion to `weights` by the largest-remainder method; ties go to the
/// earlier entry. The parts sum to `total` exactly (all zero if the weights sum to zero).
pub fn split_largest_remainder(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, w) in weights.iter().enumerate() {
        let exact = u128::from(total).saturating_mul(u128::from(*w));
        let q = exact.checked_div(sum).unwrap_or(0);
        let r = exact.checked_rem(sum).unwrap_or(0);
        parts.push(u64::try_from(q).unwrap_or(u64::MAX));
        remainders.push((r, i));
        given = given.saturating_add(q);
    }
    let left = u128::from(total).saturating_sub(given);
    // Largest remainder first; among equal remainders the earlier entry.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders
        .iter()
        .take(usize::try_from(left).unwrap_or(usize::MAX))
    {
        if let Some(p) = parts.get_mut(*i) {
            *p = p.saturating_add(1);
        }
    }
    parts
}

/// Clears one round.
pub fn clear(input: &ClearingInput) -> Result<ClearingOutput, ClearingError> {
    if input.floor_price > input.grid_tariff {
        return Err(ClearingError::FloorAboveTariff {
            floor: input.floor_price,
            tariff: input.grid_tariff,
        });
    }
    let supply = input
        .sellers
        .iter()
        .try_fold(0u64, |acc, s| acc.checked_add(s.energy_wh))
        .ok_or(ClearingError::Overflow { what: "supply" })?;
    let mut rejected = Vec::new();
    // Valid bids as a max-heap on (price, earlier seq, earlier index): only the bids that get
    // filled are ever taken out in order, so clearing costs O(n + fills · log n), not a sort.
    let mut valid: Vec<(u64, Reverse<u64>, Reverse<usize>)> = Vec::with_capacity(input.bids.len());
    let mut demand: u64 = 0;
    for (i, b) in input.bids.iter().enumerate() {
        let reason = if b.energy_wh <= 0 {
            Some(RejectReason::Empty)
        } else if b.price > input.grid_tariff {
            Some(RejectReason::AboveGridTariff)
        } else if b.price < input.floor_price {
            Some(RejectReason::BelowFloor)
        } else {
            None
        };
        match reason {
            Some(reason) => rejected.push(Rejected {
                bid: b.id.clone(),
                reason,
            }),
            None => {
                let energy = u64::try_from(b.energy_wh).unwrap_or(0);
                // A negative price passing the floor means a negative floor: clamp at zero,
                // credits never flow from seller to buyer here.
                let price = u64::try_from(b.price).unwrap_or(0);
                demand = demand
                    .checked_add(energy)
                    .ok_or(ClearingError::Overflow { what: "demand" })?;
                valid.push((price, Reverse(b.seq), Reverse(i)));
            }
        }
    }
    let mut queue = BinaryHeap::from(valid);

    let mut left = supply;
    let mut filled: Vec<(usize, u64, u64)> = Vec::new(); // (bid index, energy, bid price)
    while left > 0 {
        let Some((price, _, Reverse(i))) = queue.pop() else {
            break;
        };
        let want = input
            .bids
            .get(i)
            .and_then(|b| u64::try_from(b.energy_wh).ok())
            .unwrap_or(0);
        let take = want.min(left);
        left = left.saturating_sub(take);
        filled.push((i, take, price));
    }
    let uniform_price = filled.iter().map(|f| f.2).min().unwrap_or(0);
    let mut fills = Vec::with_capacity(filled.len());
    let mut revenue: u64 = 0;
    for (i, energy, bid_price) in filled {
        let price = match input.pricing {
            Pricing::PayAsBid => bid_price,
            Pricing::Uniform => uniform_price,
        };
        let paid = payment_raw(energy, price)?;
        revenue = revenue
            .checked_add(paid)
            .ok_or(ClearingError::Overflow { what: "revenue" })?;
        fills.push(Fill {
            bid: input.bids.get(i).map(|b| b.id.clone()).unwrap_or_default(),
            energy_wh: energy,
            price,
            paid,
        });
    }
    let sold = supply.saturating_sub(left);
    let weights: Vec<u64> = input.sellers.iter().map(|s| s.energy_wh).collect();
    let sold_split = split_largest_remainder(sold, &weights);
    let revenue_split = split_largest_remainder(revenue, &weights);
    let sellers = input
        .sellers
        .iter()
        .zip(sold_split.into_iter().zip(revenue_split))
        .map(|(s, (sold_wh, rev))| SellerShare {
            id: s.id.clone(),
            sold_wh,
            revenue: rev,
        })
        .collect();
    Ok(ClearingOutput {
        fills,
        rejected,
        sellers,
        sold_wh: sold,
        unsold_wh: left,
        unmet_wh: demand.saturating_sub(sold),
        revenue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(id: &str, energy_wh: i64, price: i64, seq: u64) -> Bid {
        Bid {
            id: id.into(),
            energy_wh,
            price,
            seq,
        }
    }

    fn seller(id: &str, energy_wh: u64) -> SellerOffer {
        SellerOffer {
            id: id.into(),
            energy_wh,
        }
    }

    fn input(pricing: Pricing, sellers: Vec<SellerOffer>, bids: Vec<Bid>) -> ClearingInput {
        ClearingInput {
            grid_tariff: 300_000,
            floor_price: 50_000,
            pricing,
            sellers,
            bids,
        }
    }

    /// Worked by hand: supply 1 000 + 2 000 = 3 000 Wh.
    /// Valid bids by price: b2 250 000 (1 500 Wh), then b1 and b4 at 200 000 with seq 1 < 4,
    /// so b1 (1 000 Wh) then b4 (partial 500 of 2 000 Wh). b3 is above the tariff, b5 below
    /// the floor, b6 empty.
    /// pay as bid: 1 500 × 250 = 375 000; 1 000 × 200 = 200 000; 500 × 200 = 100 000.
    /// revenue 675 000 split 1:2 → 225 000 / 450 000; sold 3 000 → 1 000 / 2 000.
    /// unmet = (1 500 + 1 000 + 2 000) − 3 000 = 1 500.
    #[test]
    fn hand_worked_pay_as_bid_with_tie_partial_fill_and_every_rejection() {
        let out = clear(&input(
            Pricing::PayAsBid,
            vec![seller("s1", 1_000), seller("s2", 2_000)],
            vec![
                bid("b1", 1_000, 200_000, 1),
                bid("b2", 1_500, 250_000, 2),
                bid("b3", 800, 300_001, 3),
                bid("b4", 2_000, 200_000, 4),
                bid("b5", 700, 49_999, 5),
                bid("b6", 0, 100_000, 6),
            ],
        ))
        .unwrap();
        let fills: Vec<(&str, u64, u64, u64)> = out
            .fills
            .iter()
            .map(|f| (f.bid.as_str(), f.energy_wh, f.price, f.paid))
            .collect();
        assert_eq!(
            fills,
            vec![
                ("b2", 1_500, 250_000, 375_000),
                ("b1", 1_000, 200_000, 200_000),
                ("b4", 500, 200_000, 100_000)
            ]
        );
        let rejected: Vec<(&str, RejectReason)> = out
            .rejected
            .iter()
            .map(|r| (r.bid.as_str(), r.reason))
            .collect();
        assert_eq!(
            rejected,
            vec![
                ("b3", RejectReason::AboveGridTariff),
                ("b5", RejectReason::BelowFloor),
                ("b6", RejectReason::Empty)
            ]
        );
        assert_eq!(out.revenue, 675_000);
        assert_eq!(
            (out.sold_wh, out.unsold_wh, out.unmet_wh),
            (3_000, 0, 1_500)
        );
        assert_eq!(
            out.sellers[0],
            SellerShare {
                id: "s1".into(),
                sold_wh: 1_000,
                revenue: 225_000
            }
        );
        assert_eq!(
            out.sellers[1],
            SellerShare {
                id: "s2".into(),
                sold_wh: 2_000,
                revenue: 450_000
            }
        );
    }

    /// Uniform: the same fills all at 200 000 → 1 500×200 + 1 000×200 + 500×200 = 600 000.
    #[test]
    fn hand_worked_uniform() {
        let out = clear(&input(
            Pricing::Uniform,
            vec![seller("s1", 1_000), seller("s2", 2_000)],
            vec![
                bid("b1", 1_000, 200_000, 1),
                bid("b2", 1_500, 250_000, 2),
                bid("b4", 2_000, 200_000, 4),
            ],
        ))
        .unwrap();
        assert!(out.fills.iter().all(|f| f.price == 200_000));
        assert_eq!(out.revenue, 600_000);
        assert_eq!(out.sellers[0].revenue + out.sellers[1].revenue, 600_000);
        assert_eq!(out.sellers[0].revenue, 200_000);
    }

    /// Largest remainder with three equal sellers: 100 Wh → 34 / 33 / 33 (tie to the earliest);
    /// payment rounding down: 333 Wh × 123 457 / 1000 = 41 111.181 → 41 111.
    #[test]
    fn remainders_go_to_the_earlier_seller_and_payments_round_down() {
        let out = clear(&input(
            Pricing::PayAsBid,
            vec![seller("a", 10), seller("b", 10), seller("c", 10)],
            vec![bid("x", 100, 123_457, 1)],
        ))
        .unwrap();
        assert_eq!(out.sold_wh, 30);
        assert_eq!(
            out.sellers.iter().map(|s| s.sold_wh).collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        assert_eq!(out.revenue, 3_703); // 30 × 123 457 / 1000 = 3 703.71
        assert_eq!(
            out.sellers.iter().map(|s| s.revenue).collect::<Vec<_>>(),
            vec![1_235, 1_234, 1_234]
        );
        assert_eq!(split_largest_remainder(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(payment_raw(333, 123_457).unwrap(), 41_111);
    }

    #[test]
    fn no_supply_and_no_bids() {
        let out = clear(&input(
            Pricing::PayAsBid,
            vec![],
            vec![bid("x", 100, 100_000, 1)],
        ))
        .unwrap();
        assert!(out.fills.is_empty());
        assert_eq!(
            (out.sold_wh, out.unsold_wh, out.unmet_wh, out.revenue),
            (0, 0, 100, 0)
        );
        let out = clear(&input(Pricing::Uniform, vec![seller("s", 500)], vec![])).unwrap();
        assert!(out.fills.is_empty());
        assert_eq!((out.sold_wh, out.unsold_wh, out.unmet_wh), (0, 500, 0));
        assert_eq!(out.sellers[0].sold_wh, 0);
    }
}
