//! The market actor: turns the ledger's release orders for this home into battery releases,
//! and the battery's measured deliveries into signed receipts on chain; places offers (with the
//! battery's attestation) and purchases for the home.
//!
//! With a [`HomeLink`], it also trades on its own: every `decide_every` it reads the devices'
//! latest valid values and the chain's state and lets [`gridlet_core::strategy::decide`] say what to
//! offer or buy, and it carries this home's sealed bids through commit and reveal.

use crate::attestor::{AttestError, Attestor};
use actix::prelude::*;
use gridlet_ledger::market::MarketEvent;
use gridlet_ledger::tx::Attestation;
use gridlet_ledger::{DeliveryMode, Hash32, MemberKey, Price, TxPayload, WattHours};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::battery::{BatteryFeed, BatteryStorage, Delivered, Release};
use crate::devices::{fresh, MeterFeed};
use crate::ledger_actor::{ChainEvents, Clock, GetState, LedgerActor, SignAndSubmit, SubmitError};
use gridlet_core::bids::{BidBook, BidProgress, SealedBid};
use gridlet_core::release::ReleaseOrder;
use gridlet_core::strategy::{
    decide, fresh_attestation_wh, ChainView, Decision, HomeReadings, StrategyConfig,
};
use gridlet_ledger::market::MarketState;

/// What the market actor knows of its home, for trading on its own.
#[derive(Debug, Clone)]
pub struct HomeLink {
    /// The strategy.
    pub strategy: StrategyConfig,
    /// How often to look (real time).
    pub decide_every: Duration,
    /// The grid meter's readings.
    pub meter: Option<MeterFeed>,
    /// The battery's readings.
    pub battery: Option<BatteryFeed>,
    /// Meter values older than this are not traded on.
    pub max_age: Duration,
    /// Data directory (the bid book lives there).
    pub data_dir: PathBuf,
    /// Blocks per auction round (0: no auctions).
    pub auction_round_blocks: u64,
    /// The home's forecast: with it, offers keep back what the home will need itself
    /// ([`gridlet_core::spare`]); without it, the strategy's reserve alone.
    pub forecast: Option<gridlet_core::schedule::HomeData>,
}

/// Why a bid was not placed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BidError {
    /// The gateway has no home set up (no data dir for the salts).
    #[error("this gateway is not set up to bid")]
    NotSetUp,
    /// The community's genesis has no auction rounds.
    #[error("the community runs no auctions")]
    NoAuctions,
    /// A bid for nothing.
    #[error("energy_wh must be positive")]
    ZeroEnergy,
    /// The OS gave no randomness for the salt.
    #[error("no randomness for the salt: {0}")]
    NoRandomness(std::io::Error),
    /// The book (with the salt) could not be written; the bid was not placed.
    #[error(transparent)]
    NotStored(#[from] crate::bids::BidFileError),
}

/// Place a sealed bid in the next auction round.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), BidError>")]
pub struct PlaceBid {
    /// Energy wanted.
    pub energy_wh: WattHours,
    /// Price.
    pub price: Price,
}

/// This home's bids and how far they got.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<(SealedBid, BidProgress)>")]
pub struct GetBids;

/// What the market actor did (for the API and metrics).
#[derive(Debug, Clone, Default)]
pub struct MarketStatus {
    /// Offers the strategy or the API made.
    pub offers: u64,
    /// Purchases made.
    pub purchases: u64,
    /// Bids committed.
    pub bids_committed: u64,
    /// Bids revealed.
    pub bids_revealed: u64,
    /// Release orders passed to the battery.
    pub releases: u64,
    /// Deliveries receipted.
    pub deliveries: u64,
    /// Deliveries of less than the traded energy.
    pub short_deliveries: u64,
    /// Energy this home sold or bought on the chain, Wh.
    pub traded_wh: u64,
    /// This home's balance, micro-credits (once the chain was read).
    pub balance: Option<u64>,
}

