//! `gridlet run --config FILE`: one home's gateway. Today it runs the ledger on the community
//! bus (block production, validation, sync); devices, the market actor and the HTTP API are
//! wired here as they land.
//!
//! Configuration is read in two stages, as ripgrep does: [`RawConfig`] mirrors the TOML (serde,
//! unknown fields refused), then [`GatewayConfig`] is checked and typed, and every error names
//! the field and the reason.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use gridlet_actors::battery::{BatterySettings, BatteryStorage};
use gridlet_actors::bus::{self, BusConfig};
use gridlet_actors::ledger_actor::Subscribe;
use gridlet_actors::ledger_actor::{forward_bus, Clock, LedgerActor, LedgerStatus, NodeWorker};
use gridlet_actors::market_actor::MarketActor;
use gridlet_actors::node::{Node, NodeConfig};
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_ledger::store::{open_sled, SignerGuard};
use gridlet_ledger::MemberKey;
use serde::Deserialize;

use crate::{chain_cmd, keys};

/// The TOML as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Data directory (chain, signer guard, release journal).
    pub data_dir: PathBuf,
    /// This home's key file (0600).
    pub key_file: PathBuf,
    /// The community genesis file.
    pub genesis: PathBuf,
    /// Node settings.
    #[serde(default)]
    pub node: RawNode,
    /// Community bus.
    pub bus: RawBus,
    /// The home battery's attestor key file (it signs attestations and delivery receipts).
    pub attestor_key_file: Option<PathBuf>,
    /// The home battery (SunSpec over Modbus TCP).
    pub battery: Option<RawBattery>,
    /// HTTP API.
    #[serde(default)]
    pub api: RawApi,
}

/// `[battery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBattery {
    /// Host.
    pub host: String,
    /// Port.
    #[serde(default = "modbus_port")]
    pub port: u16,
    /// Unit id.
    #[serde(default = "one")]
    pub unit: u8,
    /// Discharge power for releases, W.
    #[serde(default = "release_power")]
    pub release_power_w: i32,
    /// Poll period, ms.
    #[serde(default = "poll_ms")]
    pub poll_ms: u64,
    /// Nameplate power, W (plausibility limit).
    pub nameplate_w: Option<f64>,
}

fn modbus_port() -> u16 {
    502
}
fn one() -> u8 {
    1
}
fn release_power() -> i32 {
    2_000
}
fn poll_ms() -> u64 {
    1_000
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Listen address (default 127.0.0.1:8080); `off` to disable.
    pub listen: Option<String>,
    /// Bearer token for trading through the API (none: trading through the API is off).
    pub token: Option<String>,
}

/// `[node]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Name on the bus (default: `home-` and the key's first hex digits).
    pub name: Option<String>,
    /// Clock tick, ms.
    pub tick_ms: Option<u64>,
    /// Mempool limit.
    pub max_mempool: Option<usize>,
}

/// `[bus]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    /// External broker `host:port`.
    pub broker: Option<String>,
    /// Start an embedded broker on this loopback port (when no broker is given).
    pub embedded_port: Option<u16>,
    /// Topic prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Keep the broker session across reconnects.
    #[serde(default = "yes")]
    pub persistent_session: bool,
}

fn default_prefix() -> String {
    "gridlet".into()
}

fn yes() -> bool {
    true
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Key file.
    pub key_file: PathBuf,
    /// Genesis file.
    pub genesis: PathBuf,
    /// Node name.
    pub name: Option<String>,
    /// Tick.
    pub tick: Duration,
    /// Mempool limit.
    pub max_mempool: usize,
    /// Broker host and port.
    pub broker: (String, u16),
    /// Whether to start the embedded broker.
    pub embedded: bool,
    /// Topic prefix.
    pub prefix: String,
    /// Persistent session.
    pub persistent_session: bool,
    /// Attestor key file.
    pub attestor_key_file: Option<PathBuf>,
    /// Battery.
    pub battery: Option<RawBattery>,
    /// API listen address, if on.
    pub api_listen: Option<std::net::SocketAddr>,
    /// API token.
    pub api_token: Option<String>,
}

fn field(name: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("config field `{name}`: {reason}")
}

