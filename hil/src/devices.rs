//! Simulated SunSpec devices: their register images and their physics.
//!
//! Each device is an image built from the same model tables the driver decodes with, plus a
//! pure `step(dt_ms)` that moves its state (PV power along a solar profile, battery energy as
//! the written set-points say, meter energy counters) and writes it back into the image.

use gridlet_drivers::sunspec::{SunSpecImage, Value};

/// Which device a simulator plays.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceModel {
    /// PV inverter: SunSpec 1 + 103 + 120.
    Inverter(InverterState),
    /// Battery ESS: SunSpec 1 + 124 + 802 + 713.
    Battery(BatteryState),
    /// Grid meter: SunSpec 1 + 203.
    Meter(MeterState),
}

/// A simulated device: its image and state.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// What the device serves.
    pub image: SunSpecImage,
    /// Its physics.
    pub model: DeviceModel,
    /// When set, physics no longer updates the image (a frozen device).
    pub frozen: bool,
    /// A battery that holds the home's attestor key answers on the signing block.
    pub signer: Option<crate::signing_device::SigningDevice>,
}

fn set(img: &mut SunSpecImage, id: u16, point: &str, v: Value) {
    // The points are fixed by this file and the vendored tables; a miss is a programming error
    // that the device tests catch, so it is ignored here rather than panicking a simulator.
    let _ = img.set(id, point, v);
}

fn common(img: &mut SunSpecImage, model: &str, serial: &str) {
    set(img, 1, "Mn", Value::Text("gridlet-hil".into()));
    set(img, 1, "Md", Value::Text(model.into()));
    set(img, 1, "Vr", Value::Text("1.0".into()));
    set(img, 1, "SN", Value::Text(serial.into()));
    set(img, 1, "DA", Value::Uint(1));
}

/// PV inverter state.
#[derive(Debug, Clone, PartialEq)]
pub struct InverterState {
    /// Nameplate power, W.
    pub nameplate_w: u32,
    /// Scenario time, ms since midnight.
    pub time_of_day_ms: u64,
    /// Current AC power, W.
    pub power_w: u32,
    /// Lifetime energy, mWh.
    pub energy_mwh: u64,
    /// Cloud factor in percent of clear-sky power (100 = clear).
    pub clear_sky_pct: u32,
}

/// Clear-sky PV power at a time of day: a half-sine from 06:00 to 18:00.
pub fn solar_profile_w(nameplate_w: u32, time_of_day_ms: u64) -> u32 {
    let h = (time_of_day_ms % 86_400_000) as f64 / 3_600_000.0;
    if !(6.0..18.0).contains(&h) {
        return 0;
    }
    let x = std::f64::consts::PI * (h - 6.0) / 12.0;
    (f64::from(nameplate_w) * x.sin()).round() as u32
}

impl SimDevice {
    /// A PV inverter of `nameplate_w` at scenario time `time_of_day_ms`.
    pub fn inverter(base: u16, nameplate_w: u32, time_of_day_ms: u64) -> SimDevice {
        let mut img = SunSpecImage::new(base);
        let _ = img.add_model(1, None);
        let _ = img.add_model(103, None);
        let _ = img.add_model(120, None);
        img.end();
        common(&mut img, "PV inverter", "INV-0001");
        for (p, v) in [
            ("A_SF", -2),
            ("V_SF", -1),
            ("W_SF", 0),
            ("Hz_SF", -2),
            ("WH_SF", 0),
            ("DCW_SF", 0),
        ] {
            set(&mut img, 103, p, Value::Int(v));
        }
        set(&mut img, 103, "Hz", Value::Uint(5000));
        set(&mut img, 103, "PhVphA", Value::Uint(2300));
        set(&mut img, 103, "PhVphB", Value::Uint(2300));
        set(&mut img, 103, "PhVphC", Value::Uint(2300));
        set(&mut img, 120, "DERTyp", Value::Uint(4));
        set(&mut img, 120, "WRtg", Value::Uint(u64::from(nameplate_w)));
        set(&mut img, 120, "WRtg_SF", Value::Int(0));
        let mut dev = SimDevice {
            signer: None,
            image: img,
            model: DeviceModel::Inverter(InverterState {
                nameplate_w,
                time_of_day_ms,
                power_w: 0,
                energy_mwh: 1_000_000,
                clear_sky_pct: 100,
            }),
            frozen: false,
        };
        dev.step(0);
        dev
    }

