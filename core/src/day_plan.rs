//! The day-ahead policy of one home, sans-IO: which day to plan and when, when a commitment or
//! the day's meter readings go (again) to the chain, and which battery set-point today's plan
//! asks for now. The day-ahead actor feeds it the chain's view and the clock and carries out
//! the [`DayEffect`]s; the ADMM session itself is [`crate::dispatch_session`].
//!
//! Design: two times come in with every [`DayPolicy::tick`]: community time (`now_ms`, which
//! picks days and intervals) and wall time (`wall_ms`, for resubmission delays, which must not
//! shrink when a simulation runs the community clock faster).

use std::collections::{BTreeMap, BTreeSet};

use gridlet_ledger::crypto::Signature;
use gridlet_ledger::market::billing::Reading;
use gridlet_ledger::TxPayload;

/// A day, community ms.
pub const DAY_MS: u64 = 86_400_000;

/// How long a submitted transaction may take to show up on chain before it is sent again (or,
/// for a commitment, before a member other than the first sends it), wall ms.
pub const RESUBMIT_AFTER_MS: u64 = 20_000;

/// The chain's view of one scheduled day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainDay {
    /// This home's readings are in.
    pub mine_in: bool,
    /// The day is billed.
    pub billed: bool,
}

/// This home's plan of a day: per interval, the battery power and the exchange with the grid
/// it was planned for, W.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DayPlan {
    /// Battery set-point per interval (positive = discharge).
    pub battery_w: Vec<i32>,
    /// The home's scheduled exchange per interval (positive = import): what the community
    /// agreed and bills deviations from. Empty in a plan stored before it was kept: then the
    /// battery power is followed as planned.
    #[serde(default)]
    pub net_w: Vec<i32>,
    /// The battery's power limit the plan was made with, W (both directions).
    #[serde(default)]
    pub limit_w: i32,
}

impl DayPlan {
    /// What to follow in interval `index`.
    pub fn step(&self, index: usize) -> Option<PlanStep> {
        Some(PlanStep {
            battery_w: *self.battery_w.get(index)?,
            net_w: self.net_w.get(index).copied().filter(|_| self.limit_w > 0),
            limit_w: self.limit_w,
        })
    }
}

/// One interval of the plan, as the battery follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanStep {
    /// The planned battery power, W (positive = discharge).
    pub battery_w: i32,
    /// The scheduled exchange to hold, W (positive = import); `None`: follow `battery_w`.
    pub net_w: Option<i32>,
    /// The battery's power limit, W.
    pub limit_w: i32,
}

/// One stored interval reading (net Wh, the meter's signature as hex, so the actor's file is
/// plain JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IntervalReading {
    /// Interval of the day.
    pub interval: u32,
    /// Net import, Wh.
    pub net_wh: i64,
    /// The meter's signature, hex.
    pub signature: String,
}

/// What the policy looks at on a tick.
#[derive(Debug, Clone, Copy)]
pub struct DayView<'a> {
    /// Committed days on chain.
    pub chain: &'a BTreeMap<u64, ChainDay>,
    /// This home's stored plans, by day.
    pub plans: &'a BTreeMap<u64, DayPlan>,
    /// This home's stored readings, by day.
    pub readings: &'a BTreeMap<u64, Vec<IntervalReading>>,
    /// A planning session is under way.
    pub session_running: bool,
    /// A finished session is still kept (it answers late peers until its day is on chain).
    pub session_done_day: Option<u64>,
}

/// What the policy wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum DayEffect {
    /// Start planning `day` with the community.
    Plan {
        /// The day.
        day: u64,
    },
    /// The finished session's day is on chain: drop the session.
    DropSession,
    /// Submit this transaction (a commitment again, or the day's readings).
    Submit(TxPayload),
    /// The battery should follow this interval of the plan (none: back to its own control).
    Follow(Option<PlanStep>),
    /// The day's readings have a gap: it cannot be billed from this home (said once).
    ReadingsIncomplete {
        /// The day.
        day: u64,
        /// Readings held.
        have: usize,
        /// Intervals of a day.
        intervals: usize,
    },
}

/// The policy's own state (nothing here needs to survive a restart: plans and readings are
/// the actor's durable book).
#[derive(Debug, Clone)]
pub struct DayPolicy {
    lead_ms: u64,
    interval_ms: u64,
    intervals: usize,
    failed: BTreeSet<u64>,
    /// Commitments not yet seen on chain: (wall ms from which to send it, the payload).
    pending_commit: BTreeMap<u64, (u64, TxPayload)>,
    /// Readings submitted, by day, at wall ms.
    readings_sent: BTreeMap<u64, u64>,
    /// Days whose readings were found incomplete (warned once).
    incomplete: BTreeSet<u64>,
    followed: Option<PlanStep>,
}

