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
use gridlet_actors::devices::{fresh, GridMeter, MeterSource, MeterStatus, PvInverter, PvStatus};
use gridlet_actors::home_assistant::{HaConfig, HaState};
use gridlet_actors::ledger_actor::{forward_bus, Clock, LedgerActor, LedgerStatus, NodeWorker};
use gridlet_actors::ledger_actor::{RouteProposals, Subscribe};
use gridlet_actors::market_actor::MarketActor;
use gridlet_actors::market_actor::{HomeLink, MarketStatus};
use gridlet_core::node::{Node, NodeConfig};
use gridlet_core::strategy::StrategyConfig;
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::dsmr::reader::DsmrVersion;
use gridlet_drivers::mqtt_meter::{MqttMeterConfig, PayloadFormat};
use gridlet_drivers::sunspec::WordOrder;
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
    /// The PV inverter (SunSpec over Modbus TCP).
    pub pv: Option<RawPv>,
    /// The grid meter (DSMR P1 on a serial port or TCP, or MQTT).
    pub meter: Option<RawMeter>,
    /// When to offer and buy on its own.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// HTTP API.
    #[serde(default)]
    pub api: RawApi,
    /// A scenario clock shared by a simulated community (`gridlet sim` writes it).
    pub clock: Option<RawClock>,
    /// Home Assistant MQTT discovery.
    pub home_assistant: Option<RawHomeAssistant>,
    /// Day-ahead scheduling (needs a genesis with a `schedule` section).
    pub schedule: Option<RawSchedule>,
}

/// `[schedule]`: this home's side of the day-ahead schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// JSON file with this home's forecast and battery: `pv_kw` and `load_kw` (one value per
    /// interval), `capacity_kwh`, `charge_kw`, `discharge_kw`, `efficiency`, `soc0_kwh`,
    /// `soc_min_kwh`. Relative to the config file's directory.
    pub forecast: PathBuf,
    /// Plan the next day this many hours before it starts.
    #[serde(default = "default_lead_hours")]
    pub lead_hours: f64,
    /// Battery wear cost, credits per kW² per hour.
    #[serde(default = "default_wear")]
    pub wear: f64,
    /// Republish proposals after this much wall time without progress, ms.
    #[serde(default = "default_resend_ms")]
    pub resend_ms: u64,
    /// Give up planning a day after this much wall time, s.
    #[serde(default = "default_deadline_s")]
    pub deadline_s: u64,
}

fn default_lead_hours() -> f64 {
    12.0
}
fn default_wear() -> f64 {
    0.002
}
fn default_resend_ms() -> u64 {
    1_000
}
fn default_deadline_s() -> u64 {
    600
}

/// The resolved `[schedule]` section.
#[derive(Debug, Clone)]
pub struct ScheduleSetup {
    /// The home's data for the local step.
    pub forecast: gridlet_core::schedule::HomeData,
    /// Lead time, community ms.
    pub lead_ms: u64,
    /// Wear cost.
    pub wear: f64,
    /// Resend period, wall ms.
    pub resend_ms: u64,
    /// Session deadline, wall ms.
    pub deadline_ms: u64,
}

fn schedule_setup(raw: &RawSchedule, base: &Path) -> Result<ScheduleSetup> {
    let path = base.join(&raw.forecast);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| field("schedule.forecast", format!("{}: {e}", path.display())))?;
    let f: gridlet_core::schedule::HomeData = serde_json::from_str(&text)
        .map_err(|e| field("schedule.forecast", format!("{}: {e}", path.display())))?;
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite() && *x >= 0.0);
    if f.pv_kw.len() != f.load_kw.len() || !finite(&f.pv_kw) || !finite(&f.load_kw) {
        return Err(field(
            "schedule.forecast",
            "pv_kw and load_kw must have one non-negative value per interval each",
        ));
    }
    let scalars = [
        f.capacity_kwh,
        f.charge_kw,
        f.discharge_kw,
        f.soc0_kwh,
        f.soc_min_kwh,
    ];
    if !(finite(&scalars) && f.efficiency > 0.0 && f.efficiency <= 1.0) {
        return Err(field(
            "schedule.forecast",
            "battery values must be non-negative and the efficiency within (0, 1]",
        ));
    }
    if f.soc_min_kwh > f.soc0_kwh || f.soc0_kwh > f.capacity_kwh {
        return Err(field(
            "schedule.forecast",
            "need soc_min_kwh ≤ soc0_kwh ≤ capacity_kwh",
        ));
    }
    if !(raw.lead_hours.is_finite() && (0.0..=24.0).contains(&raw.lead_hours)) {
        return Err(field("schedule.lead_hours", "must be within 0–24"));
    }
    if !(raw.wear.is_finite() && raw.wear >= 0.0) {
        return Err(field("schedule.wear", "must be non-negative"));
    }
    if raw.resend_ms == 0 || raw.deadline_s == 0 {
        return Err(field(
            "schedule.resend_ms",
            "resend_ms and deadline_s must be positive",
        ));
    }
    Ok(ScheduleSetup {
        forecast: f,
        lead_ms: (raw.lead_hours * 3_600_000.0) as u64,
        wear: raw.wear,
        resend_ms: raw.resend_ms,
        deadline_ms: raw.deadline_s.saturating_mul(1000),
    })
}

