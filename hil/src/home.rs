//! A simulated home: a PV inverter and a battery behind one Modbus TCP server (units 1 and 2,
//! as on a hybrid inverter), a household load, and the grid meter that sees what is left.
//!
//! Physics per step: the inverter follows the solar profile; the battery's own controller
//! stores the home's surplus and covers its deficit (self-consumption) unless the gateway
//! limits or commands it over Modbus; the meter measures `load − pv − battery` (positive =
//! import). Beside it runs a shadow of the same home whose battery only ever self-consumes:
//! what the home would have drawn from the grid without trading.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::devices::{DeviceModel, SimDevice};
use crate::faults::Dice;
use crate::{FaultPlan, ModbusSim};

/// Unit id of the inverter.
pub const INVERTER_UNIT: u8 = 1;
/// Unit id of the battery.
pub const BATTERY_UNIT: u8 = 2;

/// A home's equipment and habits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HomeProfile {
    /// PV nameplate, W.
    pub nameplate_w: u32,
    /// Load at night, W.
    pub base_load_w: u32,
    /// Extra load at the morning and evening peaks, W.
    pub peak_load_w: u32,
    /// Battery capacity, Wh.
    pub capacity_wh: u32,
    /// Battery power limit, W.
    pub battery_w: u32,
    /// Initial state of charge, %.
    pub soc_pct: u32,
}

impl HomeProfile {
    /// A varied but reproducible home: some with big PV arrays, some with none to speak of.
    pub fn from_seed(seed: u64, index: u64) -> HomeProfile {
        let d = Dice::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let sunny = index.is_multiple_of(2);
        HomeProfile {
            nameplate_w: if sunny {
                5_000 + (d.next() % 5_000) as u32
            } else {
                800 + (d.next() % 1_500) as u32
            },
            base_load_w: 250 + (d.next() % 300) as u32,
            peak_load_w: 800 + (d.next() % 1_500) as u32,
            capacity_wh: 5_000 + (d.next() % 8_500) as u32,
            battery_w: 3_000 + (d.next() % 2_000) as u32,
            soc_pct: 20 + (d.next() % 30) as u32,
        }
    }

    /// Household load at a time of day: a base, a morning peak (06–09) and an evening peak
    /// (17–22).
    pub fn load_w(&self, time_of_day_ms: u64) -> u32 {
        let h = (time_of_day_ms % 86_400_000) as f64 / 3_600_000.0;
        let bump = |from: f64, to: f64| {
            if (from..to).contains(&h) {
                (std::f64::consts::PI * (h - from) / (to - from)).sin()
            } else {
                0.0
            }
        };
        let peak = bump(6.0, 9.0) * 0.6 + bump(17.0, 22.0);
        self.base_load_w + (f64::from(self.peak_load_w) * peak).round() as u32
    }
}

/// Power flows of a home at one instant, W.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Flows {
    /// PV output.
    pub pv_w: i64,
    /// Household load.
    pub load_w: i64,
    /// Battery (positive = discharge).
    pub battery_w: i64,
    /// Grid at the meter (positive = import).
    pub grid_w: i64,
    /// Battery state of charge, %.
    pub soc_pct: f64,
}

/// Energy integrated over a run, mWh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Imported from the grid.
    pub import_mwh: u64,
    /// Exported to the grid.
    pub export_mwh: u64,
    /// Integration remainder, mW·s.
    #[serde(skip)]
    remainder: i128,
}

impl Counters {
    /// Integrates `grid_w` over `dt_ms`.
    pub fn add(&mut self, grid_w: i64, dt_ms: u64) {
        // W × ms = mW·s, and 1 mWh = 3 600 mW·s.
        let total = i128::from(grid_w) * i128::from(dt_ms) + self.remainder;
        let whole = total / 3_600;
        self.remainder = total % 3_600;
        if whole >= 0 {
            self.import_mwh += whole as u64;
        } else {
            self.export_mwh += whole.unsigned_abs() as u64;
        }
    }
}

/// The self-consumption-only twin of a home's battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shadow {
    capacity_mwh: i64,
    energy_mwh: i64,
    max_w: i64,
    remainder: i64,
}

impl Shadow {
    /// Grid power of the shadow home for a net demand (`load − pv`), integrating its battery.
    fn step(&mut self, net_w: i64, dt_ms: u64) -> i64 {
        let want = net_w.clamp(-self.max_w, self.max_w);
        let battery_w = if want > 0 && self.energy_mwh <= 0
            || want < 0 && self.energy_mwh >= self.capacity_mwh
        {
            0
        } else {
            want
        };
        let total = battery_w * i64::try_from(dt_ms).unwrap_or(i64::MAX) + self.remainder;
        self.remainder = total % 3_600;
        self.energy_mwh = (self.energy_mwh - total / 3_600).clamp(0, self.capacity_mwh);
        net_w - battery_w
    }
}

