//! `gridlet run --config FILE`: one home's gateway — wiring only. The configuration is in
//! [`crate::config`], device discovery in [`crate::discovery`], what the API reads in
//! [`crate::status`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use gridlet_actors::attestor::Attestor;
use gridlet_actors::battery::BatteryStorage;
use gridlet_actors::bus::{self, BusConfig};
use gridlet_actors::devices::{fresh, GridMeter, MeterStatus, PvInverter, PvStatus};
use gridlet_actors::home_assistant::HaState;
use gridlet_actors::ledger_actor::{forward_bus, LedgerActor, LedgerStatus, NodeWorker};
use gridlet_actors::ledger_actor::{RouteNetPower, RouteProposals, Subscribe};
use gridlet_actors::market_actor::HomeLink;
use gridlet_actors::market_actor::MarketActor;
use gridlet_core::node::{Node, NodeConfig};
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_ledger::store::{open_store, SignerGuard, VoteGuard};
use gridlet_ledger::MemberKey;

use crate::{chain_cmd, keys};

use crate::config::GatewayConfig;
use crate::discovery::{connect_battery, pv_target};
use crate::status::{install_metrics, Statuses};

/// Runs the gateway until SIGINT or SIGTERM.
pub fn run(cfg: GatewayConfig) -> Result<()> {
    let metrics = install_metrics()?;
    let genesis = chain_cmd::load_genesis(&cfg.genesis)?;
    cfg.strategy
        .check(genesis.floor_price, genesis.grid_tariff)
        .map_err(|e| anyhow::anyhow!("config field `{e}`"))?;
    chain_cmd::install_genesis(&cfg.data_dir, &genesis)?;
    let sk = keys::load_secret(&cfg.key_file).with_context(|| "config field `key_file`")?;
    // Everything that can fail on a file is read before the actor system starts: an error
    // inside it would leave actors to be dropped without their runtime.
    let attestor = match &cfg.attestor_key_file {
        Some(p) => Some(keys::load_secret(p).with_context(|| "config field `attestor_key_file`")?),
        None => None,
    };
    let me = MemberKey::from_secret(&sk);
    let name = cfg
        .name
        .clone()
        .unwrap_or_else(|| format!("home-{}", me.short()));
    let (chain, report) = open_store(&cfg.data_dir, genesis.clone(), 1_000)
        .with_context(|| format!("cannot open the chain in {}", cfg.data_dir.display()))?;
    if let Some(blocks) = chain.store().migrated() {
        tracing::info!(
            blocks,
            "moved the chain from blocks.sled to blocks.redb (the old store is kept as blocks.sled.migrated)"
        );
    }
    if report.bad_certificates > 0 {
        tracing::warn!(
            count = report.bad_certificates,
            "stored certificates did not verify; their blocks stay non-final until peers resend them"
        );
    }
    if let Some((from, count, reason)) = &report.dropped {
        tracing::warn!(from, count, %reason, "dropped stored blocks that did not verify; peers will resend them");
    }
    if let Some((acknowledged, kept)) = report.lost_final {
        tracing::error!(
            acknowledged,
            kept,
            "the block store lost final blocks it had acknowledged (power cut or damage); peers will resend them"
        );
    }
    if let Some(reason) = &report.mark_unreadable {
        tracing::warn!(%reason, "cannot tell whether the block store lost final blocks");
    }
    tracing::info!(height = chain.chain().head_height(), %name, "chain opened");
    if !chain.chain().head_state().membership().contains(&me) {
        // A joining home syncs and follows the chain; it produces and votes once a member
        // proposal admitting it is final (`gridlet member propose --add` on a member's gateway).
        tracing::warn!(
            key = %me,
            community = %genesis.chain_id,
            "this key is not a member (yet): following the chain as an observer"
        );
    }
    let signer = choose_signer(&cfg, &me, chain.chain().head_state().membership(), attestor)?;
    let final_at_start = chain.chain().finalized();
    let height = chain.chain().head_height();
    let guard = SignerGuard::open(&cfg.data_dir, height)?;
    let votes = VoteGuard::open(&cfg.data_dir, height)?;
    let node = Node::new(
        NodeConfig {
            name: name.clone(),
            max_mempool: cfg.max_mempool,
            sync_batch: 200,
            last_slot: cfg.end_ms.map_or(u64::MAX, |end| genesis.slot_at(end)),
        },
        sk,
        chain,
        guard,
        votes,
    );
    if cfg.embedded {
        bus::start_embedded_broker_on(
            std::net::SocketAddr::new(cfg.embedded_bind, cfg.broker.1),
            8 * 1024 * 1024,
        )
        .context("embedded broker")?;
        tracing::info!(bind = %cfg.embedded_bind, port = cfg.broker.1, "embedded MQTT broker started");
    }
    let system = actix::System::new();
    system.block_on(async move {
        let bus_cfg = BusConfig {
            host: cfg.broker.0.clone(),
            port: cfg.broker.1,
            node: name.clone(),
            prefix: cfg.prefix.clone(),
            chain_id: genesis.hash().to_hex(),
            persistent_session: cfg.persistent_session,
            backoff: BackoffPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(30),
            },
            max_packet_bytes: 8 * 1024 * 1024,
        };
        let upkeep = metrics.clone();
        actix::spawn(async move {
            // Histograms drain into their buckets here.
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        let (bus, events, _bus_task) = bus::spawn(bus_cfg);
        let node_cell = std::sync::Mutex::new(Some(node));
        let worker = actix::SyncArbiter::start(1, move || {
            NodeWorker::new(
                node_cell
                    .lock()
                    .ok()
                    .and_then(|mut n| n.take())
                    .expect("the node worker is started exactly once"),
            )
        });
        let status = Arc::new(Mutex::new(LedgerStatus {
            finalized: final_at_start.1,
            recent_final: std::iter::once((final_at_start.1, final_at_start.0)).collect(),
            ..LedgerStatus::default()
        }));
        let actor = actix::Actor::start(LedgerActor::new(
            worker,
            bus.clone(),
            cfg.clock,
            cfg.tick,
            status.clone(),
        ));
        forward_bus(events, actor.clone());
        let mut statuses = Statuses::default();
        let mut meter_feed = None;
        if let Some(m) = &cfg.meter {
            let status = Arc::new(Mutex::new(MeterStatus::default()));
            let meter = GridMeter::new(
                m.clone(),
                cfg.meter_max_age,
                BackoffPolicy {
                    initial: Duration::from_millis(500),
                    max: Duration::from_secs(30),
                },
                status.clone(),
            );
            meter_feed = Some(meter.feed());
            actix::Supervisor::start(move |_| meter);
            statuses.meter = Some(status);
        }
        if let Some(p) = &cfg.pv {
            // The inverter is found in the background: a gateway that boots before it runs
            // (API, metrics, ledger) and reports it down until it answers.
            let status = Arc::new(Mutex::new(PvStatus::default()));
            let pv = PvInverter::discovering(
                pv_target(p),
                Duration::from_millis(p.poll_ms),
                status.clone(),
            );
            actix::Supervisor::start(move |_| pv);
            statuses.pv = Some(status);
        }
        let battery = match (&cfg.battery, &signer) {
            (Some(b), Some(_)) => {
                Some(connect_battery(b, &cfg.data_dir, cfg.clock, genesis.hash()).await?)
            }
            _ => None,
        };
        statuses.battery = battery
            .as_ref()
            .map(|_| Arc::new(Mutex::new(gridlet_actors::battery::BatteryStatus::default())));
        let chain_id = genesis.hash();
        let slot_ms = genesis.slot_ms;
        let ledger = actor.clone();
        // Decide a few times per strategy period, but at least once a second of wall time.
        let decide_every = Duration::from_secs_f64(
            (cfg.strategy.period_ms as f64 / cfg.clock.speedup() / 4_000.0).clamp(0.05, 1.0),
        );
        let (battery_tx, battery_rx) =
            tokio::sync::watch::channel(gridlet_actors::battery::BatteryReadings::default());
        let home = HomeLink {
            strategy: cfg.strategy,
            decide_every,
            meter: meter_feed.clone(),
            battery: battery.as_ref().map(|_| battery_rx),
            max_age: cfg.meter_max_age,
            data_dir: cfg.data_dir.clone(),
            auction_round_blocks: genesis.market.auction_round_blocks,
            forecast: cfg.forecast.clone(),
        };
        let buying = gridlet_actors::net_power::BuyingUntil::default();
        if let Some(m) = &meter_feed {
            gridlet_actors::net_power::spawn(
                m.clone(),
                bus.clone(),
                chain_id,
                sk,
                cfg.clock,
                cfg.meter_max_age,
                buying.clone(),
            );
        }
        let gateway_signer = match &signer {
            Some(Signer::Gateway(key)) => Attestor::Gateway(*key),
            _ => Attestor::None,
        };
        let market_actor =
            MarketActor::new(me, gateway_signer, chain_id, slot_ms, cfg.clock, ledger)
                .with_status(statuses.market.clone())
                .with_buying_window(buying)
                .with_home(home)?;
        let bstatus = statuses.battery.clone();
        let meter_for_battery = meter_feed.clone();
        // The battery actor is made inside the market actor's context (its deliveries go
        // there); the day-ahead actor needs its address too.
        let battery_addr: Arc<Mutex<Option<actix::Addr<BatteryStorage>>>> =
            Arc::new(Mutex::new(None));
        let battery_slot = battery_addr.clone();
        let route_power = actor.clone();
        let market = actix::Actor::create(move |ctx: &mut actix::Context<MarketActor>| {
            match (battery, bstatus) {
                (Some((link, device, journal, settings)), Some(bstatus)) => {
                    let mut b = BatteryStorage::new(
                        link,
                        device,
                        journal,
                        settings,
                        actix::AsyncContext::address(ctx).recipient(),
                        bstatus,
                    );
                    let mut market_actor = market_actor;
                    if let Some(Signer::Device(expected)) = signer {
                        let (signing, device_signer) = b.signing(expected);
                        b = signing;
                        market_actor = market_actor.with_attestor(Attestor::Device(device_signer));
                    }
                    b = b.publish_to(battery_tx);
                    if let Some(m) = meter_for_battery {
                        b = b.watch_meter(m);
                    }
                    let addr = actix::Actor::start(b);
                    route_power.do_send(RouteNetPower(addr.clone().recipient()));
                    if let Ok(mut slot) = battery_slot.lock() {
                        *slot = Some(addr.clone());
                    }
                    market_actor.with_battery(addr)
                }
                _ => market_actor,
            }
        });
        actor.do_send(Subscribe(market.clone().recipient()));
        let day_ahead_status = Arc::new(Mutex::new(
            gridlet_actors::day_ahead::DayAheadStatus::default(),
        ));
        match (&cfg.schedule, &genesis.schedule) {
            (Some(setup), Some(params)) => {
                let meter = meter_feed
                    .clone()
                    .context("[schedule] needs a [meter]: billing runs on its readings")?;
                let meter_key = attestor
                    .context("[schedule] needs attestor_key_file: it signs the meter readings")?;
                let battery = battery_addr
                    .lock()
                    .ok()
                    .and_then(|b| b.clone())
                    .map(actix::Addr::recipient);
                if battery.is_none() {
                    tracing::warn!(
                        "no battery: the day-ahead plan is agreed and billed, not followed"
                    );
                }
                let day_ahead = gridlet_actors::day_ahead::DayAheadActor::new(
                    gridlet_actors::day_ahead::DayAheadConfig {
                        chain_id,
                        params: params.clone(),
                        grid_tariff: genesis.grid_tariff.get(),
                        members: genesis.member_public_keys()?,
                        me,
                        key: sk,
                        meter_key,
                        forecast: setup.forecast.clone(),
                        wear: setup.wear,
                        lead_ms: setup.lead_ms,
                        clock: cfg.clock,
                        tick: Duration::from_millis(100),
                        resend_ms: setup.resend_ms,
                        deadline_ms: setup.deadline_ms,
                        data_dir: cfg.data_dir.clone(),
                        meter_max_age: cfg.meter_max_age,
                    },
                    actor.clone(),
                    bus.clone(),
                    battery,
                    meter,
                    day_ahead_status.clone(),
                )
                .with_context(|| {
                    format!(
                        "cannot read {}",
                        cfg.data_dir.join("dayahead.json").display()
                    )
                })?;
                let addr = actix::Actor::start(day_ahead);
                actor.do_send(RouteProposals(addr.recipient()));
                tracing::info!("day-ahead scheduling on");
            }
            (Some(_), None) => {
                anyhow::bail!("config has [schedule] but the genesis has no schedule section")
            }
            _ => {}
        }
        if let Some((ha, every)) = cfg.home_assistant.clone() {
            let s = statuses.clone();
            let max_age = cfg.meter_max_age;
            gridlet_actors::home_assistant::spawn(ha, every, move || {
                let pv_status = s.pv.as_ref().and_then(|p| p.lock().ok().map(|p| p.clone()));
                let meter = s
                    .meter
                    .as_ref()
                    .and_then(|m| m.lock().ok().map(|m| m.clone()));
                let pv = pv_status.as_ref().and_then(|p| fresh(p.power_w, max_age));
                let grid = meter.as_ref().and_then(|m| fresh(m.power_w, max_age));
                let battery = s
                    .battery
                    .as_ref()
                    .and_then(|b| b.lock().ok().map(|b| b.clone()));
                let (soc, bat) = battery
                    .as_ref()
                    .map_or((None, None), |b| (b.soc_pct, b.power_w));
                let (traded, balance) = s
                    .market
                    .lock()
                    .map(|m| (m.balance.map(|_| m.traded_wh), m.balance))
                    .unwrap_or((None, None));
                HaState {
                    pv_power: pv,
                    battery_soc: soc,
                    battery_power: bat,
                    grid_power: grid,
                    pv_energy: pv_status.as_ref().and_then(|p| fresh(p.energy_wh, max_age)),
                    grid_import: meter.as_ref().and_then(|m| fresh(m.import_wh, max_age)),
                    grid_export: meter.as_ref().and_then(|m| fresh(m.export_wh, max_age)),
                    battery_charge: battery.as_ref().map(|b| b.energy.charged_wh()),
                    battery_discharge: battery.as_ref().map(|b| b.energy.discharged_wh()),
                    energy_traded: traded,
                    balance,
                }
            });
            tracing::info!("Home Assistant discovery on");
        }
        if let Some(listen) = cfg.api_listen {
            let state = actix_web::web::Data::new(crate::api::ApiState {
                ledger: actor.clone(),
                market,
                status: status.clone(),
                devices: statuses.clone(),
                metrics: Some(metrics.clone()),
                token: cfg.api_token.clone(),
                member: me,
                quorum: genesis.finality.clone(),
                day_ahead: cfg.schedule.as_ref().map(|_| day_ahead_status.clone()),
            });
            let energy = Arc::new(Mutex::new(
                gridlet_core::energy_today::EnergyToday::default(),
            ));
            {
                // Today's energy for the page: the counters sampled every 5 s of wall time.
                let (statuses, clock, energy) = (statuses.clone(), cfg.clock, energy.clone());
                actix::spawn(async move {
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        crate::page::sample(&statuses, &clock, &energy);
                    }
                });
            }
            let page = actix_web::web::Data::new(crate::page::PageState {
                name: name.clone(),
                reserve_soc_pct: cfg.strategy.reserve_soc_pct,
                period_ms: cfg.strategy.period_ms,
                offer_blocks: cfg.strategy.offer_blocks,
                energy,
                clock: cfg.clock,
            });
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(state.clone())
                    .app_data(page.clone())
                    .configure(crate::page::routes)
                    .configure(crate::api::routes)
                    .configure(crate::api_members::routes)
            })
            .workers(1)
            .disable_signals()
            .bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
            // With port 0 the OS picks the port: say which, for whoever started this gateway.
            let bound = server.addrs().first().copied().unwrap_or(listen);
            write_api_addr(&cfg.data_dir, bound)?;
            let server = server.run();
            actix::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(%e, "HTTP API stopped");
                }
            });
            tracing::info!(listen = %bound, "HTTP API listening");
        }
        if let Some(every) = crate::notify::watchdog_interval() {
            // Kicked from the arbiter the ledger actor runs on: a stuck arbiter stops the kicks
            // and systemd restarts the gateway.
            let status = status.clone();
            actix::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if status.lock().is_ok() {
                        crate::notify::notify(crate::notify::State::Watchdog);
                    }
                }
            });
        }
        crate::notify::notify(crate::notify::State::Ready);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let supervisor_gone = async {
            if !cfg.stop_on_stdin_eof {
                return std::future::pending().await;
            }
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            tracing::warn!("supervising process gone (stdin closed)");
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = supervisor_gone => {}
        }
        tracing::info!("shutting down");
        crate::notify::notify(crate::notify::State::Stopping);
        anyhow::Ok(())
    })?;
    Ok(())
}

