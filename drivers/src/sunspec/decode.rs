//! Decoding SunSpec registers into typed values, and encoding values into registers (for the
//! simulators), driven by the model tables in [`super::model`].
//!
//! Rules: every not-implemented sentinel (0x8000, 0xFFFF, NaN, a leading NUL, … per type)
//! decodes to [`Value::NotImplemented`], never to 0; a point whose scale factor is not
//! implemented is not implemented either; scale factors may be positive.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::model::{self, GroupCount, GroupDef, PointDef, PointType, ScaleRef};

/// Order of the 16-bit words in multi-register values. SunSpec is big-endian; a few devices
/// swap words, which a per-device setting corrects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Most significant word first (SunSpec).
    #[default]
    BigEndian,
    /// Least significant word first.
    LittleEndian,
}

/// A decoded point value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The device reports the point as not implemented (a sentinel), or its scale factor is.
    NotImplemented,
    /// A signed integer (no scale factor).
    Int(i64),
    /// An unsigned integer, enumeration or bitfield (no scale factor).
    Uint(u64),
    /// An integer with its power-of-ten scale: the engineering value is `raw × 10^exp`.
    Scaled {
        /// The register value.
        raw: i64,
        /// The scale factor.
        exp: i16,
    },
    /// A float.
    Float(f64),
    /// Text (strings, addresses).
    Text(String),
}

impl Value {
    /// The engineering value as a float, if numeric and implemented.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Uint(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            Value::Scaled { raw, exp } => Some(scale(*raw, *exp)),
            Value::NotImplemented | Value::Text(_) => None,
        }
    }

    /// The raw integer, for unscaled integer points.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::Uint(v) => i64::try_from(*v).ok(),
            Value::Scaled { raw, .. } => Some(*raw),
            _ => None,
        }
    }
}

/// `raw × 10^exp`, dividing for negative exponents so that e.g. 12345 × 10⁻¹ is exactly the
/// double nearest 1234.5.
pub fn scale(raw: i64, exp: i16) -> f64 {
    let p = 10f64.powi(i32::from(exp.unsigned_abs()));
    if exp < 0 {
        raw as f64 / p
    } else {
        raw as f64 * p
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::NotImplemented => s.serialize_none(),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Uint(v) => s.serialize_u64(*v),
            Value::Scaled { raw, exp } if *exp >= 0 && scale(*raw, *exp).abs() < 9.0e15 => {
                s.serialize_i64(scale(*raw, *exp) as i64)
            }
            Value::Scaled { raw, exp } => s.serialize_f64(scale(*raw, *exp)),
            Value::Float(v) => s.serialize_f64(*v),
            Value::Text(t) => s.serialize_str(t),
        }
    }
}

/// One occurrence of a group: its points and its nested groups.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecodedGroup {
    /// Point values by name (padding omitted).
    pub points: BTreeMap<String, Value>,
    /// Nested groups by name, each a list of occurrences.
    pub groups: BTreeMap<String, Vec<DecodedGroup>>,
}