impl GatewayConfig {
    /// Reads and checks a config file; relative paths are relative to the file.
    pub fn load(path: &Path) -> Result<GatewayConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let raw: RawConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let tick_ms = raw.node.tick_ms.unwrap_or(100);
        if !(10..=10_000).contains(&tick_ms) {
            return Err(field(
                "node.tick_ms",
                format!("{tick_ms} is outside 10–10000"),
            ));
        }
        let broker = match (&raw.bus.broker, raw.bus.embedded_port) {
            (Some(_), Some(_)) => {
                return Err(field(
                    "bus",
                    "give either `broker` or `embedded_port`, not both",
                ))
            }
            (None, None) => {
                return Err(field(
                    "bus",
                    "give `broker = \"host:port\"` or `embedded_port`",
                ))
            }
            (Some(b), None) => {
                let (h, p) = b
                    .rsplit_once(':')
                    .ok_or_else(|| field("bus.broker", format!("{b:?} is not host:port")))?;
                let port = p
                    .parse::<u16>()
                    .map_err(|_| field("bus.broker", format!("bad port in {b:?}")))?;
                (h.to_owned(), port)
            }
            (None, Some(port)) => ("127.0.0.1".to_owned(), port),
        };
        if raw.bus.prefix.is_empty() || raw.bus.prefix.contains(['#', '+']) {
            return Err(field(
                "bus.prefix",
                "must be non-empty and free of MQTT wildcards",
            ));
        }
        if raw.battery.is_some() && raw.attestor_key_file.is_none() {
            return Err(field(
                "attestor_key_file",
                "a battery needs its attestor key to sign attestations and receipts",
            ));
        }
        if let Some(b) = &raw.battery {
            if !(50..=60_000).contains(&b.poll_ms) {
                return Err(field(
                    "battery.poll_ms",
                    format!("{} is outside 50–60000", b.poll_ms),
                ));
            }
            if b.release_power_w <= 0 {
                return Err(field("battery.release_power_w", "must be positive"));
            }
        }
        let api_listen = match raw.api.listen.as_deref() {
            Some("off") => None,
            None => Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
            Some(a) => Some(
                a.parse()
                    .map_err(|_| field("api.listen", format!("{a:?} is not ip:port")))?,
            ),
        };
        if raw.api.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(field("api.token", "use at least 16 characters"));
        }
        Ok(GatewayConfig {
            attestor_key_file: raw.attestor_key_file.as_deref().map(abs),
            battery: raw.battery,
            api_listen,
            api_token: raw.api.token,
            data_dir: abs(&raw.data_dir),
            key_file: abs(&raw.key_file),
            genesis: abs(&raw.genesis),
            name: raw.node.name,
            tick: Duration::from_millis(tick_ms),
            max_mempool: raw.node.max_mempool.unwrap_or(10_000),
            broker,
            embedded: raw.bus.embedded_port.is_some(),
            prefix: raw.bus.prefix,
            persistent_session: raw.bus.persistent_session,
        })
    }
}

type BatteryParts = (
    gridlet_drivers::modbus::ModbusLink,
    gridlet_drivers::device::SunSpecDevice,
    gridlet_actors::journal::ReleaseJournal,
    BatterySettings,
);

