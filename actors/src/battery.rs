//! The battery storage actor: polls the home battery over Modbus, releases traded energy as the
//! [`Releaser`] says — journal first, with fsync — and reports deliveries.
//!
//! One actor per physical link. Modbus I/O runs on the actor's arbiter (tokio-modbus is
//! async); the journal's fsync runs on the blocking pool.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use gridlet_drivers::device::SunSpecDevice;
use gridlet_drivers::modbus::ModbusLink;
use gridlet_drivers::quality::Reading;
use gridlet_ledger::Hash32;

use crate::clock::Clock;
use crate::devices::{fresh, MeterFeed};
use crate::journal::{ReleaseJournal, ReleaseState};
use gridlet_core::day_plan::PlanStep;
use gridlet_core::net_power::{NetPowerMessage, NetPowers};
use gridlet_core::release::{Action, Metered, PlanFollower, ReleaseOrder, Releaser, Sample};

/// A delivery measured by the battery, to be reported on chain with a signed receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct Delivered {
    /// Trade.
    pub trade: Hash32,
    /// Energy delivered, Wh.
    pub delivered_wh: u64,
}

/// Release a final trade's energy.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Release(pub ReleaseOrder);

/// A home's signed live net power from the bus (the buyers of a release send theirs).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct BuyerPower(pub NetPowerMessage);

/// What the battery actor last saw (for the API and metrics).
#[derive(Debug, Clone, Default)]
pub struct BatteryStatus {
    /// Available energy, Wh, if valid.
    pub available_wh: Option<f64>,
    /// State of charge, %, if valid.
    pub soc_pct: Option<f64>,
    /// Power, W (positive = discharge), if valid.
    pub power_w: Option<f64>,
    /// Polls that failed.
    pub failed_polls: u64,
    /// Releases finished.
    pub releases: u64,
    /// Whether the battery was put in its safe state (data stale).
    pub safe_state: bool,
    /// Usable capacity, Wh (from available energy and state of charge), if known.
    pub capacity_wh: Option<f64>,
    /// Polls at which the grid meter's data was too old to release energy.
    pub meter_stale_polls: u64,
    /// The day-ahead plan's last set-point, W (positive = discharge).
    pub plan_w: Option<i32>,
    /// When the values above were last read valid.
    pub read_at: Option<std::time::Instant>,
    /// Energy into and out of the battery since the gateway started (from its power).
    pub energy: gridlet_core::battery_energy::BatteryEnergy,
}

/// The battery's latest values, as the battery actor sends them to the market actor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatteryReadings {
    /// Available energy, Wh, if valid.
    pub available_wh: Option<f64>,
    /// State of charge, %, if valid.
    pub soc_pct: Option<f64>,
    /// Power, W (positive = discharge), if valid.
    pub power_w: Option<f64>,
}

/// The battery's feed: a single-slot channel holding its latest readings.
pub type BatteryFeed = tokio::sync::watch::Receiver<BatteryReadings>;

/// How the battery actor runs.
#[derive(Debug, Clone, Copy)]
pub struct BatterySettings {
    /// Discharge power for releases, W.
    pub release_power_w: i32,
    /// The community's clock.
    pub clock: Clock,
    /// Poll period.
    pub poll: Duration,
    /// Grid meter data older than this puts the battery in its safe state (0 W); a buyer's
    /// net power older than this counts as unknown (nothing is exported for it).
    pub safe_after: Duration,
    /// The community's chain id.
    pub chain_id: Hash32,
}

pub(crate) struct Io {
    link: ModbusLink,
    device: SunSpecDevice,
}

impl Io {
    /// The link and the battery's unit id (the signing block sits on the same unit).
    pub(crate) fn link_and_unit(&mut self) -> (&mut ModbusLink, u8) {
        let unit = self.device.settings_unit();
        (&mut self.link, unit)
    }
}

/// Where delivery reports go, remembering which trades were reported since the start: a
/// restarted gateway hands its battery the still-open release orders again, and a trade it
/// finished but whose report a crash cut off is then reported once more, and only once.
#[derive(Clone)]
struct Reports {
    to: Recipient<Delivered>,
    sent: Arc<Mutex<std::collections::BTreeSet<Hash32>>>,
}

