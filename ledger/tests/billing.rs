//! Billing properties over random days: credits are conserved exactly, and a home that follows
//! its schedule pays the clearing price and nothing else.

use gridlet_ledger::crypto::{deterministic_key, Hash32, Signature};
use gridlet_ledger::market::billing::{reading_digest, settle, DayPrices, HomeBill, Reading};
use gridlet_ledger::MemberKey;
use proptest::prelude::*;

const CHAIN: Hash32 = Hash32([8; 32]);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn credits_are_conserved_and_following_the_schedule_costs_the_clearing_price(
        homes in 1usize..6,
        plan in proptest::collection::vec(-5_000i64..5_000, 8),
        deviation in proptest::collection::vec(-3_000i64..3_000, 8),
        clearing in proptest::collection::vec(0i64..400_000, 8),
        tariff in proptest::collection::vec(200_000i64..500_000, 8),
        feed_in in proptest::collection::vec(0i64..100_000, 8),
    ) {
        let keys: Vec<_> = (0..homes as u64).map(|i| (MemberKey::from_secret(&deterministic_key(3, i)), deterministic_key(4, i))).collect();
        let pubs: Vec<_> = keys.iter().map(|(_, m)| m.public_key()).collect();
        // Home 0 follows the plan; the others deviate.
        let actual: Vec<Vec<i64>> = (0..homes).map(|h| plan.iter().zip(&deviation).map(|(p, d)| if h == 0 { *p } else { p + d * h as i64 }).collect()).collect();
        let readings: Vec<Vec<Reading>> = keys.iter().zip(&actual).map(|((home, meter), wh)| {
            wh.iter().enumerate().map(|(i, w)| Reading {
                interval: i as u32,
                net_wh: *w,
                signature: Some(Signature::sign(&reading_digest(&CHAIN, home, 1, i as u32, *w), meter)),
            }).collect()
        }).collect();
        let bills: Vec<HomeBill> = (0..homes).map(|h| HomeBill {
            home: keys[h].0,
            meter_key: &pubs[h],
            scheduled_wh: &plan,
            readings: &readings[h],
        }).collect();
        let s = settle(&CHAIN, 1, &DayPrices { clearing: &clearing, tariff: &tariff, feed_in: &feed_in }, &bills).unwrap();
        let sum: i128 = s.homes.iter().map(|h| h.1).sum();
        prop_assert_eq!(s.community, sum);
        let at_clearing: i128 = plan.iter().zip(&clearing).map(|(p, c)| i128::from(*p) * i128::from(*c) / 1000).sum();
        prop_assert_eq!(s.homes[0].1, at_clearing);
    }
}