/// `[home_assistant]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHomeAssistant {
    /// Broker `host:port` (default: the community bus broker).
    pub broker: Option<String>,
    /// Discovery prefix.
    #[serde(default = "ha_prefix")]
    pub discovery_prefix: String,
    /// Node id (default: the node name).
    pub node_id: Option<String>,
    /// State interval, ms.
    #[serde(default = "ha_interval")]
    pub interval_ms: u64,
}

fn ha_prefix() -> String {
    "homeassistant".into()
}
fn ha_interval() -> u64 {
    10_000
}

/// `[clock]`: community time runs `speedup` times faster than wall time, and was `origin_ms`
/// at wall time `anchor_unix_ms`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClock {
    /// Wall time (ms since the epoch) of the anchor.
    pub anchor_unix_ms: u64,
    /// Community time at the anchor, ms.
    pub origin_ms: u64,
    /// Speed-up.
    pub speedup: f64,
    /// Community time after which this node produces no more blocks (the end of a simulated day).
    pub end_ms: Option<u64>,
}

/// `[pv]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPv {
    /// Host.
    pub host: String,
    /// Port.
    #[serde(default = "modbus_port")]
    pub port: u16,
    /// Unit id.
    #[serde(default = "one")]
    pub unit: u8,
    /// Poll period, ms.
    #[serde(default = "poll_ms")]
    pub poll_ms: u64,
    /// Nameplate power, W (plausibility limit).
    pub nameplate_w: Option<f64>,
    /// Word order of 32-bit values.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Flip the sign of power readings.
    #[serde(default)]
    pub invert: bool,
}

/// `[meter]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeter {
    /// `dsmr` (serial port), `dsmr_tcp` (ser2net) or `mqtt`.
    pub kind: String,
    /// Serial port (`dsmr`).
    pub path: Option<String>,
    /// DSMR version (`dsmr`): v2_2, v4, v5.
    pub version: Option<DsmrVersion>,
    /// `host:port` (`dsmr_tcp`).
    pub address: Option<String>,
    /// Topic (`mqtt`).
    pub topic: Option<String>,
    /// Payload format (`mqtt`): tasmota, shelly.
    pub format: Option<PayloadFormat>,
    /// Broker `host:port` (`mqtt`; default: the community bus broker).
    pub broker: Option<String>,
    /// Values older than this are stale, ms.
    #[serde(default = "meter_max_age")]
    pub max_age_ms: u64,
}

fn meter_max_age() -> u64 {
    10_000
}
fn safe_after() -> u64 {
    15_000
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
    /// Word order of 32-bit values.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Without valid battery or meter data for this long, stop discharging, ms.
    #[serde(default = "safe_after")]
    pub safe_after_ms: u64,
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
    /// PV inverter.
    pub pv: Option<RawPv>,
    /// Grid meter.
    pub meter: Option<MeterSource>,
    /// Meter staleness.
    pub meter_max_age: Duration,
    /// Strategy.
    pub strategy: StrategyConfig,
    /// The community clock.
    pub clock: Clock,
    /// No blocks after this community time.
    pub end_ms: Option<u64>,
    /// Home Assistant discovery (node id resolved at start), state interval.
    pub home_assistant: Option<(HaConfig, Duration)>,
    /// Stop when standard input closes (set by the command line, not the file).
    pub stop_on_stdin_eof: bool,
    /// Day-ahead scheduling.
    pub schedule: Option<ScheduleSetup>,
}

fn field(name: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("config field `{name}`: {reason}")
}

