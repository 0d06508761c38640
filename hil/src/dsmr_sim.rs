//! A DSMR P1 meter: telegrams for DSMR 2.2, 4, 5 and the Belgian (Fluvius) variant, written
//! once per interval to a serial port (a pseudo-terminal in tests), with fault injection.
//! The telegram bytes come from the driver's own writer, [`gridlet_drivers::dsmr::write`].

use std::time::Duration;

use gridlet_drivers::dsmr::{crc16_arc, write, CrcStyle};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::faults::Dice;

/// The telegram dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// DSMR 2.2 (no CRC, gas value on a second line).
    V2_2,
    /// DSMR 4.x.
    V4,
    /// DSMR 5.0 (NL).
    V5,
    /// Belgian DSMR 5 (Fluvius).
    Fluvius,
}

/// Meter readings a telegram reports.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterReadings {
    /// Imported energy, Wh, tariff 1 and 2.
    pub import_wh: [u64; 2],
    /// Exported energy, Wh, tariff 1 and 2.
    pub export_wh: [u64; 2],
    /// Current import, W.
    pub import_w: u32,
    /// Current export, W.
    pub export_w: u32,
    /// Gas, litres.
    pub gas_l: u64,
    /// Power failures logged (0, 1 or 2 entries).
    pub failures: usize,
    /// Seconds since 2017-01-01 for the timestamp.
    pub clock_s: u64,
}

impl MeterReadings {
    /// Readings derived from a seed, for tests.
    pub fn from_seed(seed: u64) -> MeterReadings {
        let d = Dice::new(seed);
        MeterReadings {
            import_wh: [d.next() % 99_999_999, d.next() % 99_999_999],
            export_wh: [d.next() % 9_999_999, d.next() % 9_999_999],
            import_w: (d.next() % 20_000) as u32,
            export_w: (d.next() % 8_000) as u32,
            gas_l: d.next() % 99_999_999,
            failures: (d.next() % 3) as usize,
            clock_s: d.next() % 300_000_000,
        }
    }
}

fn kwh(wh: u64) -> String {
    format!("{:06}.{:03}", wh / 1000, wh % 1000)
}

/// DSMR 2.2 writes energy with five integer digits.
fn kwh5(wh: u64) -> String {
    format!("{:05}.{:03}", wh / 1000 % 100_000, wh % 1000)
}

fn kw(w: u32, int_digits: usize) -> String {
    format!("{:0width$}.{:03}", w / 1000, w % 1000, width = int_digits)
}

