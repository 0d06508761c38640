//! The device and input rows of the fault matrix (`../shared/notes/reliability.md` D1–D4, V1)
//! as functions that run the real drivers against the simulators and return their figures, one
//! JSON object per row: `gridlet device-faults` prints them, the tests run them small.
//!
//! Each row counts what the household cares about — a value from a broken answer that passed
//! as valid — rather than asserting inside, so a bad figure is reported, not hidden in a panic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gridlet_drivers::backoff::BackoffPolicy;
use gridlet_drivers::device::{DeviceSettings, SunSpecDevice};
use gridlet_drivers::modbus::{sunspec_scan, Endpoint, LinkConfig, ModbusError, ModbusLink};
use gridlet_drivers::quality::{Limits, Reading};
use gridlet_drivers::sunspec::{SunSpecImage, Value, WordOrder};
use serde_json::{json, Value as Json};

use crate::{FaultPlan, ModbusSim, SimDevice};

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn link(addr: SocketAddr, timeout_ms: u64, backoff_max_ms: u64) -> ModbusLink {
    let mut cfg = LinkConfig::new(Endpoint::Tcp(addr));
    cfg.timeout = Duration::from_millis(timeout_ms);
    cfg.backoff = BackoffPolicy {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(backoff_max_ms),
    };
    ModbusLink::new(cfg)
}

/// A device whose every register holds a value derived from its address, so an answer that
/// belongs to another request, or a garbled one, can never pass for the right one.
fn patterned() -> SimDevice {
    let mut dev = SimDevice::meter(0, 0);
    dev.image = SunSpecImage {
        base: 0,
        regs: (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 16) as u16)
            .collect(),
        models: Vec::new(),
        writable: vec![false; 4000],
    };
    dev.frozen = true;
    dev
}

fn rows_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

async fn scanned(
    link: &mut ModbusLink,
    unit: u8,
    nameplate_w: Option<f64>,
    stale_after: Duration,
) -> std::io::Result<SunSpecDevice> {
    let scan = sunspec_scan(link, unit, WordOrder::BigEndian)
        .await
        .map_err(rows_error)?
        .ok_or_else(|| rows_error(format!("unit {unit} has no SunSpec marker")))?;
    Ok(SunSpecDevice::from_scan(
        DeviceSettings {
            unit,
            order: WordOrder::BigEndian,
            invert: false,
            limits: Limits { nameplate_w },
            stale_after,
        },
        &scan,
    ))
}

fn home_devices(soc_pct: u32, meter_w: i32) -> BTreeMap<u8, SimDevice> {
    let mut devices = BTreeMap::new();
    devices.insert(1, SimDevice::inverter(40000, 6000, 12 * 3_600_000));
    devices.insert(2, SimDevice::battery(40000, 10_000, 5_000, soc_pct));
    devices.insert(3, SimDevice::meter(40000, meter_w));
    devices
}

/// D1: the device answers 30 % of requests with an exception. Each battery and meter reading
/// is either refused (never valid) or the device's true value.
pub async fn d1_exceptions(exceptions: u64) -> std::io::Result<Json> {
    let truth_soc = 57.0;
    let truth_w = 812.0;
    let scan_sim = ModbusSim::start(local(), home_devices(57, 812), FaultPlan::default()).await?;
    let mut scan_link = link(scan_sim.addr, 500, 20);
    let mut bat = scanned(&mut scan_link, 2, None, Duration::from_secs(10)).await?;
    let mut met = scanned(&mut scan_link, 3, None, Duration::from_secs(10)).await?;
    let plan = FaultPlan {
        exception_percent: 30,
        seed: 68,
        ..FaultPlan::default()
    };
    let sim = ModbusSim::start(local(), home_devices(57, 812), plan).await?;
    let mut l = link(sim.addr, 500, 20);
    let (mut readings, mut refused, mut valid, mut wrong) = (0u64, 0u64, 0u64, 0u64);
    let mut check = |r: &Reading<f64>, truth: f64| {
        readings += 1;
        match r {
            Reading::Refused { .. } => refused += 1,
            Reading::Valid { value } if (*value - truth).abs() < 1e-9 => valid += 1,
            // Anything else valid, or a stale or missing value while the device answers,
            // would be a decision on data that is not the device's.
            _ => wrong += 1,
        }
    };
    while l.stats().exceptions < exceptions {
        let b = bat.read_battery(&mut l).await;
        check(&b.soc_pct, truth_soc);
        let m = met.read_meter(&mut l).await;
        check(&m.power_w, truth_w);
    }
    Ok(json!({
        "row": "D1",
        "exceptions": l.stats().exceptions,
        "readings": readings,
        "refused": refused,
        "valid_and_true": valid,
        "wrong_or_admitted_from_exception": wrong,
        "connects": l.stats().connects,
        "panics": 0,
    }))
}

