//! Releasing traded energy from the home battery, as a sans-IO state machine.
//!
//! Rule: one trade at a time; before the battery is commanded, the journal must hold the
//! trade's `Begin` (so a restart never commands it again). Both directions of the battery run
//! through the same machine: a **discharge** trade (this home sells: its battery covers what
//! the buyers import) and a **charge** trade (this home buys a neighbour's PV surplus: its
//! battery takes what the seller exports). Two ways to deliver:
//!
//! - **Metered** (the home has a grid meter): the battery covers the home's own need and, on
//!   top, moves what the trade's other side offers right now (the buyers' import, or the
//!   seller's export: their signed live net power, [`crate::net_power`]), at most the release
//!   limit — so no trade pushes energy into, or draws it from, the main grid on purpose. What
//!   counts as delivered is integrated per reading interval as `min(this home's export, the
//!   buyers' import)` for a discharge and `min(this home's import, the seller's export)` for a
//!   charge, journaled as it grows.
//! - **Unmetered** (no grid meter: a lower-trust home): the battery runs at the release limit
//!   until its available energy (SunSpec 713 `WHAvail`) has moved by the traded Wh.
//!
//! Either ends on the traded Wh or at the deadline; then the battery goes back to its own
//! controller, the journal gets `End`, and the delivery is reported. When the battery's (or
//! the meter's) readings go stale, it is commanded to stop (the safe state) until fresh data
//! comes back.

use std::collections::VecDeque;

use gridlet_ledger::{DeliveryMode, Hash32, MemberKey};

use crate::day_plan::PlanStep;

/// A release order from the ledger (the trade is final).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOrder {
    /// Trade id.
    pub trade: Hash32,
    /// Energy to release, Wh.
    pub energy_wh: u64,
    /// Latest time (ms) by which the release must be done (from the deadline height).
    pub deadline_ms: u64,
    /// The other side, whose live net power the release follows: the buyers of a discharge
    /// (their import), the seller of a charge (its export).
    pub peers: Vec<MemberKey>,
    /// The part of the peers' flow this release covers, parts per million (an auction round's
    /// sellers split the buyers' import by the energy each sold; a sale covers all of it).
    pub share_ppm: u32,
    /// Which way the battery moves the energy.
    pub mode: DeliveryMode,
}

impl ReleaseOrder {
    /// This release's part of what the peers offer now.
    fn share_of(&self, buyers_import_w: u64) -> u64 {
        let part = u128::from(buyers_import_w)
            .saturating_mul(u128::from(self.share_ppm.min(1_000_000)))
            / 1_000_000;
        u64::try_from(part).unwrap_or(buyers_import_w)
    }
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
        /// Whether delivery is measured at the grid meters (progress records follow).
        metered: bool,
        /// Whether the battery charges (a charge trade) rather than discharges.
        charge: bool,
    },
    /// Command the battery to this power (positive = discharge).
    SetPower {
        /// Watts.
        power_w: i32,
    },
    /// Hand the battery back to its own controller (the release is over, or data is back).
    Idle,
    /// Write the measured delivery so far to the journal with fsync (a restart reports it).
    JournalProgress {
        /// Trade.
        trade: Hash32,
        /// Delivered so far, Wh.
        delivered_wh: u64,
    },
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

/// Energy delivered since an unmetered release began: the drop in the battery's available
/// energy (its rise, for a charge), never more than the trade (the one rule for a running
/// release and for one a restart interrupted).
pub fn delivered_since(start_wh: u64, available_wh: u64, energy_wh: u64, charge: bool) -> u64 {
    if charge {
        available_wh.saturating_sub(start_wh).min(energy_wh)
    } else {
        start_wh.saturating_sub(available_wh).min(energy_wh)
    }
}

/// Measured delivery is journaled each time it grew by this much, Wh.
pub const PROGRESS_STEP_WH: u64 = 10;
/// Set-point changes smaller than this are not written, W.
const DEADBAND_W: u64 = 10;