fn stamp(clock_s: u64, suffix: bool) -> String {
    // A plain civil-calendar rendering (2017 + days): good enough for a simulator clock.
    let days = clock_s / 86_400;
    let (mut y, mut doy) = (2017u64, days);
    loop {
        let len = if y % 4 == 0 { 366 } else { 365 };
        if doy < len {
            break;
        }
        doy -= len;
        y += 1;
    }
    let months = [
        31,
        if y % 4 == 0 { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while doy >= months[m] {
        doy -= months[m];
        m += 1;
    }
    let s = clock_s % 86_400;
    let body = format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}",
        y % 100,
        m + 1,
        doy + 1,
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    if suffix {
        body + "W"
    } else {
        body
    }
}

fn failure_log(r: &MeterReadings) -> String {
    let mut line = format!("1-0:99.97.0({})(0-0:96.7.19)", r.failures);
    for i in 0..r.failures {
        line.push_str(&format!(
            "({})({:010}*s)",
            stamp(r.clock_s.saturating_sub(86_400 * (i as u64 + 1)), true),
            240 + 61 * i
        ));
    }
    line
}

/// The header and lines of a telegram.
pub fn telegram_lines(dialect: Dialect, r: &MeterReadings) -> (String, Vec<String>) {
    let gas = format!("{:05}.{:03}", r.gas_l / 1000, r.gas_l % 1000);
    match dialect {
        Dialect::V2_2 => (
            "ISk5\\2MT382-1004".into(),
            vec![
                "0-0:96.1.1(00000000000000)".into(),
                format!("1-0:1.8.1({}*kWh)", kwh5(r.import_wh[0])),
                format!("1-0:1.8.2({}*kWh)", kwh5(r.import_wh[1])),
                format!("1-0:2.8.1({}*kWh)", kwh5(r.export_wh[0])),
                format!("1-0:2.8.2({}*kWh)", kwh5(r.export_wh[1])),
                "0-0:96.14.0(0001)".into(),
                format!(
                    "1-0:1.7.0({:04}.{:02}*kW)",
                    r.import_w / 1000,
                    r.import_w % 1000 / 10
                ),
                format!(
                    "1-0:2.7.0({:04}.{:02}*kW)",
                    r.export_w / 1000,
                    r.export_w % 1000 / 10
                ),
                "0-0:17.0.0(0999.00*kW)".into(),
                "0-0:96.3.10(1)".into(),
                "0-0:96.13.1()".into(),
                "0-0:96.13.0()".into(),
                "0-1:24.1.0(3)".into(),
                "0-1:96.1.0(000000000000)".into(),
                format!(
                    "0-1:24.3.0({})(00)(60)(1)(0-1:24.2.1)(m3)",
                    stamp(r.clock_s, false)
                ),
                format!("({gas})"),
                "0-1:24.4.0(1)".into(),
            ],
        ),
        Dialect::V4 | Dialect::V5 => {
            let v5 = dialect == Dialect::V5;
            let mut lines = vec![
                format!("1-3:0.2.8({})", if v5 { 50 } else { 42 }),
                format!("0-0:1.0.0({})", stamp(r.clock_s, true)),
                "0-0:96.1.1(4B384547303034303436333935353037)".into(),
                format!("1-0:1.8.1({}*kWh)", kwh(r.import_wh[0])),
                format!("1-0:1.8.2({}*kWh)", kwh(r.import_wh[1])),
                format!("1-0:2.8.1({}*kWh)", kwh(r.export_wh[0])),
                format!("1-0:2.8.2({}*kWh)", kwh(r.export_wh[1])),
                "0-0:96.14.0(0002)".into(),
                format!("1-0:1.7.0({}*kW)", kw(r.import_w, 2)),
                format!("1-0:2.7.0({}*kW)", kw(r.export_w, 2)),
                "0-0:96.7.21(00004)".into(),
                "0-0:96.7.9(00002)".into(),
                failure_log(r),
                "1-0:32.32.0(00000)".into(),
                "1-0:32.36.0(00000)".into(),
                "0-0:96.13.0()".into(),
                format!("1-0:31.7.0({:03}*A)", r.import_w / 230),
                format!("1-0:21.7.0({}*kW)", kw(r.import_w, 2)),
                format!("1-0:22.7.0({}*kW)", kw(r.export_w, 2)),
                "0-1:24.1.0(003)".into(),
                "0-1:96.1.0(3232323241424344313233343536373839)".into(),
                format!("0-1:24.2.1({})({gas}*m3)", stamp(r.clock_s, true)),
            ];
            if v5 {
                lines.insert(15, "1-0:32.7.0(230.1*V)".into());
            } else {
                lines.insert(15, "0-0:96.13.1()".into());
            }
            (
                if v5 {
                    "ISk5\\2MT382-1000"
                } else {
                    "KFM5KAIFA-METER"
                }
                .into(),
                lines,
            )
        }
        Dialect::Fluvius => (
            "FLU5\\253769484_A".into(),
            vec![
                "0-0:96.1.4(50217)".into(),
                "0-0:96.1.1(3153414733313031303231363035)".into(),
                format!("0-0:1.0.0({})", stamp(r.clock_s, true)),
                format!("1-0:1.8.1({}*kWh)", kwh(r.import_wh[0])),
                format!("1-0:1.8.2({}*kWh)", kwh(r.import_wh[1])),
                format!("1-0:2.8.1({}*kWh)", kwh(r.export_wh[0])),
                format!("1-0:2.8.2({}*kWh)", kwh(r.export_wh[1])),
                "0-0:96.14.0(0001)".into(),
                format!("1-0:1.4.0({}*kW)", kw(r.import_w, 2)),
                format!("1-0:1.7.0({}*kW)", kw(r.import_w, 2)),
                format!("1-0:2.7.0({}*kW)", kw(r.export_w, 2)),
                format!("1-0:21.7.0({}*kW)", kw(r.import_w, 2)),
                "1-0:32.7.0(234.7*V)".into(),
                format!(
                    "1-0:31.7.0({:03}.{:02}*A)",
                    r.import_w / 230,
                    r.import_w % 100
                ),
                "0-0:96.3.10(1)".into(),
                "0-0:17.0.0(999.9*kW)".into(),
                "1-0:31.4.0(999*A)".into(),
                "0-0:96.13.0()".into(),
                "0-1:24.1.0(003)".into(),
                "0-1:96.1.1(37464C4F32313139303333373333)".into(),
                "0-1:24.4.0(1)".into(),
                format!(
                    "0-1:24.2.3({})({gas}*m3)",
                    stamp(r.clock_s, true).replace('W', "S")
                ),
            ],
        ),
    }
}

/// A complete telegram. With `CrcStyle::Unpadded` the readings' clock is nudged until the CRC
/// has a leading zero, so the unpadded form really is shorter than four digits.
pub fn telegram(dialect: Dialect, readings: &MeterReadings, crc: CrcStyle) -> Vec<u8> {
    let crc = if dialect == Dialect::V2_2 {
        CrcStyle::None
    } else {
        crc
    };
    if crc != CrcStyle::Unpadded {
        let (h, l) = telegram_lines(dialect, readings);
        return write(&h, &l, crc);
    }
    let mut r = readings.clone();
    loop {
        let (h, l) = telegram_lines(dialect, &r);
        let mut body = format!("/{h}\r\n\r\n");
        for line in &l {
            body.push_str(line);
            body.push_str("\r\n");
        }
        body.push('!');
        if crc16_arc(body.as_bytes()) < 0x1000 {
            return write(&h, &l, CrcStyle::Unpadded);
        }
        r.clock_s += 1;
    }
}

/// Faults of a DSMR meter, in percent of telegrams.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DsmrFaults {
    /// Telegrams sent with a wrong CRC.
    pub wrong_crc_percent: u32,
    /// Telegrams sent with the CRC's leading zeros dropped (when it has any).
    pub unpadded_crc_percent: u32,
    /// Telegrams cut off half-way.
    pub truncated_percent: u32,
    /// Garbage bytes before a telegram.
    pub garbage_percent: u32,
}