    /// A battery of `capacity_wh` and `max_power_w`, starting at `soc_pct`.
    pub fn battery(base: u16, capacity_wh: u32, max_power_w: u32, soc_pct: u32) -> SimDevice {
        let mut img = SunSpecImage::new(base);
        let _ = img.add_model(1, None);
        let _ = img.add_model(124, None);
        let _ = img.add_model(802, None);
        let _ = img.add_model(713, None);
        img.end();
        common(&mut img, "Battery ESS", "ESS-0001");
        for (p, v) in [
            ("WChaMax_SF", 0),
            ("InOutWRte_SF", -2),
            ("ChaState_SF", -1),
            ("MinRsvPct_SF", -1),
            ("WChaDisChaGra_SF", 0),
        ] {
            set(&mut img, 124, p, Value::Int(v));
        }
        set(
            &mut img,
            124,
            "WChaMax",
            Value::Uint(u64::from(max_power_w)),
        );
        set(&mut img, 124, "StorCtl_Mod", Value::Uint(0));
        set(&mut img, 124, "OutWRte", Value::Int(0));
        set(&mut img, 124, "InWRte", Value::Int(0));
        set(&mut img, 124, "MinRsvPct", Value::Uint(0));
        set(&mut img, 124, "InOutWRte_RvrtTms", Value::Uint(0));
        for (p, v) in [
            ("WHRtg_SF", 0),
            ("WChaDisChaMax_SF", 0),
            ("SoC_SF", -1),
            ("W_SF", 0),
            ("SoH_SF", 0),
        ] {
            set(&mut img, 802, p, Value::Int(v));
        }
        set(&mut img, 802, "WHRtg", Value::Uint(u64::from(capacity_wh)));
        set(
            &mut img,
            802,
            "WChaRteMax",
            Value::Uint(u64::from(max_power_w)),
        );
        set(
            &mut img,
            802,
            "WDisChaRteMax",
            Value::Uint(u64::from(max_power_w)),
        );
        set(&mut img, 802, "SoCMax", Value::Uint(1000));
        set(&mut img, 802, "SoCMin", Value::Uint(0));
        set(&mut img, 802, "SoH", Value::Uint(100));
        set(&mut img, 802, "Typ", Value::Uint(4));
        set(&mut img, 713, "WH_SF", Value::Int(0));
        set(&mut img, 713, "Pct_SF", Value::Int(-1));
        set(&mut img, 713, "WHRtg", Value::Uint(u64::from(capacity_wh)));
        set(&mut img, 713, "SoH", Value::Uint(1000));
        let energy_mwh = u64::from(capacity_wh) * 1000 * u64::from(soc_pct.min(100)) / 100;
        let mut dev = SimDevice {
            signer: None,
            image: img,
            model: DeviceModel::Battery(BatteryState {
                capacity_mwh: u64::from(capacity_wh) * 1000,
                max_power_w,
                energy_mwh,
                power_w: 0,
                discharged_mwh: 0,
                charged_mwh: 0,
                remainder_mws: 0,
                local_w: 0,
            }),
            frozen: false,
        };
        dev.step(0);
        dev
    }

    /// A three-phase grid meter (positive power = import).
    pub fn meter(base: u16, power_w: i32) -> SimDevice {
        let mut img = SunSpecImage::new(base);
        let _ = img.add_model(1, None);
        let _ = img.add_model(203, None);
        img.end();
        common(&mut img, "Grid meter", "MTR-0001");
        for (p, v) in [
            ("A_SF", -2),
            ("V_SF", -1),
            ("Hz_SF", -2),
            ("W_SF", 0),
            ("TotWh_SF", 0),
        ] {
            set(&mut img, 203, p, Value::Int(v));
        }
        set(&mut img, 203, "Hz", Value::Int(5000));
        set(&mut img, 203, "PhV", Value::Int(2300));
        let mut dev = SimDevice {
            signer: None,
            image: img,
            model: DeviceModel::Meter(MeterState {
                power_w,
                import_mwh: 5_000_000,
                export_mwh: 1_000_000,
                remainder_mws: 0,
            }),
            frozen: false,
        };
        dev.step(0);
        dev
    }

    /// Advances the device by `dt_ms` of scenario time and refreshes its image.
    pub fn step(&mut self, dt_ms: u64) {
        match &mut self.model {
            DeviceModel::Inverter(s) => s.step(&mut self.image, dt_ms, self.frozen),
            DeviceModel::Battery(s) => s.step(&mut self.image, dt_ms, self.frozen),
            DeviceModel::Meter(s) => s.step(&mut self.image, dt_ms, self.frozen),
        }
    }
}