fn parse_host_port(b: &str, name: &str) -> Result<(String, u16)> {
    let (h, p) = b
        .rsplit_once(':')
        .ok_or_else(|| field(name, format!("{b:?} is not host:port")))?;
    let port = p
        .parse::<u16>()
        .map_err(|_| field(name, format!("bad port in {b:?}")))?;
    Ok((h.to_owned(), port))
}

fn meter_source(m: &RawMeter, bus: &(String, u16), node: Option<&str>) -> Result<MeterSource> {
    let need = |v: &Option<String>, name: &str| {
        v.clone()
            .ok_or_else(|| field(name, format!("required for kind = {:?}", m.kind)))
    };
    match m.kind.as_str() {
        "dsmr" => Ok(MeterSource::DsmrSerial {
            path: need(&m.path, "meter.path")?,
            version: m.version.unwrap_or(DsmrVersion::V5),
        }),
        "dsmr_tcp" => Ok(MeterSource::DsmrTcp {
            addr: need(&m.address, "meter.address")?,
        }),
        "mqtt" => {
            let topic = need(&m.topic, "meter.topic")?;
            if topic.contains(['#', '+']) {
                return Err(field("meter.topic", "one meter, one topic: no wildcards"));
            }
            let (host, port) = match &m.broker {
                None => bus.clone(),
                Some(b) => {
                    let (h, p) = b
                        .rsplit_once(':')
                        .ok_or_else(|| field("meter.broker", format!("{b:?} is not host:port")))?;
                    let port = p
                        .parse::<u16>()
                        .map_err(|_| field("meter.broker", format!("bad port in {b:?}")))?;
                    (h.to_owned(), port)
                }
            };
            Ok(MeterSource::Mqtt(MqttMeterConfig {
                host,
                port,
                client_id: format!("{}-meter", node.unwrap_or("gridlet")),
                topic,
                format: m.format.unwrap_or(PayloadFormat::Tasmota),
                max_age: Duration::from_millis(m.max_age_ms),
                backoff: BackoffPolicy {
                    initial: Duration::from_millis(500),
                    max: Duration::from_secs(30),
                },
            }))
        }
        other => Err(field(
            "meter.kind",
            format!("{other:?} is not one of dsmr, dsmr_tcp, mqtt"),
        )),
    }
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
        if let Some(p) = &raw.pv {
            if !(50..=60_000).contains(&p.poll_ms) {
                return Err(field(
                    "pv.poll_ms",
                    format!("{} is outside 50–60000", p.poll_ms),
                ));
            }
        }
        if let Some(b) = &raw.battery {
            if b.safe_after_ms < b.poll_ms.saturating_mul(2) {
                return Err(field(
                    "battery.safe_after_ms",
                    "must be at least two poll periods",
                ));
            }
        }
        let meter = match &raw.meter {
            None => None,
            Some(m) => Some(meter_source(m, &broker, raw.node.name.as_deref())?),
        };
        let meter_max_age = raw.meter.as_ref().map_or(meter_max_age(), |m| m.max_age_ms);
        if !(100..=3_600_000).contains(&meter_max_age) {
            return Err(field(
                "meter.max_age_ms",
                format!("{meter_max_age} is outside 100–3600000"),
            ));
        }
        let home_assistant = match &raw.home_assistant {
            None => None,
            Some(h) => {
                let (host, port) = match &h.broker {
                    None => broker.clone(),
                    Some(b) => parse_host_port(b, "home_assistant.broker")?,
                };
                let node_id = h
                    .node_id
                    .clone()
                    .or_else(|| raw.node.name.clone())
                    .unwrap_or_else(|| "gridlet".into());
                if node_id.is_empty()
                    || !node_id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(field(
                        "home_assistant.node_id",
                        format!("{node_id:?}: letters, digits, _ and - only"),
                    ));
                }
                if h.discovery_prefix.is_empty() || h.discovery_prefix.contains(['#', '+']) {
                    return Err(field(
                        "home_assistant.discovery_prefix",
                        "must be a plain topic",
                    ));
                }
                if h.interval_ms < 1_000 {
                    return Err(field("home_assistant.interval_ms", "at least 1000"));
                }
                Some((
                    HaConfig {
                        host,
                        port,
                        discovery_prefix: h.discovery_prefix.clone(),
                        name: format!("gridlet {node_id}"),
                        node_id,
                    },
                    Duration::from_millis(h.interval_ms),
                ))
            }
        };
        let clock = match raw.clock {
            None => Clock::real(),
            Some(c) => {
                if !(c.speedup.is_finite() && (0.1..=100_000.0).contains(&c.speedup)) {
                    return Err(field("clock.speedup", "must be between 0.1 and 100000"));
                }
                Clock::anchored(c.anchor_unix_ms, c.origin_ms, c.speedup)
            }
        };
        Ok(GatewayConfig {
            pv: raw.pv,
            meter,
            meter_max_age: Duration::from_millis(meter_max_age),
            strategy: raw.strategy,
            clock,
            end_ms: raw.clock.and_then(|c| c.end_ms),
            home_assistant,
            stop_on_stdin_eof: false,
            schedule: raw
                .schedule
                .as_ref()
                .map(|r| schedule_setup(r, base))
                .transpose()?,
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

/// Finds a SunSpec device at `host:port` unit `unit`, retrying for a while: a gateway often
/// boots before the inverter's network interface does.
async fn discover(
    what: &str,
    host: &str,
    port: u16,
    settings: gridlet_drivers::device::DeviceSettings,
) -> Result<(
    gridlet_drivers::modbus::ModbusLink,
    gridlet_drivers::device::SunSpecDevice,
)> {
    use gridlet_drivers::modbus::{Endpoint, LinkConfig, ModbusLink};
    let policy = BackoffPolicy {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let addr = tokio::net::lookup_host((host, port))
                .await
                .with_context(|| format!("cannot resolve {what} {host}:{port}"))?
                .next()
                .with_context(|| format!("{what} {host} has no address"))?;
            let name = if what == "battery" { "battery" } else { "pv" };
            let mut link = ModbusLink::new(LinkConfig::new(Endpoint::Tcp(addr)).named(name));
            let unit = settings.unit;
            let device =
                gridlet_drivers::device::SunSpecDevice::discover(&mut link, settings.clone())
                    .await?
                    .with_context(|| format!("no SunSpec {what} at {addr} unit {unit}"))?;
            anyhow::Ok((link, device))
        };
        match attempt.await {
            Ok((link, device)) => {
                tracing::info!(what, models = ?device.models().iter().map(|m| m.id).collect::<Vec<_>>(), "device found");
                return Ok((link, device));
            }
            Err(e) if std::time::Instant::now() < deadline => {
                failures = failures.saturating_add(1);
                tracing::warn!(what, %e, "device not found yet; retrying");
                tokio::time::sleep(policy.delay(failures).max(Duration::from_millis(100))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Discovers the battery and opens its release journal.
async fn connect_battery(b: &RawBattery, data_dir: &Path, clock: Clock) -> Result<BatteryParts> {
    let settings = gridlet_drivers::device::DeviceSettings {
        unit: b.unit,
        order: b.word_order,
        invert: false,
        limits: gridlet_drivers::quality::Limits {
            nameplate_w: b.nameplate_w,
        },
        stale_after: Duration::from_millis(b.poll_ms.saturating_mul(5)),
    };
    let (link, device) = discover("battery", &b.host, b.port, settings).await?;
    let journal = gridlet_actors::journal::ReleaseJournal::open(data_dir)?;
    let settings = BatterySettings {
        release_power_w: b.release_power_w,
        clock,
        poll: Duration::from_millis(b.poll_ms),
        safe_after: Duration::from_millis(b.safe_after_ms),
    };
    Ok((link, device, journal, settings))
}

/// Discovers the PV inverter.
async fn connect_pv(
    p: &RawPv,
) -> Result<(
    gridlet_drivers::modbus::ModbusLink,
    gridlet_drivers::device::SunSpecDevice,
)> {
    let settings = gridlet_drivers::device::DeviceSettings {
        unit: p.unit,
        order: p.word_order,
        invert: p.invert,
        limits: gridlet_drivers::quality::Limits {
            nameplate_w: p.nameplate_w,
        },
        stale_after: Duration::from_millis(p.poll_ms.saturating_mul(5)),
    };
    discover("PV inverter", &p.host, p.port, settings).await
}

/// What the API and metrics read from the running gateway.
#[derive(Clone, Default)]
pub struct Statuses {
    /// Battery.
    pub battery: Option<Arc<Mutex<gridlet_actors::battery::BatteryStatus>>>,
    /// PV inverter.
    pub pv: Option<Arc<Mutex<PvStatus>>>,
    /// Grid meter.
    pub meter: Option<Arc<Mutex<MeterStatus>>>,
    /// Market counters.
    pub market: Arc<Mutex<MarketStatus>>,
}

/// Installs the one Prometheus recorder of this process and describes every metric.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(gridlet_drivers::metrics::MODBUS_REQUEST_SECONDS.into()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(gridlet_actors::metrics::LEDGER_VALIDATION_SECONDS.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
        )?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    gridlet_drivers::metrics::describe();
    gridlet_actors::metrics::describe();
    gridlet_actors::metrics::register_zeros();
    Ok(handle)
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn run(cfg: GatewayConfig) -> Result<()> {
    let metrics = install_metrics()?;
    let genesis = chain_cmd::load_genesis(&cfg.genesis)?;
    cfg.strategy
        .check(genesis.floor_price, genesis.grid_tariff)
        .map_err(|e| anyhow::anyhow!("config field `{e}`"))?;
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
            last_slot: cfg.end_ms.map_or(u64::MAX, |end| genesis.slot_at(end)),
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
        let status = Arc::new(Mutex::new(LedgerStatus::default()));
        let actor = actix::Actor::start(LedgerActor::new(
            worker,
            bus.clone(),
            cfg.clock,
            cfg.tick,
            status.clone(),
        ));
        forward_bus(events, actor.clone());
        let attestor = match &cfg.attestor_key_file {
            Some(p) => Some(keys::load_secret(p)?),
            None => None,
        };
        let mut statuses = Statuses::default();
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
            actix::Supervisor::start(move |_| meter);
            statuses.meter = Some(status);
        }
        if let Some(p) = &cfg.pv {
            let (link, device) = connect_pv(p).await?;
            let status = Arc::new(Mutex::new(PvStatus::default()));
            let pv = PvInverter::new(
                link,
                device,
                Duration::from_millis(p.poll_ms),
                status.clone(),
            );
            actix::Supervisor::start(move |_| pv);
            statuses.pv = Some(status);
        }
        let battery = match (&cfg.battery, attestor.is_some()) {
            (Some(b), true) => Some(connect_battery(b, &cfg.data_dir, cfg.clock).await?),
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
        let home = HomeLink {
            strategy: cfg.strategy,
            decide_every,
            meter: statuses.meter.clone(),
            battery: statuses.battery.clone(),
            max_age: cfg.meter_max_age,
            data_dir: cfg.data_dir.clone(),
            auction_round_blocks: genesis.market.auction_round_blocks,
        };
        let market_actor = MarketActor::new(me, attestor, chain_id, slot_ms, cfg.clock, ledger)
            .with_status(statuses.market.clone())
            .with_home(home)?;
        let bstatus = statuses.battery.clone();
        let meter_status = statuses.meter.clone();
        // The battery actor is made inside the market actor's context (its deliveries go
        // there); the day-ahead actor needs its address too.
        let battery_addr: Arc<Mutex<Option<actix::Addr<BatteryStorage>>>> =
            Arc::new(Mutex::new(None));
        let battery_slot = battery_addr.clone();
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
                    if let Some(m) = meter_status {
                        b = b.watch_meter(m);
                    }
                    let addr = actix::Actor::start(b);
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
                let meter = statuses
                    .meter
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
                        grid_tariff: genesis.grid_tariff,
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
                let pv =
                    s.pv.as_ref()
                        .and_then(|p| p.lock().ok().and_then(|p| fresh(p.power_w, max_age)));
                let grid = s
                    .meter
                    .as_ref()
                    .and_then(|m| m.lock().ok().and_then(|m| fresh(m.power_w, max_age)));
                let (soc, bat) = s
                    .battery
                    .as_ref()
                    .and_then(|b| b.lock().ok().map(|b| (b.soc_pct, b.power_w)))
                    .unwrap_or((None, None));
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
                day_ahead: cfg.schedule.as_ref().map(|_| day_ahead_status.clone()),
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
        if let Some(every) = crate::notify::watchdog_interval() {
            // Kicked from the arbiter the ledger actor runs on: a stuck arbiter stops the kicks
            // and systemd restarts the gateway.
            let status = status.clone();
            actix::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if status.lock().is_ok() {
                        crate::notify::notify("WATCHDOG=1");
                    }
                }
            });
        }
        crate::notify::notify("READY=1");
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
        crate::notify::notify("STOPPING=1");
        anyhow::Ok(())
    })?;
    Ok(())
}
