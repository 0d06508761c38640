//! Releasing traded energy from the home battery, as a sans-IO state machine.
//!
//! Rule: one trade at a time; before the battery is commanded, the journal must hold the
//! trade's `Begin` (so a restart never commands it again); the battery discharges at a set
//! power until its available energy (SunSpec 713 `WHAvail`) has dropped by the traded Wh, or the
//! deadline passes; then it goes back to its own controller, the journal gets `End`, and the
//! delivery is reported. When the battery's readings go stale, it is commanded to stop
//! discharging (the safe state) until fresh data comes back.

use std::collections::VecDeque;

use gridlet_ledger::Hash32;

/// A release order from the ledger (the trade is final).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseOrder {
    /// Trade id.
    pub trade: Hash32,
    /// Energy to release, Wh.
    pub energy_wh: u64,
    /// Latest time (ms) by which the release must be done (from the deadline height).
    pub deadline_ms: u64,
}

/// What the releaser wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `Begin` to the journal with fsync; only then command the battery.
    JournalBegin {
        /// Trade.
        trade: Hash32,
        /// Energy.
        energy_wh: u64,
        /// Available energy at the start, Wh.
        meter_start_wh: u64,
    },
    /// Command the battery to this power (positive = discharge).
    SetPower {
        /// Watts.
        power_w: i32,
    },
    /// Hand the battery back to its own controller (the release is over, or data is back).
    Idle,
    /// Write `End` to the journal with fsync.
    JournalEnd {
        /// Trade.
        trade: Hash32,
        /// Delivered, Wh.
        delivered_wh: u64,
    },
    /// Report the delivery on chain (signed receipt).
    Report {
        /// Trade.
        trade: Hash32,
        /// Delivered, Wh.
        delivered_wh: u64,
    },
}

