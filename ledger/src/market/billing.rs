//! Billing of a day-ahead schedule (contract S2, docs/scheduling.md): each home pays the
//! clearing price for the energy it was scheduled to exchange, and the grid tariff (more
//! import, less export than scheduled) or earns the feed-in price (less import, more export)
//! on the difference its signed meter readings show. Every credit a home pays or earns goes to
//! or comes from the community account, so credits are conserved exactly.
//!
//! Integer arithmetic only: energy in Wh (signed, positive = import), prices in micro-credits
//! per kWh, amounts in micro-credits; every product is divided by 1000 rounding toward zero,
//! term by term, and the community account takes the exact negation of the homes' sum.

use crate::crypto::{Hash32, MemberKey, Signature};

/// The digest a home's meter signs for one interval's net energy.
pub fn reading_digest(
    chain_id: &Hash32,
    home: &MemberKey,
    day: u64,
    interval: u32,
    net_wh: i64,
) -> Hash32 {
    Hash32::tagged(
        b"gridlet/reading/v1",
        &[
            &chain_id.0,
            &home.0,
            &day.to_be_bytes(),
            &interval.to_be_bytes(),
            &net_wh.to_be_bytes(),
        ],
    )
}

/// One signed interval reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reading {
    /// Interval of the day.
    pub interval: u32,
    /// Net energy at the home's meter, Wh (positive = import).
    pub net_wh: i64,
    /// The meter's signature over [`reading_digest`], if any.
    pub signature: Option<Signature>,
}

/// One home's part of the bill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeBill<'a> {
    /// The home.
    pub home: MemberKey,
    /// The key its meter signs with (the home's device key from the genesis).
    pub meter_key: &'a secp256k1::PublicKey,
    /// Scheduled net energy per interval, Wh.
    pub scheduled_wh: &'a [i64],
    /// Signed readings, one per interval.
    pub readings: &'a [Reading],
}

/// Prices of the day, per interval, micro-credits per kWh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPrices<'a> {
    /// The schedule's clearing price.
    pub clearing: &'a [i64],
    /// Grid import tariff.
    pub tariff: &'a [i64],
    /// Feed-in price.
    pub feed_in: &'a [i64],
}

/// Why a bill cannot be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    /// A reading carries no signature.
    #[error("home {home}: reading of interval {interval} is unsigned")]
    Unsigned {
        /// Home.
        home: MemberKey,
        /// Interval.
        interval: u32,
    },
    /// A reading's signature does not verify with the home's meter key.
    #[error("home {home}: reading of interval {interval} has a forged signature")]
    Forged {
        /// Home.
        home: MemberKey,
        /// Interval.
        interval: u32,
    },
    /// Readings missing, duplicated or out of order, or lengths that do not match.
    #[error("home {home}: {reason}")]
    Malformed {
        /// Home.
        home: MemberKey,
        /// What is wrong.
        reason: String,
    },
    /// An amount does not fit.
    #[error("amount overflow")]
    Overflow,
}

/// The settlement: what each home pays (negative: earns), and the community account's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Per home, micro-credits paid to the community account (negative: received from it).
    pub homes: Vec<(MemberKey, i128)>,
    /// Change of the community account: what the homes paid in total, so that the homes'
    /// balance changes (the negations of what they paid) and this sum to zero.
    pub community: i128,
}

fn mul_div(wh: i64, price: i64) -> Result<i128, BillingError> {
    i128::from(wh)
        .checked_mul(i128::from(price))
        .and_then(|p| p.checked_div(1000))
        .ok_or(BillingError::Overflow)
}