impl Reports {
    /// Reports a delivery (and remembers it).
    fn send(&self, trade: Hash32, delivered_wh: u64) {
        self.first(trade);
        self.to.do_send(Delivered {
            trade,
            delivered_wh,
        });
    }

    /// Reports a trade finished before this start, unless it was reported since.
    fn again(&self, trade: Hash32, delivered_wh: u64) -> bool {
        let first = self.first(trade);
        if first {
            self.to.do_send(Delivered {
                trade,
                delivered_wh,
            });
        }
        first
    }

    /// Marks `trade` reported; whether it was not before.
    fn first(&self, trade: Hash32) -> bool {
        self.sent
            .lock()
            .map(|mut s| s.insert(trade))
            .unwrap_or(false)
    }
}

/// The battery's link, shared with its signing block.
pub(crate) type SharedIo = Arc<tokio::sync::Mutex<Io>>;

/// The battery storage actor.
pub struct BatteryStorage {
    io: SharedIo,
    /// The battery signs the home's claims: each release's begin is announced to it.
    signer: Option<crate::attestor::DeviceSigner>,
    journal: Arc<Mutex<ReleaseJournal>>,
    releaser: Releaser,
    clock: Clock,
    poll: Duration,
    deliveries: Reports,
    status: Arc<Mutex<BatteryStatus>>,
    polling: bool,
    meter: Option<MeterFeed>,
    feed: Arc<tokio::sync::watch::Sender<BatteryReadings>>,
    safe_after: Duration,
    /// The day-ahead plan's set-point policy.
    plan: PlanFollower,
    /// The community's chain id (buyers sign their net power for it).
    chain_id: Hash32,
    /// The latest verified net power of each home that sent one.
    net_powers: NetPowers,
}

/// Follow this interval of the day-ahead plan (hold the scheduled exchange, or the planned
/// battery power: [`PlanFollower`]) until told otherwise; `None` hands the battery back to its
/// own control. A trade's release takes precedence; stale meter data allows charging only.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct FollowPlan(pub Option<PlanStep>);

impl Handler<FollowPlan> for BatteryStorage {
    type Result = ();

    fn handle(&mut self, msg: FollowPlan, _: &mut Context<Self>) {
        self.plan.follow(msg.0);
    }
}

impl BatteryStorage {
    /// A battery actor over a discovered device. In-flight trades from before a restart are
    /// never commanded again: they are closed with what the battery metered, and reported.
    pub fn new(
        link: ModbusLink,
        device: SunSpecDevice,
        journal: ReleaseJournal,
        settings: BatterySettings,
        deliveries: Recipient<Delivered>,
        status: Arc<Mutex<BatteryStatus>>,
    ) -> Self {
        // The energy counters run on the community clock, which may run faster than the poll.
        let poll_ms = (settings.poll.as_secs_f64() * 1_000.0 * settings.clock.speedup()) as u64;
        if let Ok(mut s) = status.lock() {
            s.energy = gridlet_core::battery_energy::BatteryEnergy::new(poll_ms);
        }
        BatteryStorage {
            io: Arc::new(tokio::sync::Mutex::new(Io { link, device })),
            signer: None,
            journal: Arc::new(Mutex::new(journal)),
            releaser: Releaser::new(settings.release_power_w),
            clock: settings.clock,
            poll: settings.poll,
            deliveries: Reports {
                to: deliveries,
                sent: Arc::default(),
            },
            status,
            polling: false,
            meter: None,
            feed: Arc::new(tokio::sync::watch::channel(BatteryReadings::default()).0),
            safe_after: settings.safe_after,
            plan: PlanFollower::default(),
            chain_id: settings.chain_id,
            net_powers: NetPowers::default(),
        }
    }

    /// Watches the home's grid meter: when its data is older than the settings' `safe_after`,
    /// the battery stops discharging (a release pauses until the meter is back).
    pub fn watch_meter(mut self, meter: MeterFeed) -> Self {
        self.meter = Some(meter);
        self
    }

