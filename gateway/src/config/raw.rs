//! The configuration file as written: serde types mirroring the TOML, unknown fields refused.
//! [`super::GatewayConfig::load`] checks and types them.

use std::path::PathBuf;

use gridlet_core::strategy::StrategyConfig;
use gridlet_drivers::dsmr::reader::DsmrVersion;
use gridlet_drivers::mqtt_meter::PayloadFormat;
use gridlet_drivers::sunspec::WordOrder;
use serde::Deserialize;

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
    /// This home's forecast file (the `[schedule]` section's format, relative to the config
    /// file's directory): with it, offers keep back what the home will need itself before its
    /// PV refills the battery, not only the strategy's fixed reserve.
    pub forecast: Option<PathBuf>,
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
    /// `dsmr` (serial port), `dsmr_tcp` (ser2net), `mqtt` or `sunspec` (Modbus TCP).
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
    /// Modbus TCP host (`sunspec`: a SunSpec meter, models 201–204).
    pub host: Option<String>,
    /// Modbus TCP port (`sunspec`; default 502).
    pub port: Option<u16>,
    /// Modbus unit id (`sunspec`; default 1).
    pub unit: Option<u8>,
    /// Poll period, ms (`sunspec`; default 1000).
    pub poll_ms: Option<u64>,
    /// Word order of 32-bit values (`sunspec`).
    #[serde(default)]
    pub word_order: WordOrder,
    /// Flip the sign of power readings (`sunspec`: a meter mounted the other way round).
    #[serde(default)]
    pub invert: bool,
    /// Values older than this are stale, ms.
    #[serde(default = "meter_max_age")]
    pub max_age_ms: u64,
}

pub(crate) fn meter_max_age() -> u64 {
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
    /// Start an embedded broker on this port (when no broker is given).
    pub embedded_port: Option<u16>,
    /// The address the embedded broker listens on (default 127.0.0.1; `0.0.0.0` lets the
    /// neighbours' gateways connect — the bus has no TLS or passwords yet: a trusted LAN only).
    pub embedded_bind: Option<String>,
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