/// Checks one home's readings: signed by its meter, one per interval, in order. Returns the
/// net energy per interval, Wh.
pub fn verify_readings(
    chain_id: &Hash32,
    day: u64,
    home: &MemberKey,
    meter_key: &secp256k1::PublicKey,
    readings: &[Reading],
    intervals: usize,
) -> Result<Vec<i64>, BillingError> {
    if readings.len() != intervals {
        return Err(BillingError::Malformed {
            home: *home,
            reason: format!("{} readings for {intervals} intervals", readings.len()),
        });
    }
    let mut out = Vec::with_capacity(intervals);
    for (expected, r) in readings.iter().enumerate() {
        if usize::try_from(r.interval).ok() != Some(expected) {
            return Err(BillingError::Malformed {
                home: *home,
                reason: format!(
                    "reading for interval {} where {expected} was due",
                    r.interval
                ),
            });
        }
        let Some(sig) = &r.signature else {
            return Err(BillingError::Unsigned {
                home: *home,
                interval: r.interval,
            });
        };
        let digest = reading_digest(chain_id, home, day, r.interval, r.net_wh);
        if !sig.verify(&digest, meter_key) {
            return Err(BillingError::Forged {
                home: *home,
                interval: r.interval,
            });
        }
        out.push(r.net_wh);
    }
    Ok(out)
}

/// What one home owes for the day (negative: earns), from verified readings.
pub fn amount_owed(
    home: &MemberKey,
    prices: &DayPrices<'_>,
    scheduled_wh: &[i64],
    metered_wh: &[i64],
) -> Result<i128, BillingError> {
    let intervals = prices.clearing.len();
    if scheduled_wh.len() != intervals
        || metered_wh.len() != intervals
        || prices.tariff.len() != intervals
        || prices.feed_in.len() != intervals
    {
        return Err(BillingError::Malformed {
            home: *home,
            reason: format!(
                "{} scheduled and {} metered values for {intervals} intervals",
                scheduled_wh.len(),
                metered_wh.len()
            ),
        });
    }
    let mut owed: i128 = 0;
    let rows = metered_wh
        .iter()
        .zip(scheduled_wh)
        .zip(prices.clearing)
        .zip(prices.tariff)
        .zip(prices.feed_in);
    for ((((metered, scheduled), clearing), tariff), feed_in) in rows {
        let deviation = metered
            .checked_sub(*scheduled)
            .ok_or(BillingError::Overflow)?;
        let deviation_price = if deviation >= 0 { *tariff } else { *feed_in };
        owed = owed
            .checked_add(mul_div(*scheduled, *clearing)?)
            .and_then(|o| o.checked_add(mul_div(deviation, deviation_price).ok()?))
            .ok_or(BillingError::Overflow)?;
    }
    Ok(owed)
}

