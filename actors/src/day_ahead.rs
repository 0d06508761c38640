//! The day-ahead actor: plans the next day with the neighbours (a [`Session`] over the
//! community bus, the local step solved on a worker thread), submits the commitment, makes the
//! battery follow this home's part of the committed schedule, cuts the meter's counters into
//! signed interval readings ([`IntervalMeter`]) and submits them after the day for billing.
//!
//! What no peer can give back — this home's plan (its battery powers are private) and its
//! signed readings — is written to `dayahead.json` with fsync before it is acted on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use gridlet_ledger::genesis::ScheduleParams;
use gridlet_ledger::market::dispatch::DispatchParams;
use gridlet_ledger::{Hash32, MemberKey, TxPayload};
use secp256k1::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

use crate::battery::FollowPlan;
use crate::bus::BusHandle;
use crate::clock::Clock;
use crate::devices::{fresh, MeterFeed};
use crate::ledger_actor::{GetState, LedgerActor, SignAndSubmit};
use crate::metrics as m;
use gridlet_core::day_plan::{ChainDay, DayEffect, DayPlan, DayPolicy, DayView, IntervalReading};
use gridlet_core::dispatch_session::{ProposalMessage, Session, SessionConfig, SessionEffect};
use gridlet_core::node::BusMessage;
use gridlet_core::readings::{IntervalMeter, OpenInterval};
use gridlet_core::schedule::{local_step, Community, HomeData, HomePlan};

/// How the actor runs.
#[derive(Debug, Clone)]
pub struct DayAheadConfig {
    /// The chain id.
    pub chain_id: Hash32,
    /// The genesis schedule section.
    pub params: ScheduleParams,
    /// The grid tariff.
    pub grid_tariff: u64,
    /// Members and their keys.
    pub members: BTreeMap<MemberKey, PublicKey>,
    /// This home.
    pub me: MemberKey,
    /// This home's key (signs proposals and transactions).
    pub key: SecretKey,
    /// The meter's key (the device key: signs readings).
    pub meter_key: SecretKey,
    /// This home's forecast and battery.
    pub forecast: HomeData,
    /// Battery wear cost in the local step, credits per kW² per hour.
    pub wear: f64,
    /// Plan the day starting within this much community time, ms.
    pub lead_ms: u64,
    /// The community clock.
    pub clock: Clock,
    /// Actor tick (wall time).
    pub tick: Duration,
    /// Republish proposals after this much wall time without progress, ms.
    pub resend_ms: u64,
    /// Give up a session after this much wall time, ms.
    pub deadline_ms: u64,
    /// Where `dayahead.json` lives.
    pub data_dir: PathBuf,
    /// Meter counters older than this are not sampled.
    pub meter_max_age: Duration,
}

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DayBook {
    plans: BTreeMap<u64, DayPlan>,
    readings: BTreeMap<u64, Vec<IntervalReading>>,
    /// The interval being metered, so a restart within it still closes it.
    #[serde(default)]
    open_interval: Option<OpenInterval>,
}

impl DayBook {
    fn load(path: &std::path::Path) -> std::io::Result<DayBook> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DayBook::default()),
            Err(e) => Err(e),
        }
    }
}

/// What the actor reports (for the API).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayAheadStatus {
    /// The day being planned, if a session runs.
    pub planning_day: Option<u64>,
    /// Its iteration.
    pub iteration: u32,
    /// Days this home holds a plan for.
    pub planned_days: Vec<u64>,
    /// Days whose planning failed.
    pub failed_days: Vec<u64>,
    /// The battery power the plan asks for now, W (positive = discharge).
    pub setpoint_w: Option<i32>,
    /// The home's exchange scheduled now, which the battery holds, W (positive = import).
    pub scheduled_net_w: Option<i32>,
    /// Signed interval readings made.
    pub readings: u64,
}

/// A proposal from the bus.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProposalReceived(pub ProposalMessage);

#[derive(Message)]
#[rtype(result = "()")]
struct Solved {
    day: u64,
    round: u32,
    plan: Result<HomePlan, SolveError>,
}

