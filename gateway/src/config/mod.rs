//! `gridlet run`'s configuration, read in two stages as ripgrep does: [`RawConfig`] mirrors
//! the TOML (serde, unknown fields refused), then [`GatewayConfig`] is checked and typed, and
//! every error names the field and the reason.

mod raw;

pub use raw::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use gridlet_actors::devices::MeterSource;
use gridlet_actors::home_assistant::HaConfig;
use gridlet_actors::ledger_actor::Clock;
use gridlet_core::strategy::StrategyConfig;
use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::dsmr::reader::DsmrVersion;
use gridlet_drivers::mqtt_meter::{MqttMeterConfig, PayloadFormat};

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

/// Reads and checks a home's forecast file (`field` names the setting in errors).
fn load_forecast(
    file: &Path,
    base: &Path,
    name: &'static str,
) -> Result<gridlet_core::schedule::HomeData> {
    let path = base.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| field(name, format!("{}: {e}", path.display())))?;
    let f: gridlet_core::schedule::HomeData =
        serde_json::from_str(&text).map_err(|e| field(name, format!("{}: {e}", path.display())))?;
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite() && *x >= 0.0);
    if f.pv_kw.len() != f.load_kw.len() || !finite(&f.pv_kw) || !finite(&f.load_kw) {
        return Err(field(
            name,
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
            name,
            "battery values must be non-negative and the efficiency within (0, 1]",
        ));
    }
    if f.soc_min_kwh > f.soc0_kwh || f.soc0_kwh > f.capacity_kwh {
        return Err(field(name, "need soc_min_kwh ≤ soc0_kwh ≤ capacity_kwh"));
    }
    Ok(f)
}

fn schedule_setup(raw: &RawSchedule, base: &Path) -> Result<ScheduleSetup> {
    let f = load_forecast(&raw.forecast, base, "schedule.forecast")?;
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
    /// Where the embedded broker listens.
    pub embedded_bind: std::net::IpAddr,
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
    /// The home's forecast, by which offers keep back what the home will need itself.
    pub forecast: Option<gridlet_core::schedule::HomeData>,
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
        "sunspec" => {
            let poll_ms = m.poll_ms.unwrap_or(1_000);
            if !(50..=60_000).contains(&poll_ms) {
                return Err(field(
                    "meter.poll_ms",
                    format!("{poll_ms} is outside 50–60000"),
                ));
            }
            Ok(MeterSource::Sunspec {
                target: gridlet_actors::devices::DeviceTarget {
                    what: "grid meter".into(),
                    link: "meter".into(),
                    host: need(&m.host, "meter.host")?,
                    port: m.port.unwrap_or(502),
                    settings: gridlet_drivers::device::DeviceSettings {
                        unit: m.unit.unwrap_or(1),
                        order: m.word_order,
                        invert: m.invert,
                        limits: gridlet_drivers::quality::Limits { nameplate_w: None },
                        stale_after: Duration::from_millis(m.max_age_ms),
                    },
                },
                poll: Duration::from_millis(poll_ms),
            })
        }
        other => Err(field(
            "meter.kind",
            format!("{other:?} is not one of dsmr, dsmr_tcp, mqtt, sunspec"),
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
        let embedded_bind: std::net::IpAddr = match &raw.bus.embedded_bind {
            None => std::net::IpAddr::from([127, 0, 0, 1]),
            Some(_) if raw.bus.embedded_port.is_none() => {
                return Err(field(
                    "bus.embedded_bind",
                    "only with `embedded_port` (the embedded broker)",
                ))
            }
            Some(a) => a.parse().map_err(|_| {
                field(
                    "bus.embedded_bind",
                    format!("{a:?} is not an IP address (e.g. \"0.0.0.0\")"),
                )
            })?,
        };
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
            forecast: raw
                .forecast
                .as_deref()
                .map(|f| load_forecast(f, base, "forecast"))
                .transpose()?,
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
            embedded_bind,
            prefix: raw.bus.prefix,
            persistent_session: raw.bus.persistent_session,
        })
    }
}