/// Settles a day. Every reading must be signed by its home's meter and cover each interval
/// exactly once, in order.
pub fn settle(
    chain_id: &Hash32,
    day: u64,
    prices: &DayPrices<'_>,
    bills: &[HomeBill<'_>],
) -> Result<Settlement, BillingError> {
    let intervals = prices.clearing.len();
    let mut homes = Vec::with_capacity(bills.len());
    let mut total: i128 = 0;
    for b in bills {
        let metered = verify_readings(chain_id, day, &b.home, b.meter_key, b.readings, intervals)?;
        let owed = amount_owed(&b.home, prices, b.scheduled_wh, &metered)?;
        total = total.checked_add(owed).ok_or(BillingError::Overflow)?;
        homes.push((b.home, owed));
    }
    Ok(Settlement {
        homes,
        community: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::deterministic_key;

    struct Home {
        key: MemberKey,
        meter: secp256k1::SecretKey,
        meter_pub: secp256k1::PublicKey,
    }

    fn home(i: u64) -> Home {
        let meter = deterministic_key(77, i);
        Home {
            key: MemberKey::from_secret(&deterministic_key(1, i)),
            meter_pub: meter.public_key(),
            meter,
        }
    }

    const CHAIN: Hash32 = Hash32([4; 32]);

    fn readings(h: &Home, day: u64, wh: &[i64]) -> Vec<Reading> {
        wh.iter()
            .enumerate()
            .map(|(i, w)| Reading {
                interval: i as u32,
                net_wh: *w,
                signature: Some(Signature::sign(
                    &reading_digest(&CHAIN, &h.key, day, i as u32, *w),
                    &h.meter,
                )),
            })
            .collect()
    }

    const CLEARING: [i64; 3] = [200_000, 250_000, 150_000];
    const TARIFF: [i64; 3] = [300_000, 400_000, 220_000];
    const FEED_IN: [i64; 3] = [80_000, 80_000, 80_000];

    fn prices() -> DayPrices<'static> {
        DayPrices {
            clearing: &CLEARING,
            tariff: &TARIFF,
            feed_in: &FEED_IN,
        }
    }

    #[test]
    fn a_home_that_follows_its_schedule_pays_exactly_the_clearing_price() {
        let a = home(0);
        let plan = [1_000, -2_000, 500];
        let r = readings(&a, 9, &plan);
        let s = settle(
            &CHAIN,
            9,
            &prices(),
            &[HomeBill {
                home: a.key,
                meter_key: &a.meter_pub,
                scheduled_wh: &plan,
                readings: &r,
            }],
        )
        .unwrap();
        // 1 kWh × 0.2 − 2 kWh × 0.25 + 0.5 kWh × 0.15 credits.
        assert_eq!(s.homes[0].1, 200_000 - 500_000 + 75_000);
        assert_eq!(s.community, 200_000 - 500_000 + 75_000);
    }

    #[test]
    fn deviations_pay_the_tariff_or_earn_the_feed_in_and_credits_are_conserved() {
        let (a, b) = (home(0), home(1));
        let plan_a = [1_000, 0, 0];
        let plan_b = [0, -1_000, 300];
        // a imports 500 Wh more than scheduled in interval 0; b exports 250 Wh more in 1 and
        // imports 333 Wh less in 2.
        let ra = readings(&a, 9, &[1_500, 0, 0]);
        let rb = readings(&b, 9, &[0, -1_250, -33]);
        let s = settle(
            &CHAIN,
            9,
            &prices(),
            &[
                HomeBill {
                    home: a.key,
                    meter_key: &a.meter_pub,
                    scheduled_wh: &plan_a,
                    readings: &ra,
                },
                HomeBill {
                    home: b.key,
                    meter_key: &b.meter_pub,
                    scheduled_wh: &plan_b,
                    readings: &rb,
                },
            ],
        )
        .unwrap();
        assert_eq!(s.homes[0].1, 200_000 + 500 * 300);
        // −1 kWh × 0.25 + 0.3 kWh × 0.15 − 0.25 kWh × 0.08 − 0.333 kWh × 0.08 (toward zero).
        assert_eq!(
            s.homes[1].1,
            -250_000 + 45_000 - 20_000 - (333 * 80_000 / 1000)
        );
        let paid: i128 = s.homes.iter().map(|h| h.1).sum();
        assert_eq!(s.community - paid, 0);
    }

    #[test]
    fn unsigned_forged_or_replayed_readings_are_refused() {
        let (a, b) = (home(0), home(1));
        let plan = [0, 0, 0];
        let bill = |r: &[Reading]| {
            settle(
                &CHAIN,
                9,
                &prices(),
                &[HomeBill {
                    home: a.key,
                    meter_key: &a.meter_pub,
                    scheduled_wh: &plan,
                    readings: r,
                }],
            )
        };
        let mut r = readings(&a, 9, &[10, 20, 30]);
        r[1].signature = None;
        assert!(matches!(
            bill(&r),
            Err(BillingError::Unsigned { interval: 1, .. })
        ));
        // Signed by another home's meter.
        let r = readings(&b, 9, &[10, 20, 30]);
        assert!(matches!(
            bill(&r),
            Err(BillingError::Forged { interval: 0, .. })
        ));
        // A changed value under a valid signature.
        let mut r = readings(&a, 9, &[10, 20, 30]);
        r[2].net_wh = -3_000;
        assert!(matches!(
            bill(&r),
            Err(BillingError::Forged { interval: 2, .. })
        ));
        // Yesterday's reading.
        let r = readings(&a, 8, &[10, 20, 30]);
        assert!(matches!(bill(&r), Err(BillingError::Forged { .. })));
        // Missing and reordered intervals.
        let r = readings(&a, 9, &[10, 20]);
        assert!(matches!(bill(&r), Err(BillingError::Malformed { .. })));
        let mut r = readings(&a, 9, &[10, 20, 30]);
        r.swap(0, 1);
        assert!(matches!(bill(&r), Err(BillingError::Malformed { .. })));
    }
}
