//! Scenario files for `gridlet hil`: which simulators to start, where, with which faults, and
//! how fast scenario time runs.
//!
//! ```toml
//! seed = 7
//! speedup = 60.0             # scenario seconds per real second (0 freezes time)
//! start_time_of_day_s = 43200
//!
//! [[modbus]]
//! listen = "127.0.0.1:0"
//! faults = { late_percent = 5, late_by_ms = 1500 }
//! devices = [
//!   { unit = 1, kind = "inverter", nameplate_w = 6000 },
//!   { unit = 2, kind = "battery", capacity_wh = 10000, max_power_w = 5000, soc_pct = 50 },
//!   { unit = 3, kind = "meter", power_w = 800 },
//! ]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::devices::SimDevice;
use crate::faults::FaultPlan;
use crate::modbus_sim::ModbusSim;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random draw.
    #[serde(default)]
    pub seed: u64,
    /// Scenario time per real time.
    #[serde(default = "one")]
    pub speedup: f64,
    /// Time of day at start, seconds after midnight.
    #[serde(default = "noon")]
    pub start_time_of_day_s: u64,
    /// Modbus TCP servers.
    #[serde(default)]
    pub modbus: Vec<ModbusServerSpec>,
    /// DSMR P1 meters writing to serial ports (pseudo-terminals in tests).
    #[serde(default)]
    pub dsmr: Vec<DsmrMeterSpec>,
    /// MQTT meters publishing to a broker.
    #[serde(default)]
    pub mqtt_meter: Vec<crate::mqtt_sim::MqttMeterSpec>,
}

/// A DSMR meter writing telegrams to a serial port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DsmrMeterSpec {
    /// The serial device (e.g. one end of a socat pty pair).
    pub path: String,
    /// The telegram dialect.
    pub dialect: crate::dsmr_sim::Dialect,
    /// Time between telegrams, ms (real time).
    #[serde(default = "second")]
    pub interval_ms: u64,
    /// Faults.
    #[serde(default)]
    pub faults: crate::dsmr_sim::DsmrFaults,
}

fn second() -> u64 {
    1000
}

fn one() -> f64 {
    1.0
}

fn noon() -> u64 {
    12 * 3600
}

/// One Modbus TCP server with its devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusServerSpec {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// SunSpec base address of every device on this server.
    #[serde(default = "base")]
    pub base: u16,
    /// Faults to inject.
    #[serde(default)]
    pub faults: FaultPlan,
    /// Devices by unit id.
    pub devices: Vec<DeviceSpec>,
}

fn base() -> u16 {
    40000
}

/// A simulated device.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceSpec {
    /// PV inverter.
    Inverter {
        /// Unit id.
        unit: u8,
        /// Nameplate, W.
        nameplate_w: u32,
    },
    /// Battery ESS.
    Battery {
        /// Unit id.
        unit: u8,
        /// Capacity, Wh.
        capacity_wh: u32,
        /// Power limit, W.
        max_power_w: u32,
        /// Initial state of charge, %.
        soc_pct: u32,
    },
    /// Grid meter.
    Meter {
        /// Unit id.
        unit: u8,
        /// Power, W (positive = import).
        power_w: i32,
    },
}

/// Where a started server listens.
#[derive(Debug, Clone, Serialize)]
pub struct StartedServer {
    /// The address.
    pub listen: SocketAddr,
    /// Its unit ids.
    pub units: Vec<u8>,
}

/// A running scenario.
#[derive(Debug)]
pub struct RunningScenario {
    /// The Modbus servers.
    pub modbus: Vec<ModbusSim>,
    /// The DSMR and MQTT meter tasks.
    pub dsmr: Vec<tokio::task::JoinHandle<()>>,
    /// Scenario time per real time.
    pub speedup: f64,
}