/// Offer energy the battery stored: attests it (battery key) and offers it in one sale.
/// Answers with the sale's transaction id, or why it was not offered.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Hash32, SubmitError>")]
pub struct Offer {
    /// Discharge (the battery's energy) or charge (PV surplus into the buyer's battery).
    pub mode: DeliveryMode,
    /// Market interval of the attested generation.
    pub interval: u64,
    /// Energy attested and offered.
    pub energy_wh: WattHours,
    /// Price.
    pub price: Price,
    /// Last height the offer can be bought at.
    pub expiry_height: u64,
}

/// Buy a sale contract. Answers with the purchase's transaction id, or why it was refused.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<Hash32, SubmitError>")]
pub struct Buy {
    /// The contract id.
    pub contract: Hash32,
    /// The exact payment.
    pub payment: gridlet_ledger::MicroCredits,
}

/// Slots kept between the end of a release and its trade's deadline, for the receipt to land.
const REPORT_MARGIN_BLOCKS: u64 = 5;

/// The market actor.
pub struct MarketActor {
    me: MemberKey,
    /// Who signs the home's claims; without a battery nothing is attested, offered or
    /// receipted.
    attestor: Attestor,
    chain_id: Hash32,
    slot_ms: u64,
    clock: Clock,
    ledger: Addr<LedgerActor>,
    battery: Option<Addr<BatteryStorage>>,
    home: Option<HomeLink>,
    bids: BidBook,
    /// No strategy decision until the chain reaches this height (what was sent is in flight).
    hold_until_height: u64,
    deciding: bool,
    /// Energy of release orders by trade (to spot short deliveries).
    ordered: std::collections::BTreeMap<Hash32, u64>,
    status: Arc<Mutex<MarketStatus>>,
    /// While trades deliver to this home, its net power goes on the bus.
    buying: Option<crate::net_power::BuyingUntil>,
    /// Released trades whose other side follows this home's net power (it buys a discharge,
    /// or sells a charge) and that have not settled, with their end (clock ms).
    receiving: std::collections::BTreeMap<Hash32, u64>,
}

impl MarketActor {
    /// A market actor for member `me` whose claims `attestor` signs.
    pub fn new(
        me: MemberKey,
        attestor: Attestor,
        chain_id: Hash32,
        slot_ms: u64,
        clock: Clock,
        ledger: Addr<LedgerActor>,
    ) -> Self {
        MarketActor {
            me,
            attestor,
            chain_id,
            slot_ms,
            clock,
            ledger,
            battery: None,
            home: None,
            bids: BidBook::default(),
            hold_until_height: 0,
            deciding: false,
            ordered: std::collections::BTreeMap::new(),
            status: Arc::default(),
            buying: None,
            receiving: std::collections::BTreeMap::new(),
        }
    }

    /// Until when a neighbour delivers to this home (0: nobody does).
    fn receiving_until(&self) -> u64 {
        self.receiving.values().copied().max().unwrap_or(0)
    }

    /// Trades on its own for this home, and keeps its bids in `home.data_dir`.
    pub fn with_home(mut self, home: HomeLink) -> Result<Self, crate::bids::BidFileError> {
        self.bids = crate::bids::load_bids(&home.data_dir)?;
        self.home = Some(home);
        Ok(self)
    }

    /// Shares the counters.
    pub fn with_status(mut self, status: Arc<Mutex<MarketStatus>>) -> Self {
        self.status = status;
        self
    }

    fn count(&self, f: impl FnOnce(&mut MarketStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
            use crate::metrics as m;
            // The status is the one tally; the counters follow it.
            metrics::counter!(m::MARKET_OFFERS).absolute(s.offers);
            metrics::counter!(m::MARKET_PURCHASES).absolute(s.purchases);
            metrics::counter!(m::MARKET_BIDS, "phase" => "commit").absolute(s.bids_committed);
            metrics::counter!(m::MARKET_BIDS, "phase" => "reveal").absolute(s.bids_revealed);
            metrics::counter!(m::MARKET_RELEASES).absolute(s.releases);
            metrics::counter!(m::MARKET_DELIVERIES).absolute(s.deliveries);
            metrics::counter!(m::MARKET_FAILED_DELIVERIES).absolute(s.short_deliveries);
        }
    }

