//! DSMR P1 telegrams: framing (`check` finds a whole telegram in a byte stream, resynchronising
//! on `/`), parsing (`parse` turns one telegram into OBIS values), CRC-16/ARC, and the writer
//! the simulators use. Pure: the serial and TCP readers live in [`reader`].
//!
//! A telegram runs from `/` to `!`, followed by 4 hex CRC digits (DSMR 4/5; some meters drop
//! leading zeros, so 1–4 digits are accepted) or by nothing (DSMR 2.2/3), then CR LF. The CRC
//! is CRC-16/ARC (reflected 0xA001, initial 0) over everything from `/` through `!`; the
//! Holley DTSD545 uses CRC-16/X25 instead, selectable with [`CrcKind`].

use std::collections::BTreeMap;

use serde::Serialize;
use thiserror::Error;

pub mod reader;

/// Largest telegram accepted (the largest known fixture is 1 423 bytes; E.ON Hungary V5).
pub const MAX_TELEGRAM: usize = 8 * 1024;

/// Why a telegram was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DsmrError {
    /// The CRC does not match the content.
    #[error("CRC mismatch: telegram says {found:04X}, content gives {computed:04X}")]
    CrcMismatch {
        /// CRC written in the telegram.
        found: u16,
        /// CRC computed.
        computed: u16,
    },
    /// The CRC field is not 1–4 hex digits.
    #[error("malformed CRC field {0:?}")]
    BadCrcField(String),
    /// The telegram is not `/…!…`.
    #[error("not a telegram: {0}")]
    Malformed(String),
    /// A line is not `OBIS(value)…`.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The telegram exceeds [`MAX_TELEGRAM`].
    #[error("telegram longer than {MAX_TELEGRAM} bytes")]
    TooLong,
    /// The CRC is required but missing.
    #[error("telegram has no CRC but one is required")]
    MissingCrc,
}

/// Which CRC the meter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CrcKind {
    /// CRC-16/ARC (the DSMR standard).
    #[default]
    Arc,
    /// CRC-16/X25 (Holley DTSD545).
    X25,
}

/// CRC-16/ARC (reflected 0x8005, initial 0, no final xor), from the `crc` crate's catalogue.
const ARC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);
/// CRC-16/X-25 (= IBM-SDLC: reflected 0x1021, initial and final xor 0xFFFF).
const X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);

/// CRC-16/ARC: reflected polynomial 0xA001, initial value 0, no final xor.
pub fn crc16_arc(bytes: &[u8]) -> u16 {
    ARC.checksum(bytes)
}

/// CRC-16/X25: reflected polynomial 0x8408, initial 0xFFFF, final xor 0xFFFF.
pub fn crc16_x25(bytes: &[u8]) -> u16 {
    X25.checksum(bytes)
}

/// One value group `(value*unit)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObisValue {
    /// The value as written (`null` for an empty group).
    pub value: Option<String>,
    /// The unit, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// The values of one OBIS line: one group, or several (gas readings, failure logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObisLine(pub Vec<ObisValue>);

impl Serialize for ObisLine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

/// A parsed telegram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Telegram {
    /// Whether the CRC matched (`None` for telegrams without one).
    pub crc_ok: Option<bool>,
    /// The identification line, without `/`.
    pub header: String,
    /// Values by OBIS code.
    pub values: BTreeMap<String, ObisLine>,
}

impl Telegram {
    /// The first value of an OBIS code as a number (e.g. `1-0:1.7.0` → kW).
    pub fn number(&self, obis: &str) -> Option<f64> {
        self.values
            .get(obis)?
            .0
            .last()?
            .value
            .as_deref()?
            .parse()
            .ok()
    }
}