/// D2: 20 % of replies come later than the client's timeout, on four links at once. A value
/// is misattributed if the words returned are not the ones at the requested address.
pub async fn d2_late_replies(requests: u64) -> std::io::Result<Json> {
    let dev = patterned();
    let image = dev.image.clone();
    let mut devices = BTreeMap::new();
    devices.insert(1, dev);
    let plan = FaultPlan {
        late_percent: 20,
        late_by_ms: 15,
        seed: 324,
        ..FaultPlan::default()
    };
    let sim = ModbusSim::start(local(), devices, plan).await?;
    let per_link = requests.div_ceil(4);
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let image = image.clone();
        let addr = sim.addr;
        tasks.push(tokio::spawn(async move {
            let mut l = link(addr, 10, 20);
            let (mut good, mut wrong, mut late) = (0u64, 0u64, 0u64);
            let mut x = 0x9E37_79B9u64 ^ t;
            for _ in 0..per_link {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let count = 1 + (x % 125) as u16;
                let at = ((x >> 8) % (4000 - 125)) as u16;
                let result = loop {
                    match l.read_holding(1, at, count).await {
                        Err(ModbusError::BackingOff { .. }) => {
                            tokio::time::sleep(l.backoff_remaining()).await;
                        }
                        other => break other,
                    }
                };
                match result {
                    Ok(Ok(words)) if Some(words.as_slice()) == image.read(at, count) => good += 1,
                    Ok(_) => wrong += 1,
                    Err(ModbusError::Timeout { .. }) => late += 1,
                    Err(_) => late += 1,
                }
            }
            (good, wrong, late, l.stats().connects)
        }));
    }
    let (mut good, mut wrong, mut late, mut connects) = (0u64, 0u64, 0u64, 0u64);
    for t in tasks {
        let (g, w, f, c) = t.await.map_err(rows_error)?;
        good += g;
        wrong += w;
        late += f;
        connects += c;
    }
    Ok(json!({
        "row": "D2",
        "requests": good + wrong + late,
        "late_or_timed_out": late,
        "good": good,
        "misattributed": wrong,
        "connects": connects,
    }))
}

/// D3: 30 % of answer frames have a corrupted MBAP header (Modbus TCP's only checkable part).
/// None may be accepted with other words than the device's; after a rejected frame, the polls
/// until the next good answer are counted.
pub async fn d3_corrupted_frames(corrupted: u64) -> std::io::Result<Json> {
    let dev = patterned();
    let image = dev.image.clone();
    let mut devices = BTreeMap::new();
    devices.insert(1, dev);
    let plan = FaultPlan {
        garbage_percent: 30,
        seed: 3,
        ..FaultPlan::default()
    };
    let sim = ModbusSim::start(local(), devices, plan).await?;
    let mut l = link(sim.addr, 100, 20);
    let (mut good, mut accepted_wrong, mut rejected) = (0u64, 0u64, 0u64);
    let (mut since_reject, mut worst_recovery) = (None::<u64>, 0u64);
    let mut i = 0u64;
    while rejected < corrupted {
        i += 1;
        let at = u16::try_from((i * 3) % 3800).unwrap_or(0);
        match l.read_holding(1, at, 20).await {
            Ok(Ok(words)) => {
                if Some(words.as_slice()) == image.read(at, 20) {
                    good += 1;
                } else {
                    accepted_wrong += 1;
                }
                if let Some(n) = since_reject.take() {
                    worst_recovery = worst_recovery.max(n);
                }
            }
            Ok(Err(_)) => accepted_wrong += 1,
            Err(ModbusError::BackingOff { .. }) => {
                tokio::time::sleep(l.backoff_remaining()).await;
            }
            Err(_) => {
                rejected += 1;
                since_reject = Some(0);
            }
        }
        if let Some(n) = since_reject.as_mut() {
            *n += 1;
        }
    }
    Ok(json!({
        "row": "D3",
        "transport": "tcp",
        "corrupted_frames_rejected": rejected,
        "accepted_with_wrong_words": accepted_wrong,
        "good": good,
        // Polls from a rejected frame to the next good answer, the rejected one included
        // (1: the very next poll was good).
        "worst_recovery_polls": worst_recovery.saturating_sub(1).max(1),
        "connects": l.stats().connects,
    }))
}