    fn readings(home: &HomeLink, now_ms: u64) -> HomeReadings {
        let grid_w = home
            .meter
            .as_ref()
            .and_then(|m| fresh(m.borrow().power_w, home.max_age));
        let b = home
            .battery
            .as_ref()
            .map(|b| *b.borrow())
            .unwrap_or_default();
        let (battery_wh, soc_pct, battery_w) = (b.available_wh, b.soc_pct, b.power_w);
        let spare_wh = home.forecast.as_ref().map(|f| {
            battery_wh.map_or(0.0, |stored| {
                gridlet_core::spare::spare_wh(f, now_ms, stored)
            })
        });
        HomeReadings {
            grid_w,
            battery_wh,
            soc_pct,
            battery_w,
            spare_wh,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.deciding || self.home.is_none() {
            return;
        }
        self.deciding = true;
        let fut = self.ledger.send(GetState);
        ctx.spawn(fut.into_actor(self).map(|state, act, _| {
            act.deciding = false;
            if let Ok(Some(state)) = state {
                act.on_state(&state);
            }
        }));
    }

    fn on_state(&mut self, state: &gridlet_ledger::LedgerState) {
        {
            use crate::metrics as m;
            let market = state.market();
            metrics::counter!(m::MARKET_TRADES).absolute(market.trades.len() as u64);
            let traded = market
                .trades
                .values()
                .fold(0u64, |acc, t| acc.saturating_add(t.energy_wh.get()));
            metrics::counter!(m::MARKET_TRADED_WH).absolute(traded);
            if let Some(t) = market.trades.values().max_by_key(|t| t.traded_height) {
                if !t.energy_wh.is_zero() {
                    // Payment per Wh × 1000: the price per kWh the trade settled at.
                    let price = u128::from(t.payment.get()) * 1000 / u128::from(t.energy_wh.get());
                    metrics::gauge!(m::MARKET_LAST_PRICE).set(price as f64);
                }
            }
            metrics::gauge!(m::MARKET_ESCROW).set(market.escrow.get() as f64);
            let balance = state.account(&self.me).balance;
            metrics::gauge!(m::MARKET_BALANCE).set(balance.get() as f64);
            let mine = market
                .trades
                .values()
                .filter(|t| t.seller == self.me || t.payers.iter().any(|(p, _)| *p == self.me))
                .fold(0u64, |acc, t| acc.saturating_add(t.energy_wh.get()));
            if let Ok(mut s) = self.status.lock() {
                s.traded_wh = mine;
                s.balance = Some(balance.get());
            }
        }
        let Some(home) = self.home.clone() else {
            return;
        };
        let next_height = state.height.saturating_add(1);
        let bid_txs = self.bids.step(
            &self.chain_id,
            &self.me,
            home.auction_round_blocks,
            next_height,
        );
        if !bid_txs.is_empty() {
            // The salts go to disk before any commitment leaves this home.
            if let Err(e) = crate::bids::save_bids(&self.bids, &home.data_dir) {
                tracing::error!(%e, "cannot save the bid book; not bidding");
                return;
            }
            for tx in bid_txs {
                match tx {
                    TxPayload::BidCommit { .. } => self.count(|s| s.bids_committed += 1),
                    _ => self.count(|s| s.bids_revealed += 1),
                }
                self.ledger.do_send(SignAndSubmit(tx));
            }
        }
        if state.height < self.hold_until_height {
            return;
        }
        let balance = state.account(&self.me).balance;
        let decisions = decide(
            &home.strategy,
            &self.me,
            self.clock.now_ms(),
            &Self::readings(&home, self.clock.now_ms()),
            &ChainView {
                height: state.height,
                market: state.market(),
                balance,
                auction_round_blocks: home.auction_round_blocks,
                bid_pending: !self.bids.bids.is_empty(),
                attest_bound: WattHours::new(
                    state
                        .membership()
                        .equipment(&self.me)
                        .map_or(0, |e| e.attest_bound_wh()),
                ),
            },
        );
        for d in decisions {
            // Give the chain two blocks to include it before deciding again.
            self.hold_until_height = state.height.saturating_add(2);
            match d {
                Decision::Offer {
                    mode,
                    interval,
                    energy_wh,
                    price,
                    expiry_height,
                } => {
                    match mode {
                        DeliveryMode::Discharge => {
                            tracing::info!(%energy_wh, %price, "offering stored energy")
                        }
                        DeliveryMode::Charge => tracing::info!(
                            %energy_wh,
                            %price,
                            "battery full: offering PV surplus into a neighbour's battery"
                        ),
                    }
                    self.offer(
                        Offer {
                            mode,
                            interval,
                            energy_wh,
                            price,
                            expiry_height,
                        },
                        state.market(),
                    );
                }
                Decision::Join {
                    round,
                    interval,
                    energy_wh,
                } => {
                    tracing::info!(
                        round,
                        %energy_wh,
                        "pooling stored energy in an auction round"
                    );
                    self.count(|s| s.offers += 1);
                    let fresh = fresh_attestation_wh(state.market(), &self.me, energy_wh);
                    self.submit_attested(interval, fresh, move |attestation| {
                        TxPayload::AuctionJoin {
                            round,
                            energy_wh,
                            attestation,
                        }
                    });
                }
                Decision::Bid { energy_wh, price } => match self.place_bid(energy_wh, price) {
                    Ok(()) => {
                        tracing::info!(%energy_wh, %price, "bidding in the next auction round")
                    }
                    Err(e) => tracing::error!(%e, "not bidding"),
                },
                Decision::Buy { contract, payment } => {
                    tracing::info!(%contract, %payment, "buying energy");
                    self.count(|s| s.purchases += 1);
                    self.ledger
                        .do_send(SignAndSubmit(TxPayload::Purchase { contract, payment }));
                }
            }
        }
    }

    /// Has `fresh` Wh (if any) attested for `interval` — by the battery, or the gateway's key —
    /// then submits the transaction `build` makes with it. A claim the signer refuses is
    /// logged and counted, and nothing is sent.
    fn submit_attested(
        &self,
        interval: u64,
        fresh: Option<WattHours>,
        build: impl FnOnce(Option<Attestation>) -> TxPayload + 'static,
    ) {
        let (attestor, chain_id, me, ledger) = (
            self.attestor.clone(),
            self.chain_id,
            self.me,
            self.ledger.clone(),
        );
        actix::spawn(async move {
            match fresh_attestation(&attestor, &chain_id, &me, interval, fresh).await {
                Ok(attestation) => ledger.do_send(SignAndSubmit(build(attestation))),
                Err(e) => tracing::warn!(%e, "not offering"),
            }
        });
    }

    /// Adds a sealed bid and writes the book (with its salt) to disk before anything is sent.
    fn place_bid(&mut self, energy_wh: WattHours, price: Price) -> Result<(), BidError> {
        let Some(home) = &self.home else {
            return Err(BidError::NotSetUp);
        };
        let salt = random_salt().map_err(BidError::NoRandomness)?;
        self.bids.add(energy_wh, price, salt);
        if let Err(e) = crate::bids::save_bids(&self.bids, &home.data_dir) {
            self.bids.bids.pop();
            return Err(e.into());
        }
        Ok(())
    }

    /// The strategy's offer (a refusal is logged and counted by the ledger actor).
    fn offer(&mut self, msg: Offer, market: &MarketState) {
        self.count(|s| s.offers += 1);
        let fresh = fresh_attestation_wh(market, &self.me, msg.energy_wh);
        self.submit_attested(msg.interval, fresh, move |attestation| {
            sale_payload(msg, attestation)
        });
    }

    /// Publishes this home's net power while trades deliver to it (through `window`).
    pub fn with_buying_window(mut self, window: crate::net_power::BuyingUntil) -> Self {
        self.buying = Some(window);
        self
    }

    /// Sets who signs this home's claims (the battery, once its actor exists).
    pub fn with_attestor(mut self, attestor: Attestor) -> Self {
        self.attestor = attestor;
        self
    }

    /// Sets the battery that releases this home's energy.
    pub fn with_battery(mut self, battery: Addr<BatteryStorage>) -> Self {
        self.battery = Some(battery);
        self
    }
}

impl Actor for MarketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = &self.home {
            ctx.run_interval(h.decide_every, |act, ctx| act.tick(ctx));
        }
    }
}