/// A running simulated home.
#[derive(Debug)]
pub struct SimHome {
    /// Equipment.
    pub profile: HomeProfile,
    /// The inverter and battery server.
    pub modbus: ModbusSim,
    /// Latest flows.
    pub flows: Flows,
    /// The meter's counters.
    pub meter: Counters,
    /// What the meter would have counted without trading.
    pub shadow_meter: Counters,
    shadow: Shadow,
    shadow_grid_w: i64,
}

impl SimHome {
    /// Starts the home's Modbus server on loopback at scenario time `time_of_day_ms`.
    pub async fn start(profile: HomeProfile, time_of_day_ms: u64) -> std::io::Result<SimHome> {
        let mut devices = BTreeMap::new();
        devices.insert(
            INVERTER_UNIT,
            SimDevice::inverter(40000, profile.nameplate_w, time_of_day_ms),
        );
        devices.insert(
            BATTERY_UNIT,
            SimDevice::battery(
                40000,
                profile.capacity_wh,
                profile.battery_w,
                profile.soc_pct,
            ),
        );
        let modbus = ModbusSim::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            devices,
            FaultPlan::default(),
        )
        .await?;
        let capacity_mwh = i64::from(profile.capacity_wh) * 1000;
        Ok(SimHome {
            profile,
            modbus,
            flows: Flows::default(),
            meter: Counters::default(),
            shadow_meter: Counters::default(),
            shadow: Shadow {
                capacity_mwh,
                energy_mwh: capacity_mwh * i64::from(profile.soc_pct.min(100)) / 100,
                max_w: i64::from(profile.battery_w),
                remainder: 0,
            },
            shadow_grid_w: 0,
        })
    }

    /// Where the gateway reaches the inverter and the battery.
    pub fn addr(&self) -> SocketAddr {
        self.modbus.addr
    }

    /// Energy stored in the shadow home's battery now, Wh.
    pub fn shadow_stored_wh(&self) -> i64 {
        self.shadow.energy_mwh / 1000
    }

    /// Energy stored in the battery now, Wh.
    pub fn stored_wh(&self) -> u64 {
        self.modbus
            .devices
            .lock()
            .ok()
            .and_then(|d| match d.get(&BATTERY_UNIT).map(|b| &b.model) {
                Some(DeviceModel::Battery(s)) => Some(s.energy_mwh / 1000),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Grid power the shadow home (no trading) draws now, W.
    pub fn shadow_grid_w(&self) -> i64 {
        self.shadow_grid_w
    }

    /// Advances the home by `dt_ms` of scenario time.
    pub fn step(&mut self, dt_ms: u64) -> Flows {
        // The meters integrate the flows of the interval that just ended.
        self.meter.add(self.flows.grid_w, dt_ms);
        self.shadow_meter.add(self.shadow_grid_w, dt_ms);
        let Ok(mut devices) = self.modbus.devices.lock() else {
            return self.flows;
        };
        let mut time_of_day = 0;
        let mut pv_w = 0i64;
        if let Some(inv) = devices.get_mut(&INVERTER_UNIT) {
            inv.step(dt_ms);
            if let DeviceModel::Inverter(s) = &inv.model {
                time_of_day = s.time_of_day_ms;
                pv_w = i64::from(s.power_w);
            }
        }
        let load_w = i64::from(self.profile.load_w(time_of_day));
        let net_w = load_w - pv_w;
        let mut battery_w = 0i64;
        let mut soc_pct = 0.0;
        if let Some(bat) = devices.get_mut(&BATTERY_UNIT) {
            if let DeviceModel::Battery(s) = &mut bat.model {
                s.local_w = i32::try_from(net_w).unwrap_or(0);
            }
            bat.step(dt_ms);
            if let DeviceModel::Battery(s) = &bat.model {
                battery_w = i64::from(s.power_w);
                soc_pct = s.energy_mwh as f64 * 100.0 / s.capacity_mwh.max(1) as f64;
            }
        }
        self.shadow_grid_w = self.shadow.step(net_w, dt_ms);
        self.flows = Flows {
            pv_w,
            load_w,
            battery_w,
            grid_w: load_w - pv_w - battery_w,
            soc_pct,
        };
        // A signing battery sees the home's connection (a hybrid inverter's grid sensor).
        if let Some(s) = devices
            .get_mut(&BATTERY_UNIT)
            .and_then(|b| b.signer.as_mut())
        {
            s.grid_w = self.flows.grid_w;
            s.exported_mwh = self.meter.export_mwh;
        }
        self.flows
    }

    /// Hands the home's attestor key to its battery: from now on the battery signs the home's
    /// attestations and receipts (the gateway relays them).
    pub fn commission_signer(&self, device: crate::signing_device::SigningDevice) {
        if let Ok(mut d) = self.modbus.devices.lock() {
            if let Some(b) = d.get_mut(&BATTERY_UNIT) {
                b.signer = Some(device);
            }
        }
    }

    /// Claims the battery signed and refused (0, 0 without a signing battery).
    pub fn signer_counts(&self) -> (u64, u64) {
        self.modbus
            .devices
            .lock()
            .ok()
            .and_then(|d| {
                d.get(&BATTERY_UNIT)
                    .and_then(|b| b.signer.as_ref())
                    .map(|s| (s.signed, s.refused))
            })
            .unwrap_or((0, 0))
    }

    /// Energy the battery discharged since the start, mWh.
    pub fn battery_discharged_mwh(&self) -> u64 {
        self.modbus
            .devices
            .lock()
            .ok()
            .and_then(|d| match d.get(&BATTERY_UNIT).map(|b| &b.model) {
                Some(DeviceModel::Battery(s)) => Some(s.discharged_mwh),
                _ => None,
            })
            .unwrap_or(0)
    }
}

/// How a home's meter reaches its gateway.
#[derive(Debug)]
pub enum MeterOutput {
    /// DSMR 5 telegrams into the master side of a pseudo-terminal.
    Dsmr(tokio::fs::File),
    /// Tasmota JSON on an MQTT topic.
    Mqtt {
        /// The client.
        client: rumqttc::AsyncClient,
        /// The topic.
        topic: String,
        /// Its event loop.
        task: tokio::task::JoinHandle<()>,
    },
}

impl MeterOutput {
    /// A DSMR meter writing into a pseudo-terminal's master side (see [`crate::pty::NativePty`]).
    pub fn dsmr(pty: &crate::pty::NativePty) -> std::io::Result<MeterOutput> {
        Ok(MeterOutput::Dsmr(tokio::fs::File::from_std(pty.master()?)))
    }

    /// An MQTT meter publishing on `topic` at `host:port`.
    pub fn mqtt(host: &str, port: u16, client_id: &str, topic: &str) -> MeterOutput {
        let mut options = rumqttc::MqttOptions::new(client_id, host, port);
        options.set_keep_alive(std::time::Duration::from_secs(15));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        let task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        });
        MeterOutput::Mqtt {
            client,
            topic: topic.to_owned(),
            task,
        }
    }

    /// Sends one reading: the flows now, the counters so far, at scenario second `clock_s`.
    pub async fn send(
        &mut self,
        flows: &Flows,
        meter: &Counters,
        clock_s: u64,
    ) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            MeterOutput::Dsmr(master) => {
                let readings = crate::dsmr_sim::MeterReadings {
                    import_wh: [meter.import_mwh / 1000, 0],
                    export_wh: [meter.export_mwh / 1000, 0],
                    import_w: u32::try_from(flows.grid_w.max(0)).unwrap_or(u32::MAX),
                    export_w: u32::try_from((-flows.grid_w).max(0)).unwrap_or(u32::MAX),
                    gas_l: 0,
                    failures: 0,
                    clock_s,
                };
                let bytes = crate::dsmr_sim::telegram(
                    crate::dsmr_sim::Dialect::V5,
                    &readings,
                    gridlet_drivers::dsmr::CrcStyle::Padded,
                );
                // A reader that stopped reading must not stall the whole simulation.
                let write = async {
                    master.write_all(&bytes).await?;
                    master.flush().await
                };
                match tokio::time::timeout(std::time::Duration::from_millis(200), write).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::other("meter line blocked")),
                }
            }
            MeterOutput::Mqtt { client, topic, .. } => {
                let body = crate::mqtt_sim::payload(
                    gridlet_drivers::mqtt_meter::PayloadFormat::Tasmota,
                    i32::try_from(flows.grid_w).unwrap_or(0),
                    meter.import_mwh / 1000,
                    meter.export_mwh / 1000,
                );
                client
                    .try_publish(topic.clone(), rumqttc::QoS::AtMostOnce, false, body)
                    .map_err(std::io::Error::other)
            }
        }
    }
}