/// Why a scenario cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file does not parse.
    #[error("scenario: {0}")]
    Parse(String),
    /// A value is unusable.
    #[error("scenario: {0}")]
    Invalid(String),
    /// A server could not start.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl Scenario {
    /// Parses a scenario from TOML.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        if !(s.speedup >= 0.0 && s.speedup.is_finite()) {
            return Err(ScenarioError::Invalid(format!(
                "speedup {} must be ≥ 0",
                s.speedup
            )));
        }
        for server in &s.modbus {
            let mut seen = std::collections::BTreeSet::new();
            for d in &server.devices {
                let unit = match d {
                    DeviceSpec::Inverter { unit, .. }
                    | DeviceSpec::Battery { unit, .. }
                    | DeviceSpec::Meter { unit, .. } => *unit,
                };
                if !seen.insert(unit) {
                    return Err(ScenarioError::Invalid(format!(
                        "unit {unit} appears twice on {}",
                        server.listen
                    )));
                }
            }
        }
        Ok(s)
    }

    /// Starts every simulator.
    pub async fn start(&self) -> Result<(RunningScenario, Vec<StartedServer>), ScenarioError> {
        let tod_ms = self.start_time_of_day_s.saturating_mul(1000);
        let mut running = Vec::new();
        let mut started = Vec::new();
        for (i, spec) in self.modbus.iter().enumerate() {
            let mut devices = BTreeMap::new();
            for d in &spec.devices {
                let (unit, dev) = match d {
                    DeviceSpec::Inverter { unit, nameplate_w } => {
                        (*unit, SimDevice::inverter(spec.base, *nameplate_w, tod_ms))
                    }
                    DeviceSpec::Battery {
                        unit,
                        capacity_wh,
                        max_power_w,
                        soc_pct,
                    } => (
                        *unit,
                        SimDevice::battery(spec.base, *capacity_wh, *max_power_w, *soc_pct),
                    ),
                    DeviceSpec::Meter { unit, power_w } => {
                        (*unit, SimDevice::meter(spec.base, *power_w))
                    }
                };
                devices.insert(unit, dev);
            }
            let units = devices.keys().copied().collect();
            let mut plan = spec.faults.clone();
            plan.seed ^= self.seed.wrapping_add(i as u64);
            let sim = ModbusSim::start(spec.listen, devices, plan)
                .await
                .map_err(|source| ScenarioError::Listen {
                    addr: spec.listen,
                    source,
                })?;
            started.push(StartedServer {
                listen: sim.addr,
                units,
            });
            running.push(sim);
        }
        let mut dsmr = Vec::new();
        for (i, m) in self.dsmr.iter().enumerate() {
            let (path, dialect, faults) = (m.path.clone(), m.dialect, m.faults.clone());
            let interval = Duration::from_millis(m.interval_ms.max(10));
            let seed = self.seed.wrapping_add(1000 + i as u64);
            dsmr.push(tokio::spawn(async move {
                if let Err(e) =
                    crate::dsmr_sim::run_meter(path.clone(), dialect, interval, faults, seed).await
                {
                    tracing::error!(%e, %path, "DSMR meter simulator stopped");
                }
            }));
        }
        for (i, m) in self.mqtt_meter.iter().enumerate() {
            let (spec, seed) = (m.clone(), self.seed.wrapping_add(2000 + i as u64));
            dsmr.push(tokio::spawn(async move {
                if let Err(e) = crate::mqtt_sim::run_meter(spec, seed).await {
                    tracing::error!(%e, "MQTT meter simulator stopped");
                }
            }));
        }
        Ok((
            RunningScenario {
                modbus: running,
                dsmr,
                speedup: self.speedup,
            },
            started,
        ))
    }
}

impl RunningScenario {
    /// Steps the physics every `tick` of real time, forever (run it in a task).
    pub async fn run_physics(&self, tick: Duration) {
        let dt_ms = (tick.as_millis() as f64 * self.speedup).round() as u64;
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            if dt_ms > 0 {
                for sim in &self.modbus {
                    sim.step(dt_ms);
                }
            }
        }
    }
}