/// Why a local step gave no plan.
#[derive(Debug, thiserror::Error)]
enum SolveError {
    /// The QP had no usable solution.
    #[error(transparent)]
    Schedule(#[from] gridlet_core::schedule::ScheduleError),
    /// The worker thread died.
    #[error("the solver thread failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// The day-ahead actor.
pub struct DayAheadActor {
    cfg: DayAheadConfig,
    community: Community,
    ledger: Addr<LedgerActor>,
    bus: BusHandle,
    battery: Option<Recipient<FollowPlan>>,
    meter: MeterFeed,
    status: Arc<Mutex<DayAheadStatus>>,
    session: Option<Session>,
    /// The local plan behind this home's latest proposal.
    last_plan: Option<HomePlan>,
    book: DayBook,
    interval_meter: IntervalMeter,
    policy: DayPolicy,
    chain: BTreeMap<u64, ChainDay>,
}

impl DayAheadActor {
    /// The actor; `battery` follows the plan (none: plan and bill only).
    pub fn new(
        cfg: DayAheadConfig,
        ledger: Addr<LedgerActor>,
        bus: BusHandle,
        battery: Option<Recipient<FollowPlan>>,
        meter: MeterFeed,
        status: Arc<Mutex<DayAheadStatus>>,
    ) -> std::io::Result<DayAheadActor> {
        let p = DispatchParams::from_schedule(&cfg.params, cfg.grid_tariff);
        let community = Community {
            dt_h: p.dt_h,
            import_price: p.import_price,
            export_price: p.export_price,
            feeder_kw: p.feeder_kw,
            wear: cfg.wear,
        };
        let book = DayBook::load(&cfg.data_dir.join("dayahead.json"))?;
        let interval_ms = u64::from(cfg.params.interval_min) * 60_000;
        let mut interval_meter = IntervalMeter::new(cfg.chain_id, cfg.me, interval_ms);
        if let Some(open) = book.open_interval {
            interval_meter.restore(open);
        }
        Ok(DayAheadActor {
            interval_meter,
            community,
            ledger,
            bus,
            battery,
            meter,
            status,
            session: None,
            last_plan: None,
            book,
            policy: DayPolicy::new(
                cfg.lead_ms,
                interval_ms,
                usize::try_from(cfg.params.intervals).unwrap_or(0),
            ),
            chain: BTreeMap::new(),
            cfg,
        })
    }

    fn wall_ms(&self) -> u64 {
        self.cfg.clock.wall_ms()
    }

    /// Writes the book durably (temporary file, fsync, rename, fsync of the directory).
    fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.book).map_err(std::io::Error::other)?;
        crate::bids::write_durably(&self.cfg.data_dir, "dayahead.json", &bytes)
    }

    fn on_effects(&mut self, effects: Vec<SessionEffect>, ctx: &mut Context<Self>) {
        for e in effects {
            match e {
                SessionEffect::Solve { round, target, rho } => {
                    let Some(day) = self.session.as_ref().map(Session::day) else {
                        continue;
                    };
                    let forecast = self.cfg.forecast.clone();
                    let community = self.community.clone();
                    let fut = async move {
                        tokio::task::spawn_blocking(move || {
                            local_step(&forecast, &community, rho, &target)
                        })
                        .await
                        .map_err(SolveError::from)
                        .and_then(|r| r.map_err(SolveError::from))
                    };
                    ctx.spawn(fut.into_actor(self).map(move |plan, _, ctx| {
                        ctx.notify(Solved { day, round, plan });
                    }));
                }
                SessionEffect::Publish(msg) => {
                    let bus = self.bus.clone();
                    actix::spawn(async move {
                        bus.publish(BusMessage::Proposal(msg)).await;
                    });
                }
                SessionEffect::Finished {
                    commit,
                    submit,
                    report,
                } => self.finished(*commit, submit, report.primal),
                SessionEffect::Failed(why) => {
                    if let Some(day) = self.session.as_ref().map(Session::day) {
                        self.give_up(day, &why);
                    }
                }
            }
        }
        self.publish_status();
    }

    /// Planning `day` failed: the day runs without a schedule (self-consumption).
    fn give_up(&mut self, day: u64, why: &str) {
        tracing::warn!(day, %why, "day-ahead planning failed; the day runs without a schedule");
        metrics::counter!(m::DAYAHEAD_SESSIONS, "result" => "failed").increment(1);
        self.policy.failed(day);
        self.session = None;
    }