impl InverterState {
    fn step(&mut self, img: &mut SunSpecImage, dt_ms: u64, frozen: bool) {
        self.energy_mwh += u64::from(self.power_w) * dt_ms / 3_600;
        self.time_of_day_ms = (self.time_of_day_ms + dt_ms) % 86_400_000;
        self.power_w =
            solar_profile_w(self.nameplate_w, self.time_of_day_ms) * self.clear_sky_pct / 100;
        if frozen {
            return;
        }
        set(img, 103, "W", Value::Int(i64::from(self.power_w)));
        set(
            img,
            103,
            "DCW",
            Value::Int(i64::from(self.power_w) * 103 / 100),
        );
        set(
            img,
            103,
            "A",
            Value::Uint(u64::from(self.power_w) * 100 / 690),
        );
        set(img, 103, "WH", Value::Uint(self.energy_mwh / 1000));
        set(
            img,
            103,
            "St",
            Value::Uint(if self.power_w > 0 { 4 } else { 2 }),
        );
    }
}

/// Battery state. Power positive = discharge (the project's sign convention).
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryState {
    /// Capacity, mWh.
    pub capacity_mwh: u64,
    /// Charge/discharge limit, W.
    pub max_power_w: u32,
    /// Stored energy, mWh.
    pub energy_mwh: u64,
    /// Current power, W (positive = discharge).
    pub power_w: i32,
    /// Energy discharged since start, mWh.
    pub discharged_mwh: u64,
    /// Energy charged since start, mWh.
    pub charged_mwh: u64,
    /// Sub-mWh remainder of integration (mW·s), so long runs lose nothing to rounding.
    pub remainder_mws: i64,
    /// What the battery's own controller wants when no one limits it (self-consumption:
    /// positive = cover the home's deficit, negative = store its surplus), W.
    pub local_w: i32,
}

impl BatteryState {
    /// The power the written set-points ask for (SunSpec 124: StorCtl_Mod bit 1 = limit
    /// discharge to OutWRte, bit 0 = limit charge to InWRte, both in % of WChaMax).
    fn commanded_w(&self, img: &SunSpecImage) -> i32 {
        // One decode per step: the physics runs every few milliseconds in the simulators.
        let Ok(controls) = img.decoded(124) else {
            return 0;
        };
        let num = |p: &str| controls.point(p).and_then(|v| v.as_f64());
        let wmax = num("WChaMax")
            .unwrap_or(f64::from(self.max_power_w))
            .min(f64::from(self.max_power_w));
        let mode = controls
            .point("StorCtl_Mod")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let own = self.local_w.clamp(-(wmax as i32), wmax as i32);
        if mode & 0b10 != 0 {
            // A discharge rate set from outside is followed; a zero rate still lets the
            // battery store the home's surplus (it only stops discharging).
            let out =
                (num("OutWRte").unwrap_or(0.0).clamp(0.0, 100.0) / 100.0 * wmax).round() as i32;
            if out > 0 {
                out
            } else {
                own.min(0)
            }
        } else if mode & 0b01 != 0 {
            -((num("InWRte").unwrap_or(0.0).clamp(0.0, 100.0) / 100.0 * wmax).round() as i32)
        } else {
            own
        }
    }

    fn step(&mut self, img: &mut SunSpecImage, dt_ms: u64, frozen: bool) {
        // Integrate the power of the last interval, limited by what is stored / free.
        let mws =
            i64::from(self.power_w) * i64::try_from(dt_ms).unwrap_or(i64::MAX) + self.remainder_mws;
        let mwh = mws / 3_600;
        self.remainder_mws = mws % 3_600;
        if mwh > 0 {
            let take = (mwh as u64).min(self.energy_mwh);
            self.energy_mwh -= take;
            self.discharged_mwh += take;
        } else if mwh < 0 {
            let room = self.capacity_mwh - self.energy_mwh;
            let put = mwh.unsigned_abs().min(room);
            self.energy_mwh += put;
            self.charged_mwh += put;
        }
        let wanted = self.commanded_w(img);
        self.power_w = if wanted > 0 && self.energy_mwh == 0
            || wanted < 0 && self.energy_mwh >= self.capacity_mwh
        {
            0
        } else {
            wanted
        };
        if frozen {
            return;
        }
        let soc_permille = self.energy_mwh * 1000 / self.capacity_mwh.max(1);
        let cha_st = match (self.power_w, soc_permille) {
            (p, _) if p > 0 => 3,
            (p, _) if p < 0 => 4,
            (_, 0) => 2,
            (_, 1000) => 5,
            _ => 6,
        };
        set(img, 124, "ChaState", Value::Uint(soc_permille));
        set(img, 124, "ChaSt", Value::Uint(cha_st));
        set(img, 802, "SoC", Value::Uint(soc_permille));
        set(img, 802, "W", Value::Int(i64::from(self.power_w)));
        set(img, 802, "ChaSt", Value::Uint(cha_st));
        set(img, 713, "SoC", Value::Uint(soc_permille));
        set(img, 713, "WHAvail", Value::Uint(self.energy_mwh / 1000));
    }
}