/// One reading of the home, for [`Releaser::on_sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// The battery's available energy, Wh; `None` if not valid (stale, comm error) — or if the
    /// home's grid meter is stale: either puts the battery in its safe state.
    pub available_wh: Option<u64>,
    /// The grid meter's side; `None` at a home without a grid meter (unmetered release).
    pub metered: Option<Metered>,
}

/// What the meters say at a metered home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metered {
    /// This home's grid power, W (positive = import).
    pub grid_w: i64,
    /// The battery's power, W (positive = discharge).
    pub battery_w: i64,
    /// What the active trade's peers offer now, W (their fresh signed readings, summed): the
    /// buyers' import for a discharge, the seller's export for a charge; `None` if none is
    /// fresh: then nothing is moved for them.
    pub peer_w: Option<u64>,
    /// When the grid meter took its reading (the clock of `now_ms`). A reading older than the
    /// last set-point shows the home before the battery followed it, so the set-point is kept
    /// until a newer one arrives (a meter slower than the battery must not make it oscillate).
    pub grid_read_ms: u64,
}

impl Metered {
    /// The battery power that covers the home's own need (`grid + battery`, i.e. load − PV)
    /// and moves `trade_w` on top — exported for a discharge, drawn in for a charge — within
    /// ±`limit_w`.
    fn set_point(&self, trade_w: u64, mode: DeliveryMode, limit_w: i32) -> i32 {
        let limit = i64::from(limit_w);
        let w = i64::try_from(trade_w).unwrap_or(i64::MAX);
        let extra = match mode {
            DeliveryMode::Discharge => w,
            DeliveryMode::Charge => w.saturating_neg(),
        };
        let p = self
            .grid_w
            .saturating_add(self.battery_w)
            .saturating_add(extra)
            .clamp(limit.saturating_neg(), limit);
        i32::try_from(p).unwrap_or(0)
    }