    /// The battery holds the home's attestor key (genesis names it `expected`): it signs the
    /// home's attestations and receipts, and is told when each release begins.
    pub fn signing(
        mut self,
        expected: secp256k1::PublicKey,
    ) -> (Self, crate::attestor::DeviceSigner) {
        let signer = crate::attestor::DeviceSigner::new(self.io.clone(), expected);
        self.signer = Some(signer.clone());
        (self, signer)
    }

    /// A receiver of this battery's readings.
    pub fn feed(&self) -> BatteryFeed {
        self.feed.subscribe()
    }

    /// Sends the readings into `tx` (a channel made before this actor, whose receivers were
    /// handed out already).
    pub fn publish_to(mut self, tx: tokio::sync::watch::Sender<BatteryReadings>) -> Self {
        self.feed = Arc::new(tx);
        self
    }

    fn meter_fresh(&self) -> bool {
        match &self.meter {
            None => true,
            Some(m) => fresh(m.borrow().power_w, self.safe_after).is_some(),
        }
    }

    /// The grid meter's side of a reading at a metered home (`None` without a meter, or with
    /// no valid battery power: then the release cannot follow the buyers and stays unmetered).
    fn metered(&self, battery_w: Option<f64>) -> Option<Metered> {
        let meter = self.meter.as_ref()?;
        let reading = meter.borrow().power_w;
        let grid_w = fresh(reading, self.safe_after).unwrap_or(0.0);
        // When the meter read it, on the community clock (which may run faster than wall time).
        let age_ms = reading.map_or(u64::MAX, |(_, at)| {
            (at.elapsed().as_secs_f64() * 1_000.0 * self.clock.speedup()) as u64
        });
        let grid_read_ms = self.clock.now_ms().saturating_sub(age_ms);
        let (peers, mode) = self.releaser.active_peers();
        let max_age = u64::try_from(self.safe_after.as_millis()).unwrap_or(u64::MAX);
        Some(Metered {
            grid_w: grid_w.round() as i64,
            battery_w: battery_w.unwrap_or(0.0).round() as i64,
            peer_w: self
                .net_powers
                .offered_by(peers, mode, self.clock.wall_ms(), max_age),
            grid_read_ms,
        })
    }