impl Drop for MeterOutput {
    fn drop(&mut self) {
        if let MeterOutput::Mqtt { task, .. } = self {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_integrate_exactly() {
        let mut c = Counters::default();
        for _ in 0..3_600 {
            c.add(1_000, 1_000);
        }
        assert_eq!(c.import_mwh, 1_000_000);
        c.add(-500, 3_600_000);
        assert_eq!(c.export_mwh, 500_000);
    }

    #[test]
    fn a_shadow_battery_stores_surplus_and_covers_deficit_within_limits() {
        let mut s = Shadow {
            capacity_mwh: 1_000_000,
            energy_mwh: 0,
            max_w: 2_000,
            remainder: 0,
        };
        // 3 kW surplus: 2 kW stored, 1 kW exported.
        assert_eq!(s.step(-3_000, 1_800_000), -1_000);
        assert_eq!(s.energy_mwh, 1_000_000);
        // Full: everything exported.
        assert_eq!(s.step(-500, 1_000), -500);
        // 500 W deficit for 2 h: 1 kWh covered, then import.
        assert_eq!(s.step(500, 7_200_000), 0);
        assert_eq!(s.energy_mwh, 0);
        assert_eq!(s.step(500, 1_000), 500);
    }

    #[test]
    fn load_peaks_in_the_evening() {
        let p = HomeProfile::from_seed(1, 0);
        assert_eq!(p.load_w(3 * 3_600_000), p.base_load_w);
        assert!(p.load_w(19 * 3_600_000 + 1_800_000) > p.base_load_w + p.peak_load_w / 2);
    }
}