/// Writes the API's bound address to `DATA_DIR/api.addr` (a temporary file renamed into place,
/// so a reader never sees half of it).
fn write_api_addr(data_dir: &Path, addr: std::net::SocketAddr) -> Result<()> {
    let tmp = data_dir.join("api.addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, data_dir.join("api.addr")))
        .with_context(|| format!("cannot write {}", data_dir.join("api.addr").display()))
}

/// Who signs this home's claims, as its member entry declares (protocol.md §12.1).
enum Signer {
    /// The gateway, with the attestor key file.
    Gateway(secp256k1::SecretKey),
    /// The battery, which must hold this attestor key.
    Device(secp256k1::PublicKey),
}

/// Matches the config to the member entry: a home declared `device` keeps no attestor key on
/// the gateway (its battery signs); one declared `gateway` needs the key file. `None`: no
/// battery, or not a member yet (nothing to attest).
fn choose_signer(
    cfg: &GatewayConfig,
    me: &MemberKey,
    members: &gridlet_ledger::membership::Membership,
    key: Option<secp256k1::SecretKey>,
) -> Result<Option<Signer>> {
    if cfg.battery.is_none() {
        return Ok(None);
    }
    let Some(member) = members.members().get(me) else {
        return Ok(None);
    };
    crate::check_cmd::signer_fits(member.equipment.signer, key.is_some(), true)?;
    Ok(Some(match key {
        Some(key) => Signer::Gateway(key),
        None => Signer::Device(
            member
                .attestor
                .to_public_key()
                .context("the member entry's attestor key")?,
        ),
    }))
}