/// 32 random bytes from the operating system (a bid's salt must not be guessable), through
/// `getrandom` (getrandom(2), no file to open).
fn random_salt() -> std::io::Result<Hash32> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    Ok(Hash32(b))
}

impl Handler<PlaceBid> for MarketActor {
    type Result = Result<(), BidError>;

    fn handle(&mut self, msg: PlaceBid, _: &mut Context<Self>) -> Self::Result {
        let Some(home) = &self.home else {
            return Err(BidError::NotSetUp);
        };
        if home.auction_round_blocks == 0 {
            return Err(BidError::NoAuctions);
        }
        if msg.energy_wh.is_zero() {
            return Err(BidError::ZeroEnergy);
        }
        self.place_bid(msg.energy_wh, msg.price)
    }
}

impl Handler<GetBids> for MarketActor {
    type Result = Vec<(SealedBid, BidProgress)>;

    fn handle(&mut self, _: GetBids, _: &mut Context<Self>) -> Self::Result {
        self.bids.progress()
    }
}

impl Handler<ChainEvents> for MarketActor {
    type Result = ();

    fn handle(&mut self, msg: ChainEvents, _: &mut Context<Self>) {
        let receiving_before = self.receiving_until();
        for e in msg.events {
            if let MarketEvent::Settled { trade, .. } = &e {
                self.receiving.remove(trade);
            }
            if let MarketEvent::Release {
                trade,
                seller,
                buyers,
                share_ppm,
                mode,
                energy_wh,
                deadline_height,
            } = e
            {
                // The receipt must be in a block by the deadline: stop releasing a few slots
                // before it (a quarter of the window at most).
                let blocks_left = deadline_height.saturating_sub(msg.height);
                let margin = REPORT_MARGIN_BLOCKS.min(blocks_left / 4);
                let deadline_ms = self.clock.now_ms().saturating_add(
                    blocks_left
                        .saturating_sub(margin)
                        .saturating_mul(self.slot_ms),
                );
                // A discharge: the seller's battery moves the energy, following the buyers'
                // import. A charge: the buyer's battery moves it, following the seller's export.
                let (mover, peers) = match mode {
                    DeliveryMode::Discharge => (seller, buyers),
                    DeliveryMode::Charge => {
                        (buyers.first().copied().unwrap_or(seller), vec![seller])
                    }
                };
                if peers.contains(&self.me) {
                    // The other side's battery follows this home's meter until the trade settles.
                    self.receiving.insert(trade, deadline_ms);
                }
                if mover != self.me {
                    continue;
                }
                let order = ReleaseOrder {
                    trade,
                    energy_wh: energy_wh.get(),
                    deadline_ms,
                    peers,
                    share_ppm,
                    mode,
                };
                match &self.battery {
                    Some(b) => {
                        tracing::info!(%trade, %energy_wh, "trade final: releasing");
                        self.ordered.insert(trade, energy_wh.get());
                        self.count(|s| s.releases += 1);
                        b.do_send(Release(order));
                    }
                    None => tracing::error!(%trade, "trade final but no battery is configured"),
                }
            }
        }
        let until = self.receiving_until();
        if until != receiving_before {
            // While a neighbour delivers, this home's net power goes on the bus, until the last
            // such trade settled. Its own battery keeps its control: the neighbour covers what
            // the home still imports (holding the battery back only moved energy between
            // batteries and raised the community's import in `gridlet sim`).
            if let Some(w) = &self.buying {
                w.set(until);
            }
        }
    }
}