impl DayPolicy {
    /// Plans a day once it starts within `lead_ms`; days have `intervals` of `interval_ms`.
    pub fn new(lead_ms: u64, interval_ms: u64, intervals: usize) -> DayPolicy {
        DayPolicy {
            lead_ms,
            interval_ms: interval_ms.max(1),
            intervals,
            failed: BTreeSet::new(),
            pending_commit: BTreeMap::new(),
            readings_sent: BTreeMap::new(),
            incomplete: BTreeSet::new(),
            followed: None,
        }
    }

    /// Planning `day` failed: it runs without a schedule and is not planned again.
    pub fn failed(&mut self, day: u64) {
        self.failed.insert(day);
    }

    /// Days whose planning failed.
    pub fn failed_days(&self) -> impl Iterator<Item = u64> + '_ {
        self.failed.iter().copied()
    }

    /// The plan's interval followed now.
    pub fn followed(&self) -> Option<PlanStep> {
        self.followed
    }

    /// The session agreed on `payload` for `day`: the first member (`submit`) sends it now and
    /// the caller does so at once; the others send it only if it is not on chain after
    /// [`RESUBMIT_AFTER_MS`].
    pub fn committed(&mut self, day: u64, payload: TxPayload, submit: bool, wall_ms: u64) {
        let from = if submit {
            wall_ms
        } else {
            wall_ms.saturating_add(RESUBMIT_AFTER_MS)
        };
        self.pending_commit.insert(day, (from, payload));
    }

    /// One step at community time `now_ms` and wall time `wall_ms`.
    pub fn tick(&mut self, now_ms: u64, wall_ms: u64, view: DayView<'_>) -> Vec<DayEffect> {
        let mut out = Vec::new();
        let target = now_ms.saturating_add(self.lead_ms) / DAY_MS;
        if !view.session_running
            && !view.chain.contains_key(&target)
            && !view.plans.contains_key(&target)
            && !self.failed.contains(&target)
        {
            out.push(DayEffect::Plan { day: target });
        }
        for (day, (at, payload)) in self.pending_commit.iter_mut() {
            if !view.chain.contains_key(day) && wall_ms.saturating_sub(*at) >= RESUBMIT_AFTER_MS {
                out.push(DayEffect::Submit(payload.clone()));
                *at = wall_ms;
            }
        }
        self.pending_commit
            .retain(|d, _| !view.chain.contains_key(d));
        if view
            .session_done_day
            .is_some_and(|d| view.chain.contains_key(&d))
        {
            out.push(DayEffect::DropSession);
        }
        let today = now_ms / DAY_MS;
        let into_day = now_ms % DAY_MS;
        let index = into_day
            .checked_div(self.interval_ms)
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(usize::MAX);
        let want = if view.chain.contains_key(&today) {
            view.plans.get(&today).and_then(|p| p.step(index))
        } else {
            None
        };
        if want != self.followed {
            self.followed = want;
            out.push(DayEffect::Follow(want));
        }
        self.readings(today, wall_ms, view, &mut out);
        out
    }

    /// The readings of every finished, committed, unbilled day they are complete for.
    fn readings(&mut self, today: u64, wall_ms: u64, view: DayView<'_>, out: &mut Vec<DayEffect>) {
        for (day, stored) in view.readings {
            let Some(chain) = view.chain.get(day) else {
                continue;
            };
            if *day >= today || chain.billed || chain.mine_in || self.incomplete.contains(day) {
                continue;
            }
            if self
                .readings_sent
                .get(day)
                .is_some_and(|at| wall_ms.saturating_sub(*at) < RESUBMIT_AFTER_MS)
            {
                continue;
            }
            let complete = stored.len() == self.intervals
                && stored
                    .iter()
                    .enumerate()
                    .all(|(i, r)| usize::try_from(r.interval).ok() == Some(i));
            if !complete {
                self.incomplete.insert(*day);
                out.push(DayEffect::ReadingsIncomplete {
                    day: *day,
                    have: stored.len(),
                    intervals: self.intervals,
                });
                continue;
            }
            let readings = stored
                .iter()
                .map(|r| Reading {
                    interval: r.interval,
                    net_wh: r.net_wh,
                    signature: Signature::from_hex(&r.signature),
                })
                .collect();
            out.push(DayEffect::Submit(TxPayload::MeterReadings {
                day: *day,
                readings,
            }));
            self.readings_sent.insert(*day, wall_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(interval: u32) -> IntervalReading {
        IntervalReading {
            interval,
            net_wh: 10,
            signature: String::new(),
        }
    }

    fn view<'a>(
        chain: &'a BTreeMap<u64, ChainDay>,
        plans: &'a BTreeMap<u64, DayPlan>,
        readings: &'a BTreeMap<u64, Vec<IntervalReading>>,
        session_running: bool,
    ) -> DayView<'a> {
        DayView {
            chain,
            plans,
            readings,
            session_running,
            session_done_day: None,
        }
    }

    #[test]
    fn plans_the_day_within_the_lead_time_once_and_follows_it_when_committed() {
        let mut p = DayPolicy::new(12 * 3_600_000, 15 * 60_000, 96);
        let (mut chain, mut plans, readings) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        // 13:00 of day 0: day 1 starts within 12 h.
        let now = 13 * 3_600_000;
        assert_eq!(
            p.tick(now, 0, view(&chain, &plans, &readings, false)),
            vec![DayEffect::Plan { day: 1 }]
        );
        assert!(
            p.tick(now, 10, view(&chain, &plans, &readings, true))
                .is_empty(),
            "one session at a time"
        );
        plans.insert(
            1,
            DayPlan {
                battery_w: vec![500; 96],
                net_w: (0..96).map(|t| 100 + t).collect(),
                limit_w: 3_000,
            },
        );
        assert!(
            p.tick(now, 20, view(&chain, &plans, &readings, false))
                .is_empty(),
            "planned already"
        );
        // Day 1, 00:20: the second interval's set-point, once the plan is on chain.
        let now = DAY_MS + 20 * 60_000;
        assert!(p
            .tick(now, 30, view(&chain, &plans, &readings, false))
            .is_empty());
        chain.insert(1, ChainDay::default());
        chain.insert(2, ChainDay::default());
        assert_eq!(
            p.tick(now, 40, view(&chain, &plans, &readings, false)),
            vec![DayEffect::Follow(Some(PlanStep {
                battery_w: 500,
                net_w: Some(101),
                limit_w: 3_000
            }))],
            "the second interval's battery power and scheduled exchange"
        );
        assert!(
            p.tick(now, 50, view(&chain, &plans, &readings, false))
                .is_empty(),
            "said once"
        );
    }

    #[test]
    fn a_commitment_is_sent_again_only_while_it_is_not_on_chain() {
        let mut p = DayPolicy::new(0, 15 * 60_000, 96);
        let (mut chain, mut plans, readings) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        plans.insert(
            0,
            DayPlan {
                battery_w: vec![0; 96],
                net_w: Vec::new(),
                limit_w: 0,
            },
        );
        let payload = TxPayload::MeterReadings {
            day: 9,
            readings: vec![],
        };
        // Not the first member: it waits RESUBMIT_AFTER_MS before sending it at all.
        p.committed(0, payload.clone(), false, 1_000);
        assert!(p
            .tick(
                0,
                1_000 + RESUBMIT_AFTER_MS,
                view(&chain, &plans, &readings, true)
            )
            .is_empty());
        assert_eq!(
            p.tick(
                0,
                1_000 + 2 * RESUBMIT_AFTER_MS,
                view(&chain, &plans, &readings, true)
            ),
            vec![DayEffect::Submit(payload)]
        );
        chain.insert(0, ChainDay::default());
        let later = 1_000 + 5 * RESUBMIT_AFTER_MS;
        assert!(!p
            .tick(0, later, view(&chain, &plans, &readings, true))
            .iter()
            .any(|e| matches!(e, DayEffect::Submit(_))));
    }

    #[test]
    fn readings_go_once_complete_and_a_gap_is_reported_once() {
        let mut p = DayPolicy::new(0, 15 * 60_000, 4);
        let mut chain = BTreeMap::new();
        chain.insert(0, ChainDay::default());
        chain.insert(1, ChainDay::default());
        let plans = BTreeMap::new();
        let mut readings = BTreeMap::new();
        readings.insert(0, (0..4).map(reading).collect::<Vec<_>>());
        readings.insert(1, vec![reading(0), reading(2)]);
        // Day 2: days 0 and 1 are over.
        let out = p.tick(2 * DAY_MS, 0, view(&chain, &plans, &readings, true));
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            matches!(&out[0], DayEffect::Submit(TxPayload::MeterReadings { day: 0, readings }) if readings.len() == 4),
            "{out:?}"
        );
        assert_eq!(
            out[1],
            DayEffect::ReadingsIncomplete {
                day: 1,
                have: 2,
                intervals: 4
            }
        );
        assert!(
            p.tick(2 * DAY_MS, 1, view(&chain, &plans, &readings, true))
                .is_empty(),
            "not again before the delay"
        );
        let again = p.tick(
            2 * DAY_MS,
            RESUBMIT_AFTER_MS,
            view(&chain, &plans, &readings, true),
        );
        assert_eq!(again.len(), 1, "day 0 again, the gap not again: {again:?}");
        readings.remove(&0);
        chain.insert(
            0,
            ChainDay {
                mine_in: true,
                billed: false,
            },
        );
        assert!(p
            .tick(
                2 * DAY_MS,
                10 * RESUBMIT_AFTER_MS,
                view(&chain, &plans, &readings, true)
            )
            .is_empty());
    }

    #[test]
    fn a_plan_stored_before_the_exchange_was_kept_is_followed_by_battery_power() {
        let old: DayPlan = serde_json::from_str(r#"{"battery_w":[700,-300]}"#).unwrap();
        assert_eq!(
            old.step(1),
            Some(PlanStep {
                battery_w: -300,
                net_w: None,
                limit_w: 0
            })
        );
        assert_eq!(old.step(2), None, "past the plan's intervals");
    }
}