/// Looks for a complete telegram in `buf`. Returns `Ok(Some((start, end)))` with the telegram at
/// `buf[start..end]` (including the CRC line's CR LF), `Ok(None)` if more bytes are needed.
/// Bytes before `start` are noise to discard. A second `/` before the `!` means the first
/// telegram was cut off: framing restarts there.
pub fn check(buf: &[u8]) -> Result<Option<(usize, usize)>, DsmrError> {
    let Some(mut start) = buf.iter().position(|b| *b == b'/') else {
        return Ok(None);
    };
    loop {
        let rest = &buf[start + 1..];
        let bang = rest.iter().position(|b| *b == b'!');
        let next_slash = rest.iter().position(|b| *b == b'/');
        match (bang, next_slash) {
            (_, Some(s)) if bang.is_none_or(|b| s < b) => {
                start = start + 1 + s;
                continue;
            }
            (None, _) => {
                if buf.len() - start > MAX_TELEGRAM {
                    return Err(DsmrError::TooLong);
                }
                return Ok(None);
            }
            (Some(b), _) => {
                let bang_at = start + 1 + b;
                let after = &buf[bang_at + 1..];
                return match after.windows(2).position(|w| w == b"\r\n") {
                    Some(p) if p <= 4 => Ok(Some((start, bang_at + 1 + p + 2))),
                    Some(_) => Err(DsmrError::BadCrcField(
                        String::from_utf8_lossy(&after[..after.len().min(8)]).into_owned(),
                    )),
                    None if after.len() > 6 => Err(DsmrError::BadCrcField(
                        String::from_utf8_lossy(&after[..6]).into_owned(),
                    )),
                    None => Ok(None),
                };
            }
        }
    }
}

fn parse_groups(rest: &str, line: usize) -> Result<Vec<ObisValue>, DsmrError> {
    let mut values = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let Some(inner) = s.strip_prefix('(') else {
            return Err(DsmrError::BadLine {
                line,
                reason: format!("expected '(' at {s:?}"),
            });
        };
        let close = inner.find(')').ok_or_else(|| DsmrError::BadLine {
            line,
            reason: "unclosed '('".into(),
        })?;
        let group = &inner[..close];
        let (value, unit) = match group.split_once('*') {
            Some((v, u)) => (v, Some(u.to_owned())),
            None => (group, None),
        };
        values.push(ObisValue {
            value: (!value.is_empty()).then(|| value.to_owned()),
            unit,
        });
        s = &inner[close + 1..];
    }
    Ok(values)
}

/// Parses one complete telegram (as [`check`] delimits it) and verifies its CRC.
pub fn parse(telegram: &[u8], crc_kind: CrcKind) -> Result<Telegram, DsmrError> {
    if telegram.len() > MAX_TELEGRAM {
        return Err(DsmrError::TooLong);
    }
    let text =
        std::str::from_utf8(telegram).map_err(|_| DsmrError::Malformed("not ASCII".into()))?;
    let body_end = text
        .rfind('!')
        .ok_or_else(|| DsmrError::Malformed("no '!'".into()))?;
    if !text.starts_with('/') {
        return Err(DsmrError::Malformed("does not start with '/'".into()));
    }
    let crc_field = text[body_end + 1..].trim_end_matches(['\r', '\n']);
    let crc_ok = if crc_field.is_empty() {
        None
    } else {
        if crc_field.len() > 4 || !crc_field.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(DsmrError::BadCrcField(crc_field.to_owned()));
        }
        let found = u16::from_str_radix(crc_field, 16)
            .map_err(|_| DsmrError::BadCrcField(crc_field.to_owned()))?;
        let covered = &telegram[..=body_end];
        let computed = match crc_kind {
            CrcKind::Arc => crc16_arc(covered),
            CrcKind::X25 => crc16_x25(covered),
        };
        if found != computed {
            return Err(DsmrError::CrcMismatch { found, computed });
        }
        Some(true)
    };
    let body = &text[1..body_end];
    let mut lines = body.split("\r\n");
    let header = lines.next().unwrap_or_default().to_owned();
    let mut values: BTreeMap<String, ObisLine> = BTreeMap::new();
    let mut last_code: Option<String> = None;
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        if line.is_empty() {
            continue;
        }
        if line.starts_with('(') {
            // A continuation: DSMR 2.2/3 gas readings put the value on the next line.
            let code = last_code.clone().ok_or_else(|| DsmrError::BadLine {
                line: n,
                reason: "value line without an OBIS line".into(),
            })?;
            let more = parse_groups(line, n)?;
            if let Some(entry) = values.get_mut(&code) {
                entry.0.extend(more);
            }
            continue;
        }
        let open = line.find('(').ok_or_else(|| DsmrError::BadLine {
            line: n,
            reason: format!("no value in {line:?}"),
        })?;
        let code = &line[..open];
        if code.is_empty()
            || !code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-:.*".contains(c))
        {
            return Err(DsmrError::BadLine {
                line: n,
                reason: format!("bad OBIS code {code:?}"),
            });
        }
        values.insert(code.to_owned(), ObisLine(parse_groups(&line[open..], n)?));
        last_code = Some(code.to_owned());
    }
    // DSMR 4 and 5 (and Fluvius e-MUCS) make the CRC mandatory, as dsmr-parser's V4/V5
    // specifications do: a telegram declaring such a version without one is refused.
    if crc_ok.is_none() && declares_crc_version(&values) {
        return Err(DsmrError::MissingCrc);
    }
    Ok(Telegram {
        crc_ok,
        header,
        values,
    })
}