    fn poll_once(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            return;
        }
        self.polling = true;
        let io = self.io.clone();
        let fut = async move {
            let mut io = io.lock().await;
            let Io { link, device } = &mut *io;
            let avail = device.read_available_wh(link).await;
            let bat = device.read_battery(link).await;
            (avail, bat)
        };
        ctx.spawn(fut.into_actor(self).map(|(avail, bat), act, ctx| {
            act.polling = false;
            let meter_fresh = act.meter_fresh();
            let valid = avail.valid().copied();
            act.feed.send_replace(BatteryReadings {
                available_wh: valid,
                soc_pct: bat.soc_pct.valid().copied(),
                power_w: bat.power_w.valid().copied(),
            });
            if let Ok(mut s) = act.status.lock() {
                s.available_wh = valid;
                s.soc_pct = bat.soc_pct.valid().copied();
                s.power_w = bat.power_w.valid().copied();
                let power_w = s.power_w;
                s.energy.on_reading(act.clock.now_ms(), power_w);
                if valid.is_some() {
                    s.read_at = Some(std::time::Instant::now());
                }
                if let (Some(wh), Some(soc)) = (valid, s.soc_pct) {
                    if soc > 0.5 {
                        s.capacity_wh = Some(wh / (soc / 100.0));
                    }
                }
                if !avail.is_valid() {
                    s.failed_polls += 1;
                }
                if !meter_fresh {
                    s.meter_stale_polls += 1;
                }
            }
            if !meter_fresh {
                tracing::warn!("grid meter data too old: battery to its safe state");
            }
            {
                use crate::metrics as m;
                let ok = valid.is_some();
                metrics::counter!(m::DEVICE_POLLS, "device" => "battery", "result" => if ok { "ok" } else { "error" })
                    .increment(1);
                metrics::gauge!(m::DEVICE_UP, "device" => "battery").set(if ok { 1.0 } else { 0.0 });
                if let Some(v) = valid {
                    metrics::gauge!(m::BATTERY_ENERGY).set(v);
                    metrics::gauge!(m::DEVICE_LAST_VALUE, "device" => "battery").set(m::unix_now());
                }
                if let Some(v) = bat.soc_pct.valid() {
                    metrics::gauge!(m::BATTERY_SOC).set(*v);
                }
                if let Some(v) = bat.power_w.valid() {
                    metrics::gauge!(m::BATTERY_POWER).set(*v);
                }
            }
            // Without trustworthy meter data the battery must not feed the grid.
            let valid = valid.filter(|_| meter_fresh);
            if let Reading::CommError { reason } = &avail {
                tracing::warn!(%reason, "battery not readable");
            }
            let sample = Sample {
                available_wh: valid.map(|v| v.max(0.0) as u64),
                metered: act.metered(bat.power_w.valid().copied()),
            };
            let mut actions = act.releaser.on_sample(sample, act.clock.now_ms());
            if !act.releaser.busy() {
                // The plan holds the home's exchange only when both powers are known.
                let metered = sample.metered.filter(|_| bat.power_w.valid().is_some());
                actions.extend(act.plan_actions(metered.as_ref(), meter_fresh));
            }
            let safe = act.releaser.in_safe_state();
            metrics::gauge!(crate::metrics::BATTERY_SAFE_STATE).set(if safe { 1.0 } else { 0.0 });
            if let Ok(mut s) = act.status.lock() {
                s.safe_state = safe;
            }
            act.execute(actions, ctx);
        }));
    }

    /// The set-point the day-ahead plan wants now, when it is due to be written.
    fn plan_actions(&mut self, metered: Option<&Metered>, meter_fresh: bool) -> Vec<Action> {
        let (actions, written) = self.plan.step(
            metered,
            meter_fresh,
            self.clock.now_ms(),
            self.clock.wall_ms(),
        );
        if let Some(w) = written {
            if let Ok(mut s) = self.status.lock() {
                s.plan_w = Some(w);
            }
        }
        actions
    }

    fn execute(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        let io = self.io.clone();
        let journal = self.journal.clone();
        let deliveries = self.deliveries.clone();
        let status = self.status.clone();
        let signer = self.signer.clone();
        ctx.wait(
            async move {
                for a in actions {
                    match a {
                        Action::JournalBegin {
                            trade,
                            energy_wh,
                            meter_start_wh,
                            metered,
                            charge,
                        } => {
                            let j = journal.clone();
                            let ok = tokio::task::spawn_blocking(move || {
                                j.lock().map_err(|e| e.to_string()).and_then(|mut j| {
                                    j.begin(trade, energy_wh, meter_start_wh, metered, charge)
                                        .map_err(|e| e.to_string())
                                })
                            })
                            .await;
                            if !matches!(ok, Ok(Ok(()))) {
                                // Without a durable record nothing is commanded.
                                tracing::error!(?ok, %trade, "release journal refused; not releasing");
                                return;
                            }
                            tracing::info!(%trade, energy_wh, metered, "releasing traded energy");
                            if let Some(s) = &signer {
                                // The battery counts what it moves for the trade from here.
                                let begin = gridlet_drivers::signer::SignRequest::BeginTrade {
                                    trade: trade.0,
                                    charge,
                                };
                                if let Err(e) = s.ask(begin).await {
                                    tracing::error!(%e, %trade, "the battery did not take the trade's begin: it cannot receipt it");
                                }
                            }
                        }
                        Action::JournalProgress { trade, delivered_wh } => {
                            let j = journal.clone();
                            let ok = tokio::task::spawn_blocking(move || {
                                j.lock().map_err(|e| e.to_string()).and_then(|mut j| {
                                    j.progress(trade, delivered_wh).map_err(|e| e.to_string())
                                })
                            })
                            .await;
                            if !matches!(ok, Ok(Ok(()))) {
                                tracing::error!(?ok, %trade, "release journal refused progress; stopping");
                                let mut io = io.lock().await;
                                let Io { link, device } = &mut *io;
                                let _ = device.set_battery_power(link, 0).await;
                                return;
                            }
                        }
                        Action::SetPower { power_w } => {
                            let mut io = io.lock().await;
                            let Io { link, device } = &mut *io;
                            match device.set_battery_power(link, power_w).await {
                                Ok(Ok(())) => {}
                                Ok(Err(code)) => tracing::warn!(?code, power_w, "battery refused the set-point"),
                                Err(e) => tracing::warn!(%e, power_w, "battery set-point not delivered"),
                            }
                        }
                        Action::Idle => {
                            let mut io = io.lock().await;
                            let Io { link, device } = &mut *io;
                            if let Err(e) = device.release_battery_control(link).await {
                                tracing::warn!(%e, "battery not handed back to its own control");
                            }
                        }
                        Action::JournalEnd { trade, delivered_wh } => {
                            let j = journal.clone();
                            let _ = tokio::task::spawn_blocking(move || {
                                j.lock().map_err(|e| e.to_string()).and_then(|mut j| {
                                    j.end(trade, delivered_wh).map_err(|e| e.to_string())
                                })
                            })
                            .await;
                            if let Ok(mut s) = status.lock() {
                                s.releases += 1;
                            }
                        }
                        Action::Report { trade, delivered_wh } => {
                            deliveries.send(trade, delivered_wh);
                        }
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for BatteryStorage {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Trades begun before a restart: stop the battery, close them with what was metered.
        let in_flight = self
            .journal
            .lock()
            .map(|j| !j.in_flight(0).is_empty())
            .unwrap_or_default();
        if in_flight {
            let io = self.io.clone();
            let journal = self.journal.clone();
            let deliveries = self.deliveries.clone();
            ctx.wait(
                async move {
                    let mut io = io.lock().await;
                    let Io { link, device } = &mut *io;
                    let _ = device.set_battery_power(link, 0).await;
                    let avail = device.read_available_wh(link).await.valid().copied().unwrap_or(f64::MAX);
                    let in_flight = journal
                        .lock()
                        .map(|j| j.in_flight(avail.max(0.0) as u64))
                        .unwrap_or_default();
                    for (trade, delivered) in in_flight {
                        if let Ok(mut j) = journal.lock() {
                            let _ = j.end(trade, delivered);
                        }
                        tracing::warn!(%trade, delivered, "release interrupted by a restart; closed, not repeated");
                        deliveries.send(trade, delivered);
                    }
                    let _ = device.release_battery_control(link).await;
                }
                .into_actor(self),
            );
        }
        ctx.run_interval(self.poll, |act, ctx| act.poll_once(ctx));
    }
}

impl Handler<Release> for BatteryStorage {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) {
        let known = match self.journal.lock() {
            Ok(j) => j.state(&msg.0.trade),
            Err(_) => {
                // Without the journal nothing may move: it could be a repeat.
                tracing::error!(trade = %msg.0.trade, "release journal unusable: not releasing");
                return;
            }
        };
        if let Some(state) = known {
            match state {
                ReleaseState::Done { delivered_wh } => {
                    if self.deliveries.again(msg.0.trade, delivered_wh) {
                        tracing::warn!(trade = %msg.0.trade, delivered_wh, "release finished before a restart but not reported on chain: reporting it again");
                    }
                }
                ReleaseState::InFlight { .. } => {
                    tracing::info!(trade = %msg.0.trade, "release already journaled; not repeating");
                }
            }
            return;
        }
        self.releaser.order(msg.0);
    }
}

impl Handler<BuyerPower> for BatteryStorage {
    type Result = ();

    fn handle(&mut self, msg: BuyerPower, _: &mut Context<Self>) {
        let now = self.clock.wall_ms();
        if !msg.0.verifies(&self.chain_id) || !self.net_powers.record(&msg.0, now) {
            metrics::counter!(crate::metrics::NET_POWER_REFUSED).increment(1);
            tracing::debug!(home = %msg.0.home, "net power message refused (signature or replay)");
        }
    }
}