    fn finished(
        &mut self,
        commit: gridlet_ledger::tx::ScheduleCommit,
        submit: bool,
        primal_kw: f64,
    ) {
        let day = commit.day;
        metrics::counter!(m::DAYAHEAD_SESSIONS, "result" => "finished").increment(1);
        metrics::gauge!(m::DAYAHEAD_ITERATIONS).set(commit.rounds.len() as f64);
        metrics::gauge!(m::DAYAHEAD_PRIMAL).set(primal_kw * 1000.0);
        tracing::info!(
            day,
            iterations = commit.rounds.len(),
            primal_w = commit.primal_w,
            dual_w = commit.dual_w,
            "day-ahead schedule agreed"
        );
        let Some(plan) = &self.last_plan else {
            return;
        };
        // The battery powers behind this home's last proposal: private, so kept durably.
        let battery_w = plan
            .discharge_kw
            .iter()
            .zip(&plan.charge_kw)
            .map(|(d, c)| ((d - c) * 1000.0).round() as i32)
            .collect();
        // The exchange the community agreed: the battery holds it against forecast errors.
        let net_w = plan
            .net_kw
            .iter()
            .map(|x| (x * 1000.0).round() as i32)
            .collect();
        let f = &self.cfg.forecast;
        let limit_w = (f.charge_kw.max(f.discharge_kw) * 1000.0).round() as i32;
        self.book.plans.insert(
            day,
            DayPlan {
                battery_w,
                net_w,
                limit_w,
            },
        );
        if let Err(e) = self.save() {
            tracing::error!(%e, "day-ahead plan not stored; not following it");
            self.book.plans.remove(&day);
            return;
        }
        let payload = TxPayload::ScheduleCommit(Box::new(commit));
        if submit {
            self.ledger.do_send(SignAndSubmit(payload.clone()));
        }
        let wall = self.wall_ms();
        self.policy.committed(day, payload, submit, wall);
    }

    fn sample_meter(&mut self, now_ms: u64) {
        let readings = *self.meter.borrow();
        let (import, export) = (
            fresh(readings.import_wh, self.cfg.meter_max_age),
            fresh(readings.export_wh, self.cfg.meter_max_age),
        );
        let (Some(import), Some(export)) = (import, export) else {
            return;
        };
        let reading = self
            .interval_meter
            .sample(now_ms, import, export, &self.cfg.meter_key);
        let open = self.interval_meter.open_interval();
        if open != self.book.open_interval {
            self.book.open_interval = open;
            if reading.is_none() {
                if let Err(e) = self.save() {
                    tracing::error!(%e, "metered interval not stored");
                }
            }
        }
        let Some(r) = reading else {
            return;
        };
        metrics::counter!(m::DAYAHEAD_READINGS).increment(1);
        let signature = r.reading.signature.map(|s| s.to_hex()).unwrap_or_default();
        self.book
            .readings
            .entry(r.day)
            .or_default()
            .push(IntervalReading {
                interval: r.reading.interval,
                net_wh: r.reading.net_wh,
                signature,
            });
        // Keep the last week.
        let oldest = r.day.saturating_sub(7);
        self.book.readings.retain(|d, _| *d >= oldest);
        self.book.plans.retain(|d, _| *d >= oldest);
        if let Err(e) = self.save() {
            tracing::error!(%e, "interval reading not stored");
        }
        if let Ok(mut s) = self.status.lock() {
            s.readings += 1;
        }
    }

    /// Asks the policy what the day needs now and does it.
    fn step_policy(&mut self, now_ms: u64, ctx: &mut Context<Self>) {
        let view = DayView {
            chain: &self.chain,
            plans: &self.book.plans,
            readings: &self.book.readings,
            session_running: self.session.as_ref().is_some_and(|s| !s.is_done()),
            session_done_day: self
                .session
                .as_ref()
                .filter(|s| s.is_done())
                .map(Session::day),
        };
        let wall = self.wall_ms();
        for effect in self.policy.tick(now_ms, wall, view) {
            match effect {
                DayEffect::Plan { day } => self.start_session(day, ctx),
                DayEffect::DropSession => self.session = None,
                DayEffect::Submit(payload) => {
                    match &payload {
                        TxPayload::MeterReadings { day, .. } => {
                            tracing::info!(day, "submitting the day's meter readings for billing")
                        }
                        _ => tracing::info!("day-ahead commitment not on chain yet; submitting it"),
                    }
                    self.ledger.do_send(SignAndSubmit(payload));
                }
                DayEffect::Follow(want) => {
                    metrics::gauge!(m::DAYAHEAD_SETPOINT)
                        .set(f64::from(want.map_or(0, |w| w.battery_w)));
                    metrics::gauge!(m::DAYAHEAD_SCHEDULED_NET)
                        .set(f64::from(want.and_then(|w| w.net_w).unwrap_or(0)));
                    if let Some(b) = &self.battery {
                        b.do_send(FollowPlan(want));
                    }
                }
                DayEffect::ReadingsIncomplete {
                    day,
                    have,
                    intervals,
                } => tracing::warn!(
                    day,
                    have,
                    intervals,
                    "meter readings incomplete (a gap in the meter data): the day cannot be billed from this home"
                ),
            }
        }
    }