impl Handler<Delivered> for MarketActor {
    type Result = ();

    fn handle(&mut self, msg: Delivered, _: &mut Context<Self>) {
        tracing::info!(trade = %msg.trade, delivered_wh = msg.delivered_wh, "reporting delivery");
        let short = self
            .ordered
            .remove(&msg.trade)
            .is_some_and(|wh| msg.delivered_wh < wh);
        self.count(|s| {
            s.deliveries += 1;
            if short {
                s.short_deliveries += 1;
            }
        });
        let (attestor, chain_id, ledger) =
            (self.attestor.clone(), self.chain_id, self.ledger.clone());
        actix::spawn(async move {
            let trade = msg.trade;
            let mut delivered = WattHours::new(msg.delivered_wh);
            let mut signed = attestor.receipt(&chain_id, &trade, delivered).await;
            // The battery measured less than the gateway counted: report what both vouch for.
            if let Err(AttestError::Refused { limit_wh, .. }) = &signed {
                tracing::warn!(%trade, counted = delivered.get(), battery = limit_wh, "the battery vouches for less than was counted; reporting its figure");
                delivered = WattHours::new(*limit_wh);
                signed = attestor.receipt(&chain_id, &trade, delivered).await;
            }
            match signed {
                Ok(receipt) => ledger.do_send(SignAndSubmit(TxPayload::Deliver {
                    trade,
                    delivered_wh: delivered,
                    receipt,
                })),
                Err(e) => {
                    metrics::counter!(crate::metrics::CLAIMS_UNSIGNED, "kind" => "receipt")
                        .increment(1);
                    tracing::error!(%e, %trade, "delivery not receipted: the trade will be refunded at its deadline");
                }
            }
        });
    }
}

