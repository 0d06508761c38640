//! Reading a SunSpec device's role values (PV power and energy; battery state of charge and
//! power; grid power and energy) with explicit quality, and commanding a battery.
//!
//! Model preference: PV 701 → 111–113 (float) → 101–103; battery 802 → 713 → 124; meter
//! 211–214 (float) → 201–204. Sign convention: grid power positive = import, battery power
//! positive = discharge; `invert` flips a device wired the other way.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_modbus::ExceptionCode;

use crate::modbus::{ModbusError, ModbusLink, ModbusResult};
use crate::quality::{apply_sign, ImplausibleError, Limits, MonotonicCounter, Reading};
use crate::sunspec::decode::{decode_model, DecodedModel, Value, WordOrder};
use crate::sunspec::model;
use crate::sunspec::scan::ScanResult;

/// Seconds after which a battery reverts a discharge/charge rate we set (SunSpec 124
/// `InOutWRte_RvrtTms`), if it implements the point.
pub const REVERT_AFTER_S: u16 = 60;

/// Per-device settings.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Modbus unit id.
    pub unit: u8,
    /// Word order of multi-register values.
    pub order: WordOrder,
    /// Flip the sign of power readings.
    pub invert: bool,
    /// Plausibility limits.
    pub limits: Limits,
    /// A value not refreshed for this long stops being reported at all.
    pub stale_after: Duration,
}

/// Where a model sits on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLocation {
    /// Model id.
    pub id: u16,
    /// Address of its ID register.
    pub address: u16,
    /// L as the device sent it.
    pub length: u16,
}

/// PV inverter values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PvReading {
    /// AC power, W.
    pub power_w: Reading<f64>,
    /// Lifetime energy, Wh.
    pub energy_wh: Reading<f64>,
}

/// Battery values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatteryReading {
    /// State of charge, %.
    pub soc_pct: Reading<f64>,
    /// Power, W (positive = discharge).
    pub power_w: Reading<f64>,
}

/// Grid meter values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterReading {
    /// Power, W (positive = import).
    pub power_w: Reading<f64>,
    /// Imported energy, Wh.
    pub import_wh: Reading<f64>,
    /// Exported energy, Wh.
    pub export_wh: Reading<f64>,
}

/// A discovered SunSpec device and the last good value of each quantity.
#[derive(Debug)]
pub struct SunSpecDevice {
    settings: DeviceSettings,
    models: Vec<ModelLocation>,
    last: BTreeMap<&'static str, (f64, Instant)>,
    counters: BTreeMap<&'static str, MonotonicCounter>,
}

/// Outcome of reading one model.
enum Fetch {
    Model(Box<DecodedModel>),
    Refused(ExceptionCode),
    Failed(ModbusError),
}