impl Serialize for DecodedGroup {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.points.len() + self.groups.len()))?;
        for (k, v) in &self.points {
            map.serialize_entry(k, v)?;
        }
        for (k, v) in &self.groups {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A decoded model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DecodedModel {
    /// Model id.
    pub id: u16,
    /// Length as the device sent it (registers after ID and L).
    pub length: u16,
    /// Address of the ID register.
    #[serde(skip)]
    pub address: u16,
    /// Whether the id is a model this decoder knows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    /// Values (the top group).
    pub points: DecodedGroup,
}

impl DecodedModel {
    /// A point of the top group.
    pub fn point(&self, name: &str) -> Option<&Value> {
        self.points.points.get(name)
    }
}

fn join(words: &[u16], order: WordOrder) -> u64 {
    let fold = |acc: u64, w: &u16| (acc << 16) | u64::from(*w);
    match order {
        WordOrder::BigEndian => words.iter().fold(0, fold),
        WordOrder::LittleEndian => words.iter().rev().fold(0, fold),
    }
}

fn bytes_of(words: &[u16]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// Decodes one point's registers (no scale factor applied).
pub fn decode_raw(ty: PointType, words: &[u16], order: WordOrder) -> Value {
    use PointType as T;
    let v = join(words, order);
    match ty {
        T::Int16 | T::Sunssf => match v as u16 as i16 {
            i16::MIN => Value::NotImplemented,
            x => Value::Int(i64::from(x)),
        },
        T::Uint16 | T::Count | T::Enum16 | T::Bitfield16 => match v as u16 {
            u16::MAX => Value::NotImplemented,
            x => Value::Uint(u64::from(x)),
        },
        T::Acc16 | T::Acc32 | T::Acc64 | T::Ipaddr => match v {
            0 => Value::NotImplemented,
            x => Value::Uint(x),
        },
        T::Pad => Value::NotImplemented,
        T::Int32 => match v as u32 as i32 {
            i32::MIN => Value::NotImplemented,
            x => Value::Int(i64::from(x)),
        },
        T::Uint32 | T::Enum32 | T::Bitfield32 => match v as u32 {
            u32::MAX => Value::NotImplemented,
            x => Value::Uint(u64::from(x)),
        },
        T::Int64 => match v as i64 {
            i64::MIN => Value::NotImplemented,
            x => Value::Int(x),
        },
        T::Uint64 => match v {
            u64::MAX => Value::NotImplemented,
            x => Value::Uint(x),
        },
        T::Float32 => {
            let f = f32::from_bits(v as u32);
            if f.is_nan() {
                Value::NotImplemented
            } else {
                Value::Float(f64::from(f))
            }
        }
        T::Float64 => {
            let f = f64::from_bits(v);
            if f.is_nan() {
                Value::NotImplemented
            } else {
                Value::Float(f)
            }
        }
        T::String => {
            let bytes = bytes_of(words);
            match bytes.first() {
                None | Some(0) => Value::NotImplemented,
                Some(_) => {
                    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                    Value::Text(String::from_utf8_lossy(&bytes[..end]).into_owned())
                }
            }
        }
        T::Ipv6addr => {
            let bytes = bytes_of(words);
            if bytes.iter().all(|b| *b == 0) {
                Value::NotImplemented
            } else {
                let groups: Vec<String> = bytes
                    .chunks(4)
                    .map(|c| c.iter().map(|b| format!("{b:02X}")).collect())
                    .collect();
                Value::Text(groups.join(":"))
            }
        }
        T::Eui48 => {
            let bytes = bytes_of(words);
            let mac = bytes.get(2..).unwrap_or(&[]);
            if mac.iter().all(|b| *b == 0xFF) || bytes.iter().all(|b| *b == 0) {
                Value::NotImplemented
            } else {
                let parts: Vec<String> = mac.iter().map(|b| format!("{b:02X}")).collect();
                Value::Text(parts.join(":"))
            }
        }
    }
}

fn is_integer(ty: PointType) -> bool {
    !matches!(
        ty,
        PointType::Float32
            | PointType::Float64
            | PointType::String
            | PointType::Ipv6addr
            | PointType::Eui48
            | PointType::Pad
    )
}

struct Raw<'a> {
    def: &'a GroupDef,
    points: BTreeMap<String, Value>,
    groups: BTreeMap<String, Vec<Raw<'a>>>,
}

/// Decodes one group occurrence; `ancestors` are the enclosing groups' points, innermost last,
/// where a repeating group's count point may live (model 705's `Pt` counts by the top `NPt`).
fn decode_group_raw<'a>(
    def: &'a GroupDef,
    regs: &[u16],
    at: &mut usize,
    order: WordOrder,
    ancestors: &[&BTreeMap<String, Value>],
) -> Raw<'a> {
    let mut points = BTreeMap::new();
    for p in &def.points {
        let end = *at + usize::from(p.size);
        let Some(words) = regs.get(*at..end) else {
            // The device's model is shorter than the definition (e.g. common model L = 65):
            // the missing points are simply absent.
            *at = regs.len();
            break;
        };
        *at = end;
        if p.ty != PointType::Pad {
            points.insert(p.name.clone(), decode_raw(p.ty, words, order));
        }
    }
    let mut groups = BTreeMap::new();
    for g in &def.groups {
        let one = g.fixed_len() as usize;
        let count = match &g.count {
            None => 1,
            Some(GroupCount::Fixed(0)) => {
                regs.len().saturating_sub(*at).checked_div(one).unwrap_or(0)
            }
            Some(GroupCount::Fixed(n)) => usize::from(*n),
            Some(GroupCount::Point(name)) => std::iter::once(&points)
                .chain(ancestors.iter().rev().copied())
                .find_map(|scope| scope.get(name))
                .and_then(Value::as_i64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
        };
        let mut list = Vec::new();
        for _ in 0..count {
            if *at >= regs.len() {
                break;
            }
            let mut scope = ancestors.to_vec();
            scope.push(&points);
            list.push(decode_group_raw(g, regs, at, order, &scope));
        }
        groups.insert(g.name.clone(), list);
    }
    Raw {
        def,
        points,
        groups,
    }
}