    /// This home's flow in the trade's direction, W: its export for a discharge, its import
    /// for a charge.
    fn own_w(&self, mode: DeliveryMode) -> u64 {
        let flow = match mode {
            DeliveryMode::Discharge => self.grid_w.saturating_neg(),
            DeliveryMode::Charge => self.grid_w,
        };
        u64::try_from(flow).unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Active {
    order: ReleaseOrder,
    start_wh: u64,
    last_ms: u64,
    power_w: i32,
    metered: bool,
    /// Measured delivery, mWh.
    delivered_mwh: u64,
    /// This home's flow and the peers' at the last reading, W (export and buyers' import for
    /// a discharge, import and seller's export for a charge): they hold for the interval up
    /// to the next one.
    own_w: u64,
    peer_w: u64,
    journaled_wh: u64,
    /// When the last set-point was written.
    commanded_ms: u64,
}

impl Active {
    fn delivered_wh(&self, available_wh: u64) -> u64 {
        if self.metered {
            (self.delivered_mwh / 1000).min(self.order.energy_wh)
        } else {
            delivered_since(
                self.start_wh,
                available_wh,
                self.order.energy_wh,
                self.order.mode == DeliveryMode::Charge,
            )
        }
    }
}

/// The release state machine.
#[derive(Debug, Clone)]
pub struct Releaser {
    queue: VecDeque<ReleaseOrder>,
    active: Option<Active>,
    power_w: i32,
    safe: bool,
}

/// The power that delivers exactly `remaining_wh` in `dt_ms`, at most `limit_w`: releases taper
/// towards their end so they stop on the traded Wh, not a reading later.
fn taper(remaining_wh: u64, dt_ms: u64, limit_w: i32) -> i32 {
    let exact = remaining_wh
        .saturating_mul(3_600_000)
        .checked_div(dt_ms.max(1))
        .unwrap_or(u64::MAX);
    i32::try_from(exact).unwrap_or(i32::MAX).clamp(0, limit_w)
}

impl Releaser {
    /// A releaser discharging at most `power_w`.
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
        let known = self
            .active
            .as_ref()
            .is_some_and(|a| a.order.trade == order.trade)
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

    /// The peers of the running release (whose net power the actor collects) and its mode.
    pub fn active_peers(&self) -> (&[MemberKey], DeliveryMode) {
        self.active
            .as_ref()
            .map_or((&[], DeliveryMode::Discharge), |a| {
                (&a.order.peers, a.order.mode)
            })
    }

    /// An unmetered reading: available energy (Wh) at `now_ms`, or `None` if not valid.
    pub fn on_reading(&mut self, available_wh: Option<u64>, now_ms: u64) -> Vec<Action> {
        self.on_sample(
            Sample {
                available_wh,
                metered: None,
            },
            now_ms,
        )
    }

    /// A fresh reading of the home at `now_ms`.
    pub fn on_sample(&mut self, sample: Sample, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(avail) = sample.available_wh else {
            // No trustworthy data: stop. A running release remembers that the battery stands
            // at 0 W, so fresh data commands it again; nothing counts as delivered meanwhile.
            if let Some(a) = &mut self.active {
                a.power_w = 0;
                a.last_ms = now_ms;
                a.own_w = 0;
                a.peer_w = 0;
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
        if let Some(mut a) = self.active.take() {
            let dt_ms = now_ms.saturating_sub(a.last_ms);
            if a.metered {
                let w = a.own_w.min(a.peer_w);
                a.delivered_mwh = a
                    .delivered_mwh
                    .saturating_add(w.saturating_mul(dt_ms) / 3_600);
            }
            let delivered = a.delivered_wh(avail);
            let remaining = a.order.energy_wh.saturating_sub(delivered);
            let done = remaining == 0 || now_ms >= a.order.deadline_ms;
            if done {
                out.push(Action::Idle);
                out.push(Action::JournalEnd {
                    trade: a.order.trade,
                    delivered_wh: delivered,
                });
                out.push(Action::Report {
                    trade: a.order.trade,
                    delivered_wh: delivered,
                });
            } else {
                if a.metered {
                    // What holds for the interval up to the next reading (nothing without data).
                    (a.own_w, a.peer_w) = sample.metered.map_or((0, 0), |m| {
                        (
                            m.own_w(a.order.mode),
                            a.order.share_of(m.peer_w.unwrap_or(0)),
                        )
                    });
                }
                let power = match (a.metered, sample.metered) {
                    // The meter has not seen the last set-point yet: keep it.
                    (true, Some(m)) if m.grid_read_ms <= a.commanded_ms => a.power_w,
                    (true, Some(m)) => {
                        // The home's own need plus what the peers offer, the rest tapered.
                        let taper_w = taper(remaining, dt_ms, self.power_w);
                        let want = a
                            .order
                            .share_of(m.peer_w.unwrap_or(0))
                            .min(u64::try_from(taper_w).unwrap_or(0));
                        m.set_point(want, a.order.mode, self.power_w)
                    }
                    // A metered release without meter data: hold still, count nothing.
                    (true, None) => 0,
                    (false, _) => {
                        let w = taper(remaining, dt_ms, self.power_w).max(1);
                        match a.order.mode {
                            DeliveryMode::Discharge => w,
                            DeliveryMode::Charge => w.saturating_neg(),
                        }
                    }
                };
                if a.metered && delivered >= a.journaled_wh.saturating_add(PROGRESS_STEP_WH) {
                    a.journaled_wh = delivered;
                    out.push(Action::JournalProgress {
                        trade: a.order.trade,
                        delivered_wh: delivered,
                    });
                }
                a.last_ms = now_ms;
                if i64::from(power).abs_diff(i64::from(a.power_w)) >= DEADBAND_W
                    || (power == 0) != (a.power_w == 0)
                {
                    a.power_w = power;
                    a.commanded_ms = now_ms;
                    out.push(Action::SetPower { power_w: power });
                }
                self.active = Some(a);
            }
        }
        if self.active.is_none() {
            if let Some(order) = self.queue.pop_front() {
                let metered = sample.metered.is_some();
                out.push(Action::JournalBegin {
                    trade: order.trade,
                    energy_wh: order.energy_wh,
                    meter_start_wh: avail,
                    metered,
                    charge: order.mode == DeliveryMode::Charge,
                });
                // Unmetered: full power at once. Metered: the next reading sets the power from
                // the peers' flow; until then the battery covers only the home itself.
                let power_w = match (sample.metered, order.mode) {
                    (None, DeliveryMode::Discharge) => self.power_w,
                    (None, DeliveryMode::Charge) => self.power_w.saturating_neg(),
                    (Some(m), mode) => m.set_point(0, mode, self.power_w),
                };
                out.push(Action::SetPower { power_w });
                self.active = Some(Active {
                    order,
                    start_wh: avail,
                    last_ms: now_ms,
                    power_w,
                    metered,
                    delivered_mwh: 0,
                    own_w: 0,
                    peer_w: 0,
                    journaled_wh: 0,
                    commanded_ms: now_ms,
                });
            }
        }
        out
    }
}

/// How often a held set-point is written again, ms: well inside SunSpec's revert timeout
/// (model 124 `InOutWRte_RvrtTms`, which the battery driver sets to 60 s).
pub const PLAN_REFRESH_MS: u64 = 10_000;

/// Follows the day-ahead plan: says which battery power to write (changed, or held for
/// [`PLAN_REFRESH_MS`]) and when to hand the battery back.
///
/// With fresh meter data and a scheduled exchange, the battery **holds the home's exchange**
/// where the community scheduled it — its power is the home's own need (`grid + battery`)
/// less the scheduled import — so a forecast error (a cloud, a kettle) is taken by the
/// battery, not by the grid: the deviation the billing charges at the grid tariff. Without a
/// scheduled exchange (a plan stored before it was kept) the planned battery power is written
/// as it is. Without fresh meter data only charging is allowed (the battery must not feed a
/// grid nobody measures).
#[derive(Debug, Clone, Default)]
pub struct PlanFollower {
    want: Option<PlanStep>,
    sent: Option<Written>,
}

/// The set-point last written: its power, at which wall ms (for the refresh) and community ms
/// (a meter reading older than that shows the home before the battery followed it).
#[derive(Debug, Clone, Copy)]
struct Written {
    power_w: i32,
    wall_ms: u64,
    now_ms: u64,
}

impl PlanFollower {
    /// The plan now asks for `want` (none: no plan, the battery's own control).
    pub fn follow(&mut self, want: Option<PlanStep>) {
        self.want = want;
    }

    /// What to command, while no release runs; `Some(w)` is the set-point written. `metered`
    /// is the home's grid and battery power (`None` when either is unknown); `now_ms` is
    /// community time (the meter's clock), `wall_ms` the refresh's.
    pub fn step(
        &mut self,
        metered: Option<&Metered>,
        meter_fresh: bool,
        now_ms: u64,
        wall_ms: u64,
    ) -> (Vec<Action>, Option<i32>) {
        let Some(plan) = self.want else {
            return match self.sent.take() {
                Some(_) => (vec![Action::Idle], None),
                None => (Vec::new(), None),
            };
        };
        let want = match (meter_fresh, plan.net_w, metered, self.sent) {
            (false, _, _, _) => plan.battery_w.min(0),
            // The meter has not seen the last set-point yet: keep it.
            (true, Some(_), Some(m), Some(sent)) if m.grid_read_ms <= sent.now_ms => sent.power_w,
            (true, Some(net_w), Some(m), _) => {
                let limit = i64::from(plan.limit_w.max(0));
                let hold = m
                    .grid_w
                    .saturating_add(m.battery_w)
                    .saturating_sub(i64::from(net_w))
                    .clamp(limit.saturating_neg(), limit);
                i32::try_from(hold).unwrap_or(0)
            }
            (true, _, _, _) => plan.battery_w,
        };
        let due = self.sent.is_none_or(|sent| {
            i64::from(want).abs_diff(i64::from(sent.power_w)) >= DEADBAND_W
                || (want == 0) != (sent.power_w == 0)
                || wall_ms.saturating_sub(sent.wall_ms) >= PLAN_REFRESH_MS
        });
        if !due {
            return (Vec::new(), None);
        }
        self.sent = Some(Written {
            power_w: want,
            wall_ms,
            now_ms,
        });
        (vec![Action::SetPower { power_w: want }], Some(want))
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn planned(battery_w: i32) -> Option<PlanStep> {
        Some(PlanStep {
            battery_w,
            net_w: None,
            limit_w: 0,
        })
    }

    #[test]
    fn a_set_point_is_written_on_change_and_refreshed_and_charging_only_without_meter_data() {
        let mut f = PlanFollower::default();
        assert_eq!(
            f.step(None, true, 0, 0),
            (vec![], None),
            "no plan, nothing to hand back"
        );
        f.follow(planned(800));
        assert_eq!(
            f.step(None, true, 0, 0),
            (vec![Action::SetPower { power_w: 800 }], Some(800))
        );
        assert_eq!(f.step(None, true, 0, PLAN_REFRESH_MS - 1), (vec![], None));
        assert_eq!(
            f.step(None, true, 0, PLAN_REFRESH_MS),
            (vec![Action::SetPower { power_w: 800 }], Some(800)),
            "refreshed inside the revert timeout"
        );
        assert_eq!(
            f.step(None, false, 0, PLAN_REFRESH_MS + 1),
            (vec![Action::SetPower { power_w: 0 }], Some(0)),
            "stale meter: no discharge"
        );
        f.follow(planned(-500));
        assert_eq!(
            f.step(None, false, 0, PLAN_REFRESH_MS + 2).1,
            Some(-500),
            "charging is allowed"
        );
        f.follow(None);
        assert_eq!(
            f.step(None, true, 0, PLAN_REFRESH_MS + 3),
            (vec![Action::Idle], None)
        );
        assert_eq!(
            f.step(None, true, 0, PLAN_REFRESH_MS + 4),
            (vec![], None),
            "handed back once"
        );
    }

    #[test]
    fn the_battery_holds_the_scheduled_exchange_when_the_home_differs_from_its_forecast() {
        let mut f = PlanFollower::default();
        // Planned: discharge 500 W so that the home imports 200 W.
        f.follow(Some(PlanStep {
            battery_w: 500,
            net_w: Some(200),
            limit_w: 3_000,
        }));
        let home = |grid_w: i64, battery_w: i64, grid_read_ms: u64| Metered {
            grid_w,
            battery_w,
            peer_w: None,
            grid_read_ms,
        };
        // A cloud: the home needs 1 500 W, not 700 W; with the battery idle it imports 1 500 W.
        let m = home(1_500, 0, 10);
        assert_eq!(
            f.step(Some(&m), true, 10, 0).1,
            Some(1_300),
            "the battery covers all but the scheduled 200 W"
        );
        // The meter has not seen the new set-point yet: kept.
        let m = home(1_500, 0, 10);
        assert_eq!(f.step(Some(&m), true, 20, 1).1, None);
        // Now it has: 200 W import with 1 300 W from the battery — nothing to change.
        let m = home(205, 1_300, 30);
        assert_eq!(
            f.step(Some(&m), true, 40, 2).1,
            None,
            "within the dead band"
        );
        // The need exceeds the battery's limit: it gives its limit.
        let m = home(4_000, 1_300, 50);
        assert_eq!(f.step(Some(&m), true, 60, 3).1, Some(3_000));
        // More sun than forecast: the surplus goes into the battery, the import stays.
        let m = home(-1_000, 3_000, 70);
        assert_eq!(f.step(Some(&m), true, 80, 4).1, Some(1_800));
        let m = home(-2_500, 0, 90);
        assert_eq!(f.step(Some(&m), true, 100, 5).1, Some(-2_700), "charging");
        // Without battery data, the planned power; a stale meter, charging only.
        assert_eq!(f.step(None, true, 110, 6).1, Some(500));
        let m = home(1_500, 0, 120);
        assert_eq!(f.step(Some(&m), false, 130, 7).1, Some(0));
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
            peers: Vec::new(),
            share_ppm: 1_000_000,
            mode: DeliveryMode::Discharge,
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
                    meter_start_wh: 5_000,
                    metered: false,
                    charge: false,
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

#[cfg(test)]
mod metered_tests {
    use super::*;

    /// A seller home with a constant load and no PV, its battery at what it was last commanded;
    /// runs `secs` one-second readings with the buyers drawing `buyer_w` (or sending nothing),
    /// returning every action and the seller's export per second.
    fn run(
        r: &mut Releaser,
        secs: u64,
        load_w: i64,
        buyer_w: Option<u64>,
    ) -> (Vec<Action>, Vec<i64>) {
        run_lagging(r, secs, load_w, buyer_w, 0)
    }

    /// As [`run`], with a meter whose reading is `lag` seconds old.
    fn run_lagging(
        r: &mut Releaser,
        secs: u64,
        load_w: i64,
        buyer_w: Option<u64>,
        lag: usize,
    ) -> (Vec<Action>, Vec<i64>) {
        let mut battery_w = 0i64;
        let mut history = vec![0i64; lag + 1];
        let (mut all, mut exports) = (Vec::new(), Vec::new());
        for t in 0..secs {
            exports.push(battery_w - load_w);
            history.push(battery_w);
            let seen = history[history.len() - 1 - lag];
            let sample = Sample {
                available_wh: Some(5_000),
                metered: Some(Metered {
                    grid_w: load_w - seen,
                    battery_w,
                    peer_w: buyer_w,
                    grid_read_ms: (t * 1_000).saturating_sub(lag as u64 * 1_000),
                }),
            };
            for a in r.on_sample(sample, t * 1_000) {
                match a {
                    Action::SetPower { power_w } => battery_w = i64::from(power_w),
                    Action::Idle => battery_w = load_w,
                    _ => {}
                }
                all.push(a);
            }
        }
        (all, exports)
    }

    fn order(wh: u64, deadline_ms: u64) -> ReleaseOrder {
        ReleaseOrder {
            trade: Hash32::sha256(b"t"),
            energy_wh: wh,
            deadline_ms,
            peers: vec![MemberKey::from_secret(
                &gridlet_ledger::crypto::deterministic_key(1, 1),
            )],
            share_ppm: 1_000_000,
            mode: DeliveryMode::Discharge,
        }
    }

    #[test]
    fn the_battery_covers_the_buyers_draw_and_nothing_more() {
        let mut r = Releaser::new(2_000);
        r.order(order(50, 10_000_000));
        // Buyer draws 600 W, the seller's own load is 300 W: the battery gives 900 W, of which
        // 600 W leave the home — never the 2 kW limit.
        let (actions, exports) = run(&mut r, 400, 300, Some(600));
        assert!(matches!(
            actions[0],
            Action::JournalBegin { metered: true, .. }
        ));
        assert!(exports.iter().all(|e| *e <= 600), "exported above the draw");
        assert!(
            exports[2..100].iter().all(|e| *e == 600),
            "{:?}",
            &exports[..10]
        );
        // 50 Wh at 600 W take 300 s; the release stops there and reports what was measured.
        let end = actions
            .iter()
            .position(|a| matches!(a, Action::Report { .. }))
            .expect("the release ended");
        assert_eq!(
            actions[end],
            Action::Report {
                trade: Hash32::sha256(b"t"),
                delivered_wh: 50
            }
        );
        let progress = actions
            .iter()
            .filter(|a| matches!(a, Action::JournalProgress { .. }))
            .count();
        assert_eq!(progress, 4, "journaled at 10, 20, 30 and 40 Wh");
        assert!(!r.busy());
    }

    #[test]
    fn without_the_buyers_readings_nothing_is_exported_or_counted() {
        let mut r = Releaser::new(2_000);
        r.order(order(50, 60_000));
        let (actions, exports) = run(&mut r, 70, 300, None);
        assert!(exports.iter().all(|e| *e <= 0), "{exports:?}");
        assert!(actions.contains(&Action::Report {
            trade: Hash32::sha256(b"t"),
            delivered_wh: 0
        }));
    }

    #[test]
    fn a_charge_trade_draws_exactly_the_sellers_export_into_the_battery() {
        // This home buys a neighbour's PV surplus: the seller exports 1 500 W; the home's own
        // 300 W load comes first, so the battery charges at 1 200 W and the home draws exactly
        // the 1 500 W the seller exports (what the meter shows as import, `exports` < 0).
        let mut r = Releaser::new(3_000);
        r.order(ReleaseOrder {
            mode: DeliveryMode::Charge,
            ..order(50, 10_000_000)
        });
        let (actions, exports) = run(&mut r, 200, 300, Some(1_500));
        assert!(matches!(
            actions[0],
            Action::JournalBegin {
                metered: true,
                charge: true,
                ..
            }
        ));
        assert!(
            exports[2..100].iter().all(|e| *e == -1_500),
            "{:?}",
            &exports[..10]
        );
        assert!(
            exports.iter().all(|e| *e >= -1_500),
            "drew more than the seller gives"
        );
        // 50 Wh at 1 500 W: 120 s, then the battery goes back to its own controller.
        assert!(actions.contains(&Action::Report {
            trade: Hash32::sha256(b"t"),
            delivered_wh: 50
        }));
        assert!(!r.busy());
        // Without the seller's readings the battery covers only its home: nothing is drawn.
        let mut r = Releaser::new(3_000);
        r.order(ReleaseOrder {
            mode: DeliveryMode::Charge,
            ..order(50, 60_000)
        });
        let (actions, exports) = run(&mut r, 70, 300, None);
        // (At 0 s the battery stands still: the home's load is imported before any command.)
        assert!(exports[1..].iter().all(|e| *e >= 0), "{exports:?}");
        assert!(actions.contains(&Action::Report {
            trade: Hash32::sha256(b"t"),
            delivered_wh: 0
        }));
    }

    #[test]
    fn an_auction_seller_covers_its_share_of_the_buyers_draw() {
        // Two sellers served one round: this one sold 1 of its 4 kWh, so it covers a quarter
        // of the 800 W the buyers draw — together the sellers export what the buyers draw.
        let mut r = Releaser::new(2_000);
        r.order(ReleaseOrder {
            share_ppm: 250_000,
            ..order(50, 10_000_000)
        });
        let (actions, exports) = run(&mut r, 400, 300, Some(800));
        assert!(
            exports[2..100].iter().all(|e| *e == 200),
            "{:?}",
            &exports[..10]
        );
        // 50 Wh at 200 W: 900 s; 400 s measured 22 Wh.
        let progress: Vec<u64> = actions
            .iter()
            .filter_map(|a| match a {
                Action::JournalProgress { delivered_wh, .. } => Some(*delivered_wh),
                _ => None,
            })
            .collect();
        assert_eq!(progress, [10, 20], "{actions:?}");
    }

    #[test]
    fn a_buyer_drawing_more_than_the_limit_gets_the_limit() {
        let mut r = Releaser::new(1_000);
        r.order(order(1_000, 10_000_000));
        // The home's own 200 W come first: the battery stays within its limit, 800 W leave.
        let (_, exports) = run(&mut r, 30, 200, Some(5_000));
        assert_eq!(exports[5], 800);
    }

    #[test]
    fn a_meter_slower_than_the_battery_does_not_make_it_oscillate() {
        let mut r = Releaser::new(3_000);
        r.order(order(10_000, 10_000_000));
        let (_, exports) = run_lagging(&mut r, 120, 400, Some(700), 3);
        let settled = &exports[30..];
        assert!(
            settled.iter().all(|e| (*e - 700).abs() <= 20),
            "{:?}",
            &exports[..40]
        );
    }
}