impl Handler<Offer> for MarketActor {
    type Result = ResponseFuture<Result<Hash32, SubmitError>>;

    /// An offer from the API: attested only if the battery holds it now (above its reserve,
    /// beyond what is already promised), so no request can make the gateway claim energy it
    /// does not have.
    fn handle(&mut self, msg: Offer, _: &mut Context<Self>) -> Self::Result {
        let refuse = |reason: String| -> Self::Result {
            Box::pin(std::future::ready(Err(SubmitError::Refused(reason))))
        };
        let Some(home) = &self.home else {
            return refuse("no battery readings: this gateway cannot tell what it can sell".into());
        };
        let readings = Self::readings(home, self.clock.now_ms());
        let reserve_pct = home.strategy.reserve_soc_pct;
        self.count(|s| s.offers += 1);
        let (ledger, me, chain_id, attestor) = (
            self.ledger.clone(),
            self.me,
            self.chain_id,
            self.attestor.clone(),
        );
        Box::pin(async move {
            let state = ledger
                .send(GetState)
                .await
                .ok()
                .flatten()
                .ok_or(SubmitError::Unavailable)?;
            // The battery (or the gateway's key) signs only after the checks below passed.
            if !attestor.is_some() {
                return Err(SubmitError::Refused(AttestError::NoSigner.to_string()));
            }
            if msg.mode == DeliveryMode::Charge {
                // PV surplus into a neighbour's battery: bounded by what this home exports now.
                let surplus =
                    gridlet_core::strategy::surplus_now(readings.grid_w).ok_or_else(|| {
                        SubmitError::Refused(
                        "the grid meter has no fresh reading: this gateway cannot tell its surplus"
                            .into(),
                    )
                    })?;
                if msg.energy_wh > surplus {
                    return Err(SubmitError::Refused(format!(
                        "charge offer of {} Wh is more than this home's surplus now: {} Wh (an \
                         hour of what it exports at this moment)",
                        msg.energy_wh.get(),
                        surplus.get(),
                    )));
                }
                let payload = attested_sale(&attestor, &chain_id, &me, state.market(), msg).await?;
                return ledger
                    .send(SignAndSubmit(payload))
                    .await
                    .unwrap_or(Err(SubmitError::Unavailable));
            }
            let sellable = gridlet_core::strategy::sellable_now(
                reserve_pct,
                readings.battery_wh,
                readings.soc_pct,
                readings.spare_wh,
                state.market(),
                &me,
            )
            .ok_or_else(|| {
                SubmitError::Refused(
                    "the battery's stored energy is not known (no valid reading): nothing to offer"
                        .into(),
                )
            })?;
            if msg.energy_wh > sellable.sellable {
                return Err(SubmitError::Refused(format!(
                    "offer of {} Wh is more than the battery can sell now: {} Wh ({} Wh stored, \
                     {} Wh kept as {}, {} Wh already promised)",
                    msg.energy_wh.get(),
                    sellable.sellable.get(),
                    sellable.stored.get(),
                    sellable.reserve.get(),
                    if sellable.by_forecast {
                        format!("the home's own need by its forecast (at least the {reserve_pct} % reserve)")
                    } else {
                        format!("the {reserve_pct} % reserve")
                    },
                    sellable.promised.get(),
                )));
            }
            let payload = attested_sale(&attestor, &chain_id, &me, state.market(), msg).await?;
            ledger
                .send(SignAndSubmit(payload))
                .await
                .unwrap_or(Err(SubmitError::Unavailable))
        })
    }
}