impl SunSpecDevice {
    /// A device from a completed scan.
    pub fn from_scan(settings: DeviceSettings, scan: &ScanResult) -> SunSpecDevice {
        SunSpecDevice {
            settings,
            models: scan
                .models
                .iter()
                .map(|m| ModelLocation {
                    id: m.id,
                    address: m.address,
                    length: m.length,
                })
                .collect(),
            last: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }

    /// Scans the device behind `link` and keeps its model map; `None` if it has no SunSpec
    /// marker at any base.
    pub async fn discover(
        link: &mut ModbusLink,
        settings: DeviceSettings,
    ) -> Result<Option<SunSpecDevice>, ModbusError> {
        let scan = crate::modbus::sunspec_scan(link, settings.unit, settings.order).await?;
        Ok(scan.map(|s| SunSpecDevice::from_scan(settings, &s)))
    }

    /// The unit id.
    pub fn settings_unit(&self) -> u8 {
        self.settings.unit
    }

    /// The models found.
    pub fn models(&self) -> &[ModelLocation] {
        &self.models
    }

    fn first_of(&self, ids: &[u16]) -> Option<ModelLocation> {
        ids.iter()
            .find_map(|id| self.models.iter().find(|m| m.id == *id).copied())
    }

    async fn fetch(&self, link: &mut ModbusLink, loc: ModelLocation) -> Fetch {
        match link
            .read_holding(self.settings.unit, loc.address, loc.length + 2)
            .await
        {
            Ok(Ok(regs)) => match decode_model(loc.address, &regs, self.settings.order) {
                Some(m) if m.id == loc.id => Fetch::Model(Box::new(m)),
                _ => Fetch::Failed(ModbusError::WrongLength {
                    endpoint: link.config().endpoint.to_string(),
                    asked: loc.length + 2,
                    got: regs.len(),
                }),
            },
            Ok(Err(code)) => Fetch::Refused(code),
            Err(e) => Fetch::Failed(e),
        }
    }

    /// Turns a point of a fetched model into a reading, checking it, remembering it.
    fn judge(
        &mut self,
        key: &'static str,
        fetched: &Fetch,
        point: Option<&str>,
        check: impl Fn(&Limits, f64) -> Result<f64, ImplausibleError>,
        monotonic: bool,
    ) -> Reading<f64> {
        let now = Instant::now();
        let stale = |last: Option<&(f64, Instant)>, reason: String, after: Duration| match last {
            Some((v, at)) if now.duration_since(*at) <= after => Reading::Stale {
                value: *v,
                age: now.duration_since(*at),
            },
            _ => Reading::CommError { reason },
        };
        match fetched {
            Fetch::Failed(e) => stale(self.last.get(key), e.to_string(), self.settings.stale_after),
            Fetch::Refused(code) => Reading::Refused {
                exception: format!("{code:?}"),
            },
            Fetch::Model(m) => {
                let Some(point) = point else {
                    return Reading::NotImplemented;
                };
                match m.point(point) {
                    None | Some(Value::NotImplemented) => Reading::NotImplemented,
                    Some(v) => match v.as_f64() {
                        None => Reading::NotImplemented,
                        Some(raw) => {
                            let checked = crate::quality::check_finite(raw)
                                .and_then(|x| check(&self.settings.limits, x))
                                .and_then(|x| {
                                    if monotonic {
                                        self.counters.entry(key).or_default().check(x)
                                    } else {
                                        Ok(x)
                                    }
                                });
                            match checked {
                                Ok(value) => {
                                    self.last.insert(key, (value, now));
                                    Reading::Valid { value }
                                }
                                Err(e) => Reading::Implausible {
                                    reason: e.to_string(),
                                },
                            }
                        }
                    },
                }
            }
        }
    }

    /// Reads PV power and energy.
    pub async fn read_pv(&mut self, link: &mut ModbusLink) -> PvReading {
        let Some(loc) = self.first_of(&[701, 113, 112, 111, 103, 102, 101]) else {
            return PvReading {
                power_w: Reading::NotImplemented,
                energy_wh: Reading::NotImplemented,
            };
        };
        let fetched = self.fetch(link, loc).await;
        let energy_point = if loc.id == 701 { "TotWhInj" } else { "WH" };
        let invert = self.settings.invert;
        PvReading {
            power_w: self.judge(
                "pv_w",
                &fetched,
                Some("W"),
                |l, w| l.check_power(apply_sign(w, invert)),
                false,
            ),
            energy_wh: self.judge("pv_wh", &fetched, Some(energy_point), |_, wh| Ok(wh), true),
        }
    }

    /// Reads battery state of charge and power.
    pub async fn read_battery(&mut self, link: &mut ModbusLink) -> BatteryReading {
        let Some(loc) = self.first_of(&[802, 713, 124]) else {
            return BatteryReading {
                soc_pct: Reading::NotImplemented,
                power_w: Reading::NotImplemented,
            };
        };
        let fetched = self.fetch(link, loc).await;
        let (soc_point, power_point) = match loc.id {
            802 => ("SoC", Some("W")),
            713 => ("SoC", None),
            _ => ("ChaState", None),
        };
        let invert = self.settings.invert;
        BatteryReading {
            soc_pct: self.judge(
                "bat_soc",
                &fetched,
                Some(soc_point),
                |l, s| l.check_soc(s),
                false,
            ),
            power_w: self.judge(
                "bat_w",
                &fetched,
                power_point,
                |l, w| l.check_power(apply_sign(w, invert)),
                false,
            ),
        }
    }

    /// Reads the energy available in the battery, Wh (SunSpec 713 `WHAvail`): the meter the
    /// release of traded energy is measured against.
    pub async fn read_available_wh(&mut self, link: &mut ModbusLink) -> Reading<f64> {
        let Some(loc) = self.first_of(&[713]) else {
            return Reading::NotImplemented;
        };
        let fetched = self.fetch(link, loc).await;
        self.judge(
            "bat_avail_wh",
            &fetched,
            Some("WHAvail"),
            |_, wh| Ok(wh),
            false,
        )
    }

    /// Reads grid power and energy counters.
    pub async fn read_meter(&mut self, link: &mut ModbusLink) -> MeterReading {
        let Some(loc) = self.first_of(&[213, 214, 212, 211, 203, 204, 202, 201]) else {
            return MeterReading {
                power_w: Reading::NotImplemented,
                import_wh: Reading::NotImplemented,
                export_wh: Reading::NotImplemented,
            };
        };
        let fetched = self.fetch(link, loc).await;
        let invert = self.settings.invert;
        MeterReading {
            power_w: self.judge(
                "grid_w",
                &fetched,
                Some("W"),
                |l, w| l.check_power(apply_sign(w, invert)),
                false,
            ),
            import_wh: self.judge(
                "grid_imp_wh",
                &fetched,
                Some("TotWhImp"),
                |_, wh| Ok(wh),
                true,
            ),
            export_wh: self.judge(
                "grid_exp_wh",
                &fetched,
                Some("TotWhExp"),
                |_, wh| Ok(wh),
                true,
            ),
        }
    }

    /// Hands the battery back to its own controller (SunSpec 124 `StorCtl_Mod` = 0: no limits
    /// from outside), e.g. when a release is over.
    pub async fn release_battery_control(&mut self, link: &mut ModbusLink) -> ModbusResult<()> {
        let Some(loc) = self.first_of(&[124]) else {
            // Model 704 has no "no limit" mode: its set-point 0 is the closest to idle.
            return self.set_battery_power(link, 0).await;
        };
        let offset = model::model(124)
            .and_then(|d| d.group.offset_of("StorCtl_Mod"))
            .unwrap_or(0);
        link.write_registers(self.settings.unit, loc.address + offset, &[0])
            .await
    }

    /// Commands battery power: positive discharges at that power, negative charges, 0 holds
    /// (the safe state). Through SunSpec model 124 where the device has it (rates as a
    /// percentage of `WChaMax`, pre-scaled by `InOutWRte_SF`), else through model 704 (`WSet`
    /// in watts, pre-scaled by `WSet_SF`, positive = injection). Values are written before the
    /// mode or enable flag, so a mode never activates with an old value.
    pub async fn set_battery_power(
        &mut self,
        link: &mut ModbusLink,
        power_w: i32,
    ) -> ModbusResult<()> {
        let power_w = if self.settings.invert {
            -power_w
        } else {
            power_w
        };
        if self.first_of(&[124]).is_none() {
            if let Some(loc) = self.first_of(&[704]) {
                return self.set_power_704(link, loc, power_w).await;
            }
        }
        let Some(loc) = self.first_of(&[124]) else {
            return Ok(Err(ExceptionCode::IllegalFunction));
        };
        let m = match self.fetch(link, loc).await {
            Fetch::Model(m) => m,
            Fetch::Refused(code) => return Ok(Err(code)),
            Fetch::Failed(e) => return Err(e),
        };
        let num = |p: &str| m.point(p).and_then(Value::as_f64);
        let (Some(wmax), Some(Value::Int(sf))) = (num("WChaMax"), m.point("InOutWRte_SF")) else {
            return Ok(Err(ExceptionCode::IllegalDataValue));
        };
        if wmax <= 0.0 {
            return Ok(Err(ExceptionCode::IllegalDataValue));
        }
        let pct = (f64::from(power_w.unsigned_abs()) / wmax * 100.0).min(100.0);
        let raw = (pct / crate::sunspec::decode::scale(1, i16::try_from(*sf).unwrap_or(0))).round()
            as i16;
        let group = &model::model(124).map(|d| &d.group);
        let offset = |p: &str| group.and_then(|g| g.offset_of(p)).unwrap_or(0);
        let (rate_point, mode) = if power_w < 0 {
            ("InWRte", 1u16)
        } else {
            ("OutWRte", 2u16)
        };
        let unit = self.settings.unit;
        if let Err(code) = link
            .write_registers(unit, loc.address + offset(rate_point), &[raw as u16])
            .await?
        {
            return Ok(Err(code));
        }
        // A revert timeout, where the device implements it, bounds what the battery does on its
        // last set-point if this gateway dies: the rate reverts to its default after it.
        if m.point("InOutWRte_RvrtTms")
            .is_some_and(|v| *v != Value::NotImplemented)
        {
            let _ = link
                .write_registers(
                    unit,
                    loc.address + offset("InOutWRte_RvrtTms"),
                    &[REVERT_AFTER_S],
                )
                .await?;
        }
        link.write_registers(unit, loc.address + offset("StorCtl_Mod"), &[mode])
            .await
    }

    async fn set_power_704(
        &mut self,
        link: &mut ModbusLink,
        loc: ModelLocation,
        power_w: i32,
    ) -> ModbusResult<()> {
        let m = match self.fetch(link, loc).await {
            Fetch::Model(m) => m,
            Fetch::Refused(code) => return Ok(Err(code)),
            Fetch::Failed(e) => return Err(e),
        };
        let sf = match m.point("WSet_SF") {
            Some(Value::Int(sf)) => i16::try_from(*sf).unwrap_or(0),
            // No scale factor implemented: watts as they are.
            _ => 0,
        };
        let raw = (f64::from(power_w) / crate::sunspec::decode::scale(1, sf)).round() as i32;
        let group = &model::model(704).map(|d| &d.group);
        let offset = |p: &str| group.and_then(|g| g.offset_of(p)).unwrap_or(0);
        let unit = self.settings.unit;
        let words = [(raw as u32 >> 16) as u16, raw as u32 as u16];
        if let Err(code) = link
            .write_registers(unit, loc.address + offset("WSet"), &words)
            .await?
        {
            return Ok(Err(code));
        }
        // WSetEna 1 = enabled, WSetMod 1 = watts (adjacent registers).
        link.write_registers(unit, loc.address + offset("WSetEna"), &[1, 1])
            .await
    }
}