/// Discovers the battery and opens its release journal.
async fn connect_battery(b: &RawBattery, data_dir: &Path) -> Result<BatteryParts> {
    use gridlet_drivers::modbus::{Endpoint, LinkConfig, ModbusLink};
    use gridlet_drivers::sunspec::WordOrder;
    let addr = tokio::net::lookup_host((b.host.as_str(), b.port))
        .await
        .with_context(|| format!("cannot resolve battery {}:{}", b.host, b.port))?
        .next()
        .with_context(|| format!("battery {} has no address", b.host))?;
    let mut link = ModbusLink::new(LinkConfig::new(Endpoint::Tcp(addr)));
    let settings = gridlet_drivers::device::DeviceSettings {
        unit: b.unit,
        order: WordOrder::BigEndian,
        invert: false,
        limits: gridlet_drivers::quality::Limits {
            nameplate_w: b.nameplate_w,
        },
        stale_after: Duration::from_millis(b.poll_ms.saturating_mul(5)),
    };
    let device = gridlet_drivers::device::SunSpecDevice::discover(&mut link, settings)
        .await?
        .with_context(|| format!("no SunSpec device at {addr} unit {}", b.unit))?;
    tracing::info!(models = ?device.models().iter().map(|m| m.id).collect::<Vec<_>>(), "battery found");
    let journal = gridlet_actors::journal::ReleaseJournal::open(data_dir)?;
    let settings = BatterySettings {
        release_power_w: b.release_power_w,
        clock: Clock::real(),
        poll: Duration::from_millis(b.poll_ms),
    };
    Ok((link, device, journal, settings))
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn run(cfg: GatewayConfig) -> Result<()> {
    let genesis = chain_cmd::load_genesis(&cfg.genesis)?;
    chain_cmd::install_genesis(&cfg.data_dir, &genesis)?;
    let sk = keys::load_secret(&cfg.key_file)?;
    let me = MemberKey::from_secret(&sk);
    if !genesis.members.iter().any(|m| m.key == me) {
        bail!(
            "key {} is not a member of community {}",
            me,
            genesis.chain_id
        );
    }
    let name = cfg
        .name
        .clone()
        .unwrap_or_else(|| format!("home-{}", me.short()));
    let (chain, report) = open_sled(&cfg.data_dir, genesis.clone(), 1_000)
        .with_context(|| format!("cannot open the chain in {}", cfg.data_dir.display()))?;
    if let Some((from, count, reason)) = &report.dropped {
        tracing::warn!(from, count, %reason, "dropped stored blocks that did not verify; peers will resend them");
    }
    tracing::info!(height = chain.chain().head_height(), %name, "chain opened");
    let guard = SignerGuard::open(&cfg.data_dir)?;
    let node = Node::new(
        NodeConfig {
            name: name.clone(),
            max_mempool: cfg.max_mempool,
            sync_batch: 200,
        },
        sk,
        chain,
        guard,
    );
    if cfg.embedded {
        bus::start_embedded_broker(cfg.broker.1, 8 * 1024 * 1024)
            .map_err(|e| anyhow::anyhow!("embedded broker: {e}"))?;
        tracing::info!(port = cfg.broker.1, "embedded MQTT broker started");
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
        let status = Arc::new(Mutex::new(LedgerStatus::default()));
        let actor = actix::Actor::start(LedgerActor::new(
            worker,
            bus.clone(),
            Clock::real(),
            cfg.tick,
            status.clone(),
        ));
        forward_bus(events, actor.clone());
        let attestor = match &cfg.attestor_key_file {
            Some(p) => Some(keys::load_secret(p)?),
            None => None,
        };
        let battery = match (&cfg.battery, attestor.is_some()) {
            (Some(b), true) => Some(connect_battery(b, &cfg.data_dir).await?),
            _ => None,
        };
        let battery_status = battery
            .as_ref()
            .map(|_| Arc::new(Mutex::new(gridlet_actors::battery::BatteryStatus::default())));
        let chain_id = genesis.hash();
        let slot_ms = genesis.slot_ms;
        let ledger = actor.clone();
        let bstatus = battery_status.clone();
        let market = actix::Actor::create(move |ctx: &mut actix::Context<MarketActor>| {
            let m = MarketActor::new(me, attestor, chain_id, slot_ms, Clock::real(), ledger);
            match (battery, bstatus) {
                (Some((link, device, journal, settings)), Some(bstatus)) => {
                    let b = BatteryStorage::new(
                        link,
                        device,
                        journal,
                        settings,
                        actix::AsyncContext::address(ctx).recipient(),
                        bstatus,
                    );
                    m.with_battery(actix::Actor::start(b))
                }
                _ => m,
            }
        });
        actor.do_send(Subscribe(market.clone().recipient()));
        if let Some(listen) = cfg.api_listen {
            let state = actix_web::web::Data::new(crate::api::ApiState {
                ledger: actor.clone(),
                market,
                status,
                battery: battery_status,
                token: cfg.api_token.clone(),
                member: me,
            });
            let server = actix_web::HttpServer::new(move || {
                actix_web::App::new()
                    .app_data(state.clone())
                    .configure(crate::api::routes)
            })
            .workers(1)
            .disable_signals()
            .bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))?
            .run();
            actix::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(%e, "HTTP API stopped");
                }
            });
            tracing::info!(%listen, "HTTP API listening");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        anyhow::Ok(())
    })?;
    Ok(())
}