/// Grid meter state (positive power = import).
#[derive(Debug, Clone, PartialEq)]
pub struct MeterState {
    /// Current power, W.
    pub power_w: i32,
    /// Imported energy, mWh.
    pub import_mwh: u64,
    /// Exported energy, mWh.
    pub export_mwh: u64,
    /// Integration remainder, mW·s.
    pub remainder_mws: i64,
}

impl MeterState {
    fn step(&mut self, img: &mut SunSpecImage, dt_ms: u64, frozen: bool) {
        let mws =
            i64::from(self.power_w) * i64::try_from(dt_ms).unwrap_or(i64::MAX) + self.remainder_mws;
        let mwh = mws / 3_600;
        self.remainder_mws = mws % 3_600;
        if mwh >= 0 {
            self.import_mwh += mwh as u64;
        } else {
            self.export_mwh += mwh.unsigned_abs();
        }
        if frozen {
            return;
        }
        set(img, 203, "W", Value::Int(i64::from(self.power_w)));
        set(img, 203, "WphA", Value::Int(i64::from(self.power_w / 3)));
        set(img, 203, "TotWhImp", Value::Uint(self.import_mwh / 1000));
        set(img, 203, "TotWhExp", Value::Uint(self.export_mwh / 1000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(dev: &SimDevice, id: u16, p: &str) -> f64 {
        dev.image.value(id, p).unwrap().as_f64().unwrap()
    }

    #[test]
    fn battery_discharges_what_the_setpoint_says_within_limits() {
        let mut b = SimDevice::battery(40000, 10_000, 5_000, 50);
        assert_eq!(point(&b, 802, "SoC"), 50.0);
        // Discharge at 40 % of WChaMax = 2000 W for one hour.
        assert!(b
            .image
            .write(b.image.point_address(124, "StorCtl_Mod").unwrap(), &[2]));
        assert!(b
            .image
            .write(b.image.point_address(124, "OutWRte").unwrap(), &[4000]));
        b.step(0);
        assert_eq!(point(&b, 802, "W"), 2000.0);
        for _ in 0..3600 {
            b.step(1000);
        }
        let DeviceModel::Battery(s) = &b.model else {
            unreachable!()
        };
        assert_eq!(s.discharged_mwh, 2_000_000);
        assert_eq!(point(&b, 802, "SoC"), 30.0);
        // A read-only point cannot be written.
        assert!(!b
            .image
            .write(b.image.point_address(802, "SoC").unwrap(), &[1]));
    }

    #[test]
    fn empty_battery_stops_discharging() {
        let mut b = SimDevice::battery(40000, 1_000, 5_000, 1);
        b.image
            .write(b.image.point_address(124, "StorCtl_Mod").unwrap(), &[2]);
        b.image
            .write(b.image.point_address(124, "OutWRte").unwrap(), &[10000]);
        for _ in 0..100 {
            b.step(1000);
        }
        assert_eq!(point(&b, 802, "W"), 0.0);
        assert_eq!(point(&b, 802, "SoC"), 0.0);
    }

    #[test]
    fn inverter_follows_the_sun() {
        let noon = SimDevice::inverter(40000, 6_000, 12 * 3_600_000);
        assert_eq!(point(&noon, 103, "W"), 6000.0);
        let night = SimDevice::inverter(40000, 6_000, 2 * 3_600_000);
        assert_eq!(point(&night, 103, "W"), 0.0);
        assert_eq!(point(&noon, 120, "WRtg"), 6000.0);
    }
}