fn sf_of(
    p: &PointDef,
    group: &BTreeMap<String, Value>,
    root: &BTreeMap<String, Value>,
) -> Option<Option<i16>> {
    match p.sf.as_ref()? {
        ScaleRef::Fixed(e) => Some(Some(*e)),
        ScaleRef::Point(name) => {
            let v = group.get(name).or_else(|| root.get(name));
            Some(match v {
                Some(Value::Int(e)) => i16::try_from(*e).ok(),
                _ => None,
            })
        }
    }
}

fn finish(raw: Raw<'_>, root: &BTreeMap<String, Value>) -> DecodedGroup {
    let mut points = BTreeMap::new();
    for p in &raw.def.points {
        let Some(v) = raw.points.get(&p.name) else {
            continue;
        };
        let value = match (sf_of(p, &raw.points, root), v) {
            (None, v) => v.clone(),
            (Some(_), Value::NotImplemented) => Value::NotImplemented,
            (Some(None), _) => Value::NotImplemented,
            (Some(Some(exp)), v) if is_integer(p.ty) => match v.as_i64() {
                Some(raw) => Value::Scaled { raw, exp },
                None => Value::NotImplemented,
            },
            (Some(Some(_)), v) => v.clone(),
        };
        points.insert(p.name.clone(), value);
    }
    let groups = raw
        .groups
        .into_iter()
        .map(|(name, list)| (name, list.into_iter().map(|g| finish(g, root)).collect()))
        .collect();
    DecodedGroup { points, groups }
}

/// Decodes a model from its registers, starting at the ID register (`regs[0]` = ID,
/// `regs[1]` = L, then L registers).
pub fn decode_model(address: u16, regs: &[u16], order: WordOrder) -> Option<DecodedModel> {
    let id = *regs.first()?;
    let length = *regs.get(1)?;
    let Some(def) = model::model(id) else {
        return Some(DecodedModel {
            id,
            length,
            address,
            unknown: true,
            points: DecodedGroup::default(),
        });
    };
    let mut at = 0usize;
    let raw = decode_group_raw(&def.group, regs, &mut at, order, &[]);
    let root = raw.points.clone();
    let mut points = finish(raw, &root);
    points.points.remove("ID");
    points.points.remove("L");
    Some(DecodedModel {
        id,
        length,
        address,
        unknown: false,
        points,
    })
}

/// The sentinel registers of a not-implemented point of this type and size.
pub fn not_implemented(ty: PointType, size: u16) -> Vec<u16> {
    use PointType as T;
    let n = usize::from(size);
    match ty {
        T::Int16 | T::Sunssf => vec![0x8000],
        T::Uint16 | T::Count | T::Enum16 | T::Bitfield16 => vec![0xFFFF],
        T::Int32 => vec![0x8000, 0],
        T::Uint32 | T::Enum32 | T::Bitfield32 => vec![0xFFFF, 0xFFFF],
        T::Int64 => vec![0x8000, 0, 0, 0],
        T::Uint64 => vec![0xFFFF; 4],
        T::Float32 => vec![0x7FC0, 0],
        T::Float64 => vec![0x7FF8, 0, 0, 0],
        T::Eui48 => vec![0, 0xFFFF, 0xFFFF, 0xFFFF],
        T::Acc16 | T::Acc32 | T::Acc64 | T::Ipaddr | T::Ipv6addr | T::Pad | T::String => {
            vec![0; n]
        }
    }
}

/// Encodes a value for a point (the inverse of [`decode_raw`]); integers are raw register
/// values (already divided by the scale factor).
pub fn encode(ty: PointType, size: u16, value: &Value, order: WordOrder) -> Vec<u16> {
    use PointType as T;
    let words = |v: u64, n: usize| -> Vec<u16> {
        let mut out: Vec<u16> = (0..n).rev().map(|i| (v >> (16 * i)) as u16).collect();
        if order == WordOrder::LittleEndian {
            out.reverse();
        }
        out
    };
    let n = usize::from(size);
    match (ty, value) {
        (_, Value::NotImplemented) => not_implemented(ty, size),
        (T::String, Value::Text(t)) => {
            let mut bytes = t.as_bytes().to_vec();
            bytes.resize(n * 2, 0);
            bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect()
        }
        (T::Float32, v) => words(
            u64::from((v.as_f64().unwrap_or(f64::NAN) as f32).to_bits()),
            2,
        ),
        (T::Float64, v) => words(v.as_f64().unwrap_or(f64::NAN).to_bits(), 4),
        (_, v) => {
            let raw = match v {
                Value::Int(x) | Value::Scaled { raw: x, .. } => *x as u64,
                Value::Uint(x) => *x,
                _ => 0,
            };
            words(raw, n)
        }
    }
}