/// D4: the meter goes away for `outage`, then comes back on the same port. The link has the
/// gateway's defaults (1 s timeout, reconnect backoff 1 s doubling to 60 s); readings are
/// polled every 100 ms: the time until they stop being valid, until they hold no value at all
/// (`stale_after` passed), until the first valid reading after the return, and the connection
/// attempts meanwhile.
pub async fn d4_device_restart(outage: Duration, stale_after: Duration) -> std::io::Result<Json> {
    let mut devices = BTreeMap::new();
    devices.insert(3, SimDevice::meter(40000, 640));
    let sim = ModbusSim::start(local(), devices, FaultPlan::default()).await?;
    let addr = sim.addr;
    let cfg = LinkConfig::new(Endpoint::Tcp(addr));
    let backoff_max = cfg.backoff.max;
    let max_ms = u64::try_from(backoff_max.as_millis()).unwrap_or(u64::MAX);
    let mut l = ModbusLink::new(cfg);
    let mut met = scanned(&mut l, 3, None, stale_after).await?;
    let poll = Duration::from_millis(100);
    let first = met.read_meter(&mut l).await.power_w;
    if !first.is_valid() {
        return Err(rows_error(format!(
            "meter not valid before the outage: {first:?}"
        )));
    }
    let before = l.stats().clone();
    sim.stop();
    drop(sim);
    let down = Instant::now();
    let (mut not_valid_after, mut no_value_after) = (None, None);
    while down.elapsed() < outage {
        let r = met.read_meter(&mut l).await.power_w;
        let at = down.elapsed();
        if !r.is_valid() && not_valid_after.is_none() {
            not_valid_after = Some(at);
        }
        if matches!(r, Reading::CommError { .. }) && no_value_after.is_none() {
            no_value_after = Some(at);
        }
        tokio::time::sleep(poll).await;
    }
    let mut devices = BTreeMap::new();
    devices.insert(3, SimDevice::meter(40000, 640));
    let _back = ModbusSim::start(addr, devices, FaultPlan::default()).await?;
    let up = Instant::now();
    let recovered_after = loop {
        if met.read_meter(&mut l).await.power_w.is_valid() {
            break up.elapsed();
        }
        if up.elapsed() > backoff_max * 3 + Duration::from_secs(10) {
            return Err(rows_error("the meter did not come back"));
        }
        tokio::time::sleep(poll).await;
    };
    let after = l.stats();
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    Ok(json!({
        "row": "D4",
        "outage_s": outage.as_secs_f64(),
        "stale_after_ms": stale_after.as_millis() as u64,
        "not_valid_after_ms": ms(not_valid_after),
        "no_value_after_ms": ms(no_value_after),
        "recovered_after_return_ms": recovered_after.as_millis() as u64,
        "connection_attempts": (after.connects + after.connect_failures)
            .saturating_sub(before.connects + before.connect_failures),
        "backoff_max_ms": max_ms,
    }))
}

/// V1: implausible values served by otherwise healthy devices, cycling through the kinds a
/// field device produces: PV above 1.2 × nameplate, a state of charge above 100 %, an energy
/// counter going back, and a scale factor that makes power infinite. None may be admitted.
pub async fn v1_implausible(readings: u64) -> std::io::Result<Json> {
    let sim = ModbusSim::start(local(), home_devices(50, 800), FaultPlan::default()).await?;
    let mut l = link(sim.addr, 500, 20);
    let mut pv = scanned(&mut l, 1, Some(4000.0), Duration::from_secs(10)).await?;
    let mut bat = scanned(&mut l, 2, None, Duration::from_secs(10)).await?;
    let mut met = scanned(&mut l, 3, None, Duration::from_secs(10)).await?;
    // A first, plausible counter value for the meter to go back from.
    if !met.read_meter(&mut l).await.import_wh.is_valid() {
        return Err(rows_error("meter counter not valid at the start"));
    }
    let mut admitted = BTreeMap::<&str, u64>::new();
    let mut served = BTreeMap::<&str, u64>::new();
    let set = |unit: u8, model: u16, point: &str, v: Value| -> std::io::Result<()> {
        let mut d = sim.devices.lock().map_err(rows_error)?;
        let dev = d.get_mut(&unit).ok_or_else(|| rows_error("no such unit"))?;
        dev.frozen = true;
        dev.image.set(model, point, v).map_err(rows_error)?;
        Ok(())
    };
    for i in 0..readings {
        let n = i / 4;
        let (kind, ok) = match i % 4 {
            0 => {
                // 4 800.1 W and up on a 4 kW nameplate.
                let w = 4801 + i64::try_from(n % 2000).unwrap_or(0);
                set(1, 103, "W", Value::Scaled { raw: w, exp: 0 })?;
                (
                    "pv_above_nameplate",
                    pv.read_pv(&mut l).await.power_w.is_valid(),
                )
            }
            1 => {
                let soc = 1001 + n % 1500;
                set(2, 802, "SoC", Value::Uint(soc))?;
                (
                    "soc_above_100",
                    bat.read_battery(&mut l).await.soc_pct.is_valid(),
                )
            }
            2 => {
                set(3, 203, "TotWhImp", Value::Uint(n % 10))?;
                (
                    "counter_went_back",
                    met.read_meter(&mut l).await.import_wh.is_valid(),
                )
            }
            _ => {
                set(
                    3,
                    203,
                    "W_SF",
                    Value::Int(309 + i64::try_from(n % 50).unwrap_or(0)),
                )?;
                (
                    "infinite_power",
                    met.read_meter(&mut l).await.power_w.is_valid(),
                )
            }
        };
        *served.entry(kind).or_default() += 1;
        if ok {
            *admitted.entry(kind).or_default() += 1;
        }
    }
    Ok(json!({
        "row": "V1",
        "implausible_readings": readings,
        "by_kind": served,
        "admitted": admitted.values().sum::<u64>(),
        "admitted_by_kind": admitted,
    }))
}