/// Whether the telegram's version line says DSMR 4 or later (`1-3:0.2.8(40…)`, or Belgium's
/// `0-0:96.1.4`), where every telegram ends with a CRC.
fn declares_crc_version(values: &BTreeMap<String, ObisLine>) -> bool {
    let version = |code: &str| {
        values
            .get(code)
            .and_then(|l| l.0.first())
            .and_then(|g| g.value.as_deref())
            .and_then(|v| v.get(..2))
            .and_then(|v| v.parse::<u32>().ok())
    };
    version("1-3:0.2.8").is_some_and(|v| v >= 40) || version("0-0:96.1.4").is_some()
}

/// How the writer ends a telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcStyle {
    /// No CRC (DSMR 2.2/3).
    None,
    /// Four hex digits.
    Padded,
    /// Without leading zeros (as some meters send).
    Unpadded,
    /// A CRC that does not match (fault injection).
    Wrong,
}

/// Writes a telegram from its header and lines (each `OBIS(value)…`, or a continuation).
pub fn write(header: &str, lines: &[String], crc: CrcStyle) -> Vec<u8> {
    let mut text = format!("/{header}\r\n\r\n");
    for l in lines {
        text.push_str(l);
        text.push_str("\r\n");
    }
    text.push('!');
    let sum = crc16_arc(text.as_bytes());
    match crc {
        CrcStyle::None => {}
        CrcStyle::Padded => text.push_str(&format!("{sum:04X}")),
        CrcStyle::Unpadded => text.push_str(&format!("{sum:X}")),
        CrcStyle::Wrong => text.push_str(&format!("{:04X}", sum ^ 0x0101)),
    }
    text.push_str("\r\n");
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The DSMR v5 example from dsmr_parser's fixtures (CRC 6EEE), shortened lines kept intact.
    fn sample() -> Vec<u8> {
        write(
            "ISk5\\2MT382-1000",
            &[
                "1-3:0.2.8(50)".into(),
                "0-0:1.0.0(170102192002W)".into(),
                "1-0:1.8.1(000004.426*kWh)".into(),
                "1-0:1.7.0(00.191*kW)".into(),
                "0-0:96.13.0()".into(),
                "1-0:99.97.0(2)(0-0:96.7.19)(101208152415W)(0000000240*s)(101208151004W)(0000000301*s)".into(),
                "0-1:24.2.1(170102161005W)(00000.107*m3)".into(),
            ],
            CrcStyle::Padded,
        )
    }

    #[test]
    fn crc_arc_matches_the_known_check_value() {
        assert_eq!(crc16_arc(b"123456789"), 0xBB3D);
        assert_eq!(crc16_x25(b"123456789"), 0x906E);
    }

    #[test]
    fn parses_values_units_empty_and_multi_value_lines() {
        let t = parse(&sample(), CrcKind::Arc).unwrap();
        assert_eq!(t.crc_ok, Some(true));
        assert_eq!(t.header, "ISk5\\2MT382-1000");
        assert_eq!(
            t.values["1-0:1.8.1"].0[0].value.as_deref(),
            Some("000004.426")
        );
        assert_eq!(t.values["1-0:1.8.1"].0[0].unit.as_deref(), Some("kWh"));
        assert_eq!(t.values["0-0:96.13.0"].0[0].value, None);
        assert_eq!(t.values["1-0:99.97.0"].0.len(), 6);
        assert_eq!(t.values["0-1:24.2.1"].0[1].unit.as_deref(), Some("m3"));
        assert_eq!(t.number("1-0:1.7.0"), Some(0.191));
    }

    #[test]
    fn wrong_crc_is_rejected_and_unpadded_accepted() {
        let lines = vec!["1-0:1.8.1(000001.000*kWh)".to_string()];
        // Find a header whose CRC has a leading zero, so the unpadded form is shorter.
        let short = (0..10_000)
            .map(|i| write(&format!("XMX5-{i}"), &lines, CrcStyle::Unpadded))
            .find(|t| t.len() - t.iter().rposition(|b| *b == b'!').unwrap() < 7)
            .expect("some CRC below 0x1000");
        assert_eq!(parse(&short, CrcKind::Arc).unwrap().crc_ok, Some(true));
        let bad = write("XMX5", &lines, CrcStyle::Wrong);
        assert!(matches!(
            parse(&bad, CrcKind::Arc),
            Err(DsmrError::CrcMismatch { .. })
        ));
        let none = write("XMX5", &lines, CrcStyle::None);
        assert_eq!(parse(&none, CrcKind::Arc).unwrap().crc_ok, None);
    }

    #[test]
    fn a_v4_or_v5_telegram_without_its_crc_is_refused() {
        for version in ["40", "42", "50"] {
            let lines = vec![
                format!("1-3:0.2.8({version})"),
                "1-0:1.8.1(000001.000*kWh)".to_string(),
            ];
            let none = write("XMX5", &lines, CrcStyle::None);
            assert_eq!(parse(&none, CrcKind::Arc), Err(DsmrError::MissingCrc));
            let with = write("XMX5", &lines, CrcStyle::Padded);
            assert_eq!(parse(&with, CrcKind::Arc).unwrap().crc_ok, Some(true));
        }
        let belgian = vec!["0-0:96.1.4(50217)".to_string()];
        let none = write("FLU5", &belgian, CrcStyle::None);
        assert_eq!(parse(&none, CrcKind::Arc), Err(DsmrError::MissingCrc));
    }

    #[test]
    fn framing_resynchronises_on_slash_and_waits_for_the_crc() {
        let t = sample();
        let mut stream = b"garbage!!\r\n/TRUNCATED\r\n1-0:1.8.1(0".to_vec();
        stream.extend_from_slice(&t);
        let (s, e) = check(&stream).unwrap().unwrap();
        assert_eq!(&stream[s..e], &t[..]);
        // Not complete until the CRC line ends.
        assert_eq!(check(&t[..t.len() - 3]).unwrap(), None);
        assert_eq!(check(b"no telegram here").unwrap(), None);
        let mut huge = b"/".to_vec();
        huge.extend(std::iter::repeat_n(b'x', MAX_TELEGRAM + 1));
        assert_eq!(check(&huge), Err(DsmrError::TooLong));
    }

    #[test]
    fn v22_gas_value_on_the_next_line_joins_its_obis_line() {
        let t = write(
            "ISk5\\2MT382-1004",
            &[
                "0-1:24.3.0(121030140000)(00)(60)(1)(0-1:24.2.1)(m3)".into(),
                "(00004.321)".into(),
            ],
            CrcStyle::None,
        );
        let p = parse(&t, CrcKind::Arc).unwrap();
        let gas = &p.values["0-1:24.3.0"].0;
        assert_eq!(gas.len(), 7);
        assert_eq!(gas[6].value.as_deref(), Some("00004.321"));
    }
}