/// Writes a telegram per interval to `path` until the task is dropped.
pub async fn run_meter(
    path: String,
    dialect: Dialect,
    interval: Duration,
    faults: DsmrFaults,
    seed: u64,
) -> std::io::Result<()> {
    let baud = if dialect == Dialect::V2_2 {
        9600
    } else {
        115_200
    };
    let mut port = tokio_serial::SerialStream::open(&tokio_serial::new(&path, baud))
        .map_err(std::io::Error::other)?;
    let dice = Dice::new(seed);
    let mut readings = MeterReadings::from_seed(seed);
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        readings.clock_s += interval.as_secs().max(1);
        readings.import_wh[0] +=
            u64::from(readings.import_w) * interval.as_millis() as u64 / 3_600_000;
        let style = if dice.percent() < faults.wrong_crc_percent {
            CrcStyle::Wrong
        } else if dice.percent() < faults.unpadded_crc_percent {
            CrcStyle::Unpadded
        } else {
            CrcStyle::Padded
        };
        let mut bytes = telegram(dialect, &readings, style);
        if dice.percent() < faults.garbage_percent {
            let mut noisy = b"\x00\xff noise \x13".to_vec();
            noisy.extend(bytes);
            bytes = noisy;
        }
        if dice.percent() < faults.truncated_percent {
            bytes.truncate(bytes.len() / 2);
        }
        port.write_all(&bytes).await?;
        port.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use gridlet_drivers::dsmr::{parse, CrcKind};

    use super::*;

    #[test]
    fn every_dialect_parses_with_our_driver() {
        for seed in 0..50 {
            let r = MeterReadings::from_seed(seed);
            for d in [Dialect::V2_2, Dialect::V4, Dialect::V5, Dialect::Fluvius] {
                for style in [CrcStyle::Padded, CrcStyle::Unpadded] {
                    let t = telegram(d, &r, style);
                    let p = parse(&t, CrcKind::Arc).unwrap_or_else(|e| panic!("{d:?} {e}"));
                    assert!(p.values.len() > 10);
                }
            }
        }
    }
}