    fn start_session(&mut self, day: u64, ctx: &mut Context<Self>) {
        tracing::info!(day, "planning the day with the community");
        let cfg = SessionConfig {
            chain_id: self.cfg.chain_id,
            day,
            params: self.cfg.params.clone(),
            grid_tariff: self.cfg.grid_tariff,
            members: self.cfg.members.clone(),
            resend_ms: self.cfg.resend_ms,
            deadline_ms: self.cfg.deadline_ms,
        };
        let (session, effects) = Session::start(cfg, self.cfg.me, self.cfg.key, self.wall_ms());
        self.session = Some(session);
        self.last_plan = None;
        self.on_effects(effects, ctx);
    }

    fn publish_status(&self) {
        if let Ok(mut s) = self.status.lock() {
            s.planning_day = self
                .session
                .as_ref()
                .filter(|s| !s.is_done())
                .map(Session::day);
            s.iteration = self.session.as_ref().map_or(0, Session::round);
            s.planned_days = self.book.plans.keys().copied().collect();
            s.failed_days = self.policy.failed_days().collect();
            let followed = self.policy.followed();
            s.setpoint_w = followed.map(|w| w.battery_w);
            s.scheduled_net_w = followed.and_then(|w| w.net_w);
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now_ms = self.cfg.clock.now_ms();
        self.sample_meter(now_ms);
        let wall = self.wall_ms();
        if let Some(s) = self.session.as_mut() {
            let effects = s.tick(wall);
            self.on_effects(effects, ctx);
        }
        // The chain's view of the days, then what depends on it.
        let me = self.cfg.me;
        let fut = self.ledger.send(GetState);
        ctx.spawn(fut.into_actor(self).map(move |state, act, ctx| {
            if let Ok(Some(state)) = state {
                act.chain = state
                    .market()
                    .days
                    .iter()
                    .map(|(d, r)| {
                        (
                            *d,
                            ChainDay {
                                mine_in: r.metered_wh.contains_key(&me),
                                billed: r.bills.is_some(),
                            },
                        )
                    })
                    .collect();
            }
            act.step_policy(now_ms, ctx);
            act.publish_status();
        }));
    }
}

impl Actor for DayAheadActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.cfg.tick, |act, ctx| act.tick(ctx));
    }
}

impl Handler<ProposalReceived> for DayAheadActor {
    type Result = ();

    fn handle(&mut self, msg: ProposalReceived, ctx: &mut Context<Self>) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        match s.receive(&msg.0) {
            Ok(effects) => self.on_effects(effects, ctx),
            Err(e) => {
                let reason = gridlet_core::node::reason_class(&e);
                tracing::warn!(%e, "day-ahead proposal refused");
                metrics::counter!(m::DAYAHEAD_PROPOSALS_REJECTED, "reason" => reason).increment(1);
            }
        }
    }
}

impl Handler<Solved> for DayAheadActor {
    type Result = ();

    fn handle(&mut self, msg: Solved, ctx: &mut Context<Self>) {
        let wall = self.wall_ms();
        let Some(s) = self.session.as_mut().filter(|s| s.day() == msg.day) else {
            return;
        };
        match msg.plan {
            Ok(plan) => {
                let effects = s.solved(msg.round, &plan.net_kw, wall);
                self.last_plan = Some(plan);
                self.on_effects(effects, ctx);
            }
            Err(e) => self.give_up(msg.day, &format!("local step failed: {e}")),
        }
    }
}