impl Handler<Buy> for MarketActor {
    type Result = ResponseFuture<Result<Hash32, SubmitError>>;

    fn handle(&mut self, msg: Buy, _: &mut Context<Self>) -> Self::Result {
        self.count(|s| s.purchases += 1);
        let sent = self.ledger.send(SignAndSubmit(TxPayload::Purchase {
            contract: msg.contract,
            payment: msg.payment,
        }));
        Box::pin(async move { sent.await.unwrap_or(Err(SubmitError::Unavailable)) })
    }
}

/// A sale of `msg`'s energy with `attestation` riding along (if any was needed).
fn sale_payload(msg: Offer, attestation: Option<Attestation>) -> TxPayload {
    TxPayload::Sale {
        mode: msg.mode,
        energy_wh: msg.energy_wh,
        price: msg.price,
        expiry_height: msg.expiry_height,
        attestation,
    }
}

/// A sale of `msg`'s energy for the API. Only what the chain does not already hold as this
/// home's sellable energy is attested afresh (an expired offer's energy is offered again, not
/// claimed twice); the signer's refusal is the answer's error.
async fn attested_sale(
    attestor: &Attestor,
    chain_id: &Hash32,
    me: &MemberKey,
    market: &MarketState,
    msg: Offer,
) -> Result<TxPayload, SubmitError> {
    let fresh = fresh_attestation_wh(market, me, msg.energy_wh);
    let attestation = fresh_attestation(attestor, chain_id, me, msg.interval, fresh)
        .await
        .map_err(|e| SubmitError::Refused(e.to_string()))?;
    Ok(sale_payload(msg, attestation))
}

/// `fresh` Wh (if any) attested for `interval` by whoever signs this home's claims; a refusal
/// is counted.
async fn fresh_attestation(
    attestor: &Attestor,
    chain_id: &Hash32,
    me: &MemberKey,
    interval: u64,
    fresh: Option<WattHours>,
) -> Result<Option<Attestation>, AttestError> {
    let Some(wh) = fresh else {
        return Ok(None);
    };
    attestor
        .attest(chain_id, me, interval, wh)
        .await
        .map(Some)
        .inspect_err(|_| {
            metrics::counter!(crate::metrics::CLAIMS_UNSIGNED, "kind" => "attestation")
                .increment(1);
        })
}
