//! SunSpec model definitions as data: the official model JSONs (vendored from pysunspec2 by
//! `scripts/vendor-sunspec-models.py`), parsed once into [`ModelDef`]s.
//!
//! Why not the `sunspec` crate: its generated structs decode mandatory points without the
//! not-implemented check (`a: u16` keeps 0xFFFF), rename points to snake_case (our output
//! uses the spec's names), leave scale factors unapplied, and its client owns the Modbus
//! connection (no drop-and-reconnect after a timeout). One table-driven decoder covers every
//! model, repeating groups included, and the simulators encode with the same tables.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

const MODELS_JSON: &str = include_str!("../../models/sunspec.json");

/// A point's SunSpec type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointType {
    /// Signed 16-bit.
    Int16,
    /// Unsigned 16-bit.
    Uint16,
    /// Repetition count (uint16).
    Count,
    /// 16-bit accumulator.
    Acc16,
    /// 16-bit enumeration.
    Enum16,
    /// 16-bit bitfield.
    Bitfield16,
    /// Padding.
    Pad,
    /// Signed 32-bit.
    Int32,
    /// Unsigned 32-bit.
    Uint32,
    /// 32-bit accumulator.
    Acc32,
    /// 32-bit enumeration.
    Enum32,
    /// 32-bit bitfield.
    Bitfield32,
    /// IEEE 754 single.
    Float32,
    /// Signed 64-bit.
    Int64,
    /// Unsigned 64-bit.
    Uint64,
    /// 64-bit accumulator.
    Acc64,
    /// IEEE 754 double.
    Float64,
    /// ASCII/UTF-8 string, NUL padded.
    String,
    /// Scale factor: a power-of-ten exponent (int16).
    Sunssf,
    /// IPv4 address (uint32).
    Ipaddr,
    /// IPv6 address (8 registers).
    Ipv6addr,
    /// EUI-48 (4 registers, the first two bytes unused).
    Eui48,
}

/// Where a point's scale factor comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ScaleRef {
    /// The value of another point (a `sunssf`), looked up in the point's group, then the model.
    Point(String),
    /// A fixed exponent.
    Fixed(i16),
}

/// One point of a model.
#[derive(Debug, Clone, Deserialize)]
pub struct PointDef {
    /// The spec name (`W`, `SoC`, `WMaxLimPct`).
    pub name: String,
    /// The type.
    #[serde(rename = "type")]
    pub ty: PointType,
    /// Size in registers.
    pub size: u16,
    /// Scale factor reference.
    #[serde(default)]
    pub sf: Option<ScaleRef>,
    /// Units as the spec writes them.
    #[serde(default)]
    pub units: Option<String>,
    /// `RW` for writable points.
    #[serde(default)]
    pub access: Option<String>,
    /// `M` for mandatory points.
    #[serde(default)]
    pub mandatory: Option<String>,
}

/// How many times a group occurs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GroupCount {
    /// A fixed count; 0 means "as many as the model length holds".
    Fixed(u16),
    /// The value of a `count` point of the enclosing group.
    Point(String),
}

/// A group of points (the model itself is the top group).
#[derive(Debug, Clone, Deserialize)]
pub struct GroupDef {
    /// The group name.
    pub name: String,
    /// Repetitions; absent for a single occurrence.
    #[serde(default)]
    pub count: Option<GroupCount>,
    /// Points, in register order.
    pub points: Vec<PointDef>,
    /// Nested groups, after the points.
    #[serde(default)]
    pub groups: Vec<GroupDef>,
}

impl GroupDef {
    /// Registers one occurrence takes, counting nested groups once each (fixed-size groups only).
    pub fn fixed_len(&self) -> u32 {
        let own: u32 = self.points.iter().map(|p| u32::from(p.size)).sum();
        own + self.groups.iter().map(|g| g.fixed_len()).sum::<u32>()
    }

    /// The point named `name`, if this group has it.
    pub fn point(&self, name: &str) -> Option<&PointDef> {
        self.points.iter().find(|p| p.name == name)
    }

    /// Register offset of a point within one occurrence of this group.
    pub fn offset_of(&self, name: &str) -> Option<u16> {
        let mut at = 0u16;
        for p in &self.points {
            if p.name == name {
                return Some(at);
            }
            at = at.checked_add(p.size)?;
        }
        None
    }
}

/// A SunSpec model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelDef {
    /// The model id.
    pub id: u16,
    /// The top group (its first two points are `ID` and `L`).
    pub group: GroupDef,
}

impl ModelDef {
    /// The length (`L`) of the model's fixed part: registers after ID and L.
    pub fn fixed_length(&self) -> u16 {
        u16::try_from(self.group.fixed_len().saturating_sub(2)).unwrap_or(u16::MAX)
    }
}

#[derive(Deserialize)]
struct ModelFile {
    models: Vec<ModelDef>,
}

fn registry() -> &'static BTreeMap<u16, ModelDef> {
    static MODELS: OnceLock<BTreeMap<u16, ModelDef>> = OnceLock::new();
    MODELS.get_or_init(|| {
        // The file is part of the build; a parse failure is a packaging bug caught by tests.
        serde_json::from_str::<ModelFile>(MODELS_JSON)
            .map(|f| f.models.into_iter().map(|m| (m.id, m)).collect())
            .unwrap_or_default()
    })
}

/// The definition of model `id`, if known.
pub fn model(id: u16) -> Option<&'static ModelDef> {
    registry().get(&id)
}

/// Every known model id.
pub fn model_ids() -> impl Iterator<Item = u16> {
    registry().keys().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_models_parse_with_the_documented_lengths() {
        assert!(model_ids().count() > 100);
        for (id, len) in [
            (1, 66),
            (101, 50),
            (103, 50),
            (111, 60),
            (113, 60),
            (120, 26),
            (123, 24),
            (124, 24),
            (201, 105),
            (203, 105),
            (701, 153),
            (702, 50),
            (713, 7),
            (802, 62),
        ] {
            assert_eq!(model(id).unwrap().fixed_length(), len, "model {id}");
        }
        let m103 = &model(103).unwrap().group;
        assert_eq!(m103.offset_of("W"), Some(14));
        assert_eq!(m103.offset_of("W_SF"), Some(15));
        assert_eq!(m103.offset_of("WH"), Some(24));
        let m802 = &model(802).unwrap().group;
        assert_eq!(m802.offset_of("SoC"), Some(11));
    }
}