/// Energy delivered since a release began: the drop in the battery's available energy, never
/// more than the trade (the one rule for a running release and for one a restart interrupted).
pub fn delivered_since(start_wh: u64, available_wh: u64, energy_wh: u64) -> u64 {
    start_wh.saturating_sub(available_wh).min(energy_wh)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Active {
    order: ReleaseOrder,
    start_wh: u64,
    last_ms: u64,
    power_w: i32,
}

/// The release state machine.
#[derive(Debug, Clone)]
pub struct Releaser {
    queue: VecDeque<ReleaseOrder>,
    active: Option<Active>,
    power_w: i32,
    safe: bool,
}

impl Releaser {
    /// A releaser discharging at `power_w`.
    pub fn new(power_w: i32) -> Releaser {
        Releaser {
            queue: VecDeque::new(),
            active: None,
            power_w: power_w.max(1),
            safe: false,
        }
    }

    /// Queues an order (duplicates of queued or active trades are ignored).
    pub fn order(&mut self, order: ReleaseOrder) {
        let known = self.active.is_some_and(|a| a.order.trade == order.trade)
            || self.queue.iter().any(|o| o.trade == order.trade);
        if !known {
            self.queue.push_back(order);
        }
    }

    /// Whether the battery is held at 0 W because its data is not trustworthy.
    pub fn in_safe_state(&self) -> bool {
        self.safe
    }

    /// Whether a release is running.
    pub fn busy(&self) -> bool {
        self.active.is_some()
    }

    /// A fresh battery reading: available energy (Wh) at `now_ms`, or `None` if the reading is
    /// not valid (stale, comm error).
    pub fn on_reading(&mut self, available_wh: Option<u64>, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(avail) = available_wh else {
            // No trustworthy data: stop discharging. A running release remembers that the
            // battery stands at 0 W, so fresh data commands it again.
            if let Some(a) = &mut self.active {
                a.power_w = 0;
                a.last_ms = now_ms;
            }
            if !self.safe {
                self.safe = true;
                out.push(Action::SetPower { power_w: 0 });
            }
            return out;
        };
        let was_safe = std::mem::replace(&mut self.safe, false);
        if was_safe && self.active.is_none() && self.queue.is_empty() {
            out.push(Action::Idle);
        }
        if let Some(mut a) = self.active {
            let delivered = delivered_since(a.start_wh, avail, a.order.energy_wh);
            let remaining = a.order.energy_wh.saturating_sub(delivered);
            if remaining > 0 && now_ms < a.order.deadline_ms {
                // Taper towards the end so the release stops on the traded Wh, not a poll later:
                // the power that would deliver exactly the rest within one poll interval.
                let dt_ms = now_ms.saturating_sub(a.last_ms).max(1);
                let exact = remaining
                    .saturating_mul(3_600_000)
                    .checked_div(dt_ms)
                    .unwrap_or(u64::MAX);
                let power = i32::try_from(exact)
                    .unwrap_or(i32::MAX)
                    .clamp(1, self.power_w);
                a.last_ms = now_ms;
                if power != a.power_w {
                    a.power_w = power;
                    out.push(Action::SetPower { power_w: power });
                }
                self.active = Some(a);
            }
            if remaining == 0 || now_ms >= a.order.deadline_ms {
                self.active = None;
                out.push(Action::Idle);
                out.push(Action::JournalEnd {
                    trade: a.order.trade,
                    delivered_wh: delivered,
                });
                out.push(Action::Report {
                    trade: a.order.trade,
                    delivered_wh: delivered,
                });
            }
        }
        if self.active.is_none() {
            if let Some(order) = self.queue.pop_front() {
                self.active = Some(Active {
                    order,
                    start_wh: avail,
                    last_ms: now_ms,
                    power_w: self.power_w,
                });
                out.push(Action::JournalBegin {
                    trade: order.trade,
                    energy_wh: order.energy_wh,
                    meter_start_wh: avail,
                });
                out.push(Action::SetPower {
                    power_w: self.power_w,
                });
            }
        }
        out
    }
}

/// How often a held set-point is written again, ms: well inside SunSpec's revert timeout
/// (model 124 `InOutWRte_RvrtTms`, which the battery driver sets to 60 s).
pub const PLAN_REFRESH_MS: u64 = 10_000;

/// Follows the day-ahead plan's battery set-point: says when to write it (changed, or held for
/// [`PLAN_REFRESH_MS`]) and when to hand the battery back. Without fresh meter data only
/// charging is allowed (the battery must not feed a grid nobody measures).
#[derive(Debug, Clone, Default)]
pub struct PlanFollower {
    want_w: Option<i32>,
    /// The set-point last written and when, ms.
    sent: Option<(i32, u64)>,
}

impl PlanFollower {
    /// The plan now asks for `want_w` (none: no plan, the battery's own control).
    pub fn follow(&mut self, want_w: Option<i32>) {
        self.want_w = want_w;
    }

    /// What to command at `now_ms`, while no release runs; `Some(w)` is the set-point written.
    pub fn step(&mut self, meter_fresh: bool, now_ms: u64) -> (Vec<Action>, Option<i32>) {
        let Some(plan) = self.want_w else {
            return match self.sent.take() {
                Some(_) => (vec![Action::Idle], None),
                None => (Vec::new(), None),
            };
        };
        let want = if meter_fresh { plan } else { plan.min(0) };
        let due = self
            .sent
            .is_none_or(|(sent, at)| sent != want || now_ms.saturating_sub(at) >= PLAN_REFRESH_MS);
        if !due {
            return (Vec::new(), None);
        }
        self.sent = Some((want, now_ms));
        (vec![Action::SetPower { power_w: want }], Some(want))
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    #[test]
    fn a_set_point_is_written_on_change_and_refreshed_and_charging_only_without_meter_data() {
        let mut f = PlanFollower::default();
        assert_eq!(
            f.step(true, 0),
            (vec![], None),
            "no plan, nothing to hand back"
        );
        f.follow(Some(800));
        assert_eq!(
            f.step(true, 0),
            (vec![Action::SetPower { power_w: 800 }], Some(800))
        );
        assert_eq!(f.step(true, PLAN_REFRESH_MS - 1), (vec![], None));
        assert_eq!(
            f.step(true, PLAN_REFRESH_MS),
            (vec![Action::SetPower { power_w: 800 }], Some(800)),
            "refreshed inside the revert timeout"
        );
        assert_eq!(
            f.step(false, PLAN_REFRESH_MS + 1),
            (vec![Action::SetPower { power_w: 0 }], Some(0)),
            "stale meter: no discharge"
        );
        f.follow(Some(-500));
        assert_eq!(
            f.step(false, PLAN_REFRESH_MS + 2).1,
            Some(-500),
            "charging is allowed"
        );
        f.follow(None);
        assert_eq!(
            f.step(true, PLAN_REFRESH_MS + 3),
            (vec![Action::Idle], None)
        );
        assert_eq!(
            f.step(true, PLAN_REFRESH_MS + 4),
            (vec![], None),
            "handed back once"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(n: u8, wh: u64) -> ReleaseOrder {
        ReleaseOrder {
            trade: Hash32::sha256(&[n]),
            energy_wh: wh,
            deadline_ms: 1_000_000,
        }
    }

    #[test]
    fn journal_before_command_then_stop_at_the_traded_energy() {
        let mut r = Releaser::new(2000);
        r.order(order(1, 300));
        r.order(order(1, 300));
        let a = r.on_reading(Some(5_000), 0);
        assert_eq!(
            a,
            vec![
                Action::JournalBegin {
                    trade: order(1, 0).trade,
                    energy_wh: 300,
                    meter_start_wh: 5_000
                },
                Action::SetPower { power_w: 2000 }
            ]
        );
        // Far from the target: full power, nothing to change.
        assert!(r.on_reading(Some(4_800), 10_000).is_empty());
        // 3 Wh left with readings 10 s apart: 2 kW would overshoot, so taper to 1 080 W.
        assert_eq!(
            r.on_reading(Some(4_703), 20_000),
            vec![Action::SetPower { power_w: 1_080 }]
        );
        let a = r.on_reading(Some(4_700), 30_000);
        assert_eq!(a[0], Action::Idle);
        assert_eq!(
            a[1],
            Action::JournalEnd {
                trade: order(1, 0).trade,
                delivered_wh: 300
            }
        );
        assert!(!r.busy(), "the duplicate order was ignored");
    }

    #[test]
    fn stale_data_stops_the_battery_and_a_deadline_ends_a_short_release() {
        let mut r = Releaser::new(1000);
        r.order(ReleaseOrder {
            deadline_ms: 50,
            ..order(2, 1_000)
        });
        r.on_reading(Some(2_000), 0);
        assert_eq!(
            r.on_reading(None, 10),
            vec![Action::SetPower { power_w: 0 }]
        );
        assert!(
            r.on_reading(None, 20).is_empty(),
            "safe state is commanded once"
        );
        let a = r.on_reading(Some(1_700), 60);
        assert!(a.contains(&Action::Report {
            trade: order(2, 0).trade,
            delivered_wh: 300
        }));
    }

    #[test]
    fn fresh_data_after_the_safe_state_commands_the_release_again() {
        let mut r = Releaser::new(2000);
        r.order(order(3, 1_000));
        r.on_reading(Some(5_000), 0);
        assert_eq!(
            r.on_reading(None, 1_000),
            vec![Action::SetPower { power_w: 0 }]
        );
        // Data is back after a long pause: full power again, not a taper from the long gap.
        assert_eq!(
            r.on_reading(Some(4_900), 600_000),
            vec![Action::SetPower { power_w: 2000 }]
        );
        assert!(r.busy());
    }
}
