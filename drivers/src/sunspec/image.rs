//! Building SunSpec register images from the model tables: what the simulators serve, and what
//! tests feed the scanner.

use super::decode::{encode, not_implemented, Value, WordOrder};
use super::model::{self, GroupCount, GroupDef};
use super::scan::{END_ID, MARKER};

/// A model's place in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSlot {
    /// Model id.
    pub id: u16,
    /// Address of its ID register.
    pub address: u16,
    /// L as written.
    pub length: u16,
}

/// A register image starting at `base` with `SunS`, models and (optionally) the end marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SunSpecImage {
    /// The base address.
    pub base: u16,
    /// The registers from `base` on.
    pub regs: Vec<u16>,
    /// Where each model sits.
    pub models: Vec<ModelSlot>,
    /// Per register: whether it belongs to a writable (`RW`) point.
    pub writable: Vec<bool>,
}

/// Why an image operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The model id is not in the tables.
    #[error("unknown SunSpec model {0}")]
    UnknownModel(u16),
    /// The model is not in this image.
    #[error("model {0} is not in the image")]
    ModelNotInImage(u16),
    /// The point is not in the model's top group.
    #[error("model {model} has no point {point}")]
    UnknownPoint {
        /// Model id.
        model: u16,
        /// Point name.
        point: String,
    },
    /// The image would pass the end of the address space.
    #[error("image does not fit below address 65535")]
    TooLarge,
}

fn fill_group(g: &GroupDef, out: &mut Vec<u16>, writable: &mut Vec<bool>) {
    for p in &g.points {
        let words = not_implemented(p.ty, p.size);
        let rw = p.access.as_deref() == Some("RW");
        writable.extend(std::iter::repeat_n(rw, words.len()));
        out.extend(words);
    }
    for sub in &g.groups {
        // Fixed-size images: one occurrence of single groups, none of repeating ones.
        if sub.count.is_none() || sub.count == Some(GroupCount::Fixed(1)) {
            fill_group(sub, out, writable);
        }
    }
}

impl SunSpecImage {
    /// An image holding only the `SunS` marker.
    pub fn new(base: u16) -> SunSpecImage {
        SunSpecImage {
            base,
            regs: MARKER.to_vec(),
            models: Vec::new(),
            writable: vec![false; MARKER.len()],
        }
    }

    /// Appends a model with every point not implemented; `length` overrides L (e.g. 65 for a
    /// common model without its pad, as some inverters send).
    pub fn add_model(&mut self, id: u16, length: Option<u16>) -> Result<&mut Self, ImageError> {
        let def = model::model(id).ok_or(ImageError::UnknownModel(id))?;
        let mut body = Vec::new();
        let mut writable = Vec::new();
        fill_group(&def.group, &mut body, &mut writable);
        let len = length.unwrap_or(u16::try_from(body.len().saturating_sub(2)).unwrap_or(0));
        body.resize(usize::from(len) + 2, 0);
        writable.resize(body.len(), false);
        body[0] = id;
        body[1] = len;
        let address = u32::from(self.base) + u32::try_from(self.regs.len()).unwrap_or(u32::MAX);
        let address = u16::try_from(address).map_err(|_| ImageError::TooLarge)?;
        self.regs.extend(body);
        self.writable.extend(writable);
        self.models.push(ModelSlot {
            id,
            address,
            length: len,
        });
        Ok(self)
    }

    /// Appends the end marker (ID 0xFFFF, L 0).
    pub fn end(&mut self) -> &mut Self {
        self.regs.extend([END_ID, 0]);
        self.writable.extend([false, false]);
        self
    }

    /// Address of a top-group point of a model in this image.
    pub fn point_address(&self, id: u16, point: &str) -> Result<u16, ImageError> {
        let slot = self
            .models
            .iter()
            .find(|m| m.id == id)
            .ok_or(ImageError::ModelNotInImage(id))?;
        let def = model::model(id).ok_or(ImageError::UnknownModel(id))?;
        let offset = def
            .group
            .offset_of(point)
            .ok_or_else(|| ImageError::UnknownPoint {
                model: id,
                point: point.to_owned(),
            })?;
        Ok(slot.address.saturating_add(offset))
    }

    /// A top-group point's address and definition.
    fn locate(
        &self,
        id: u16,
        point: &str,
    ) -> Result<(u16, &'static super::model::PointDef), ImageError> {
        let addr = self.point_address(id, point)?;
        let def = model::model(id).ok_or(ImageError::UnknownModel(id))?;
        let p = def
            .group
            .point(point)
            .ok_or_else(|| ImageError::UnknownPoint {
                model: id,
                point: point.to_owned(),
            })?;
        Ok((addr, p))
    }

    /// Sets a top-group point to a raw value (integers already divided by their scale factor).
    pub fn set(&mut self, id: u16, point: &str, value: Value) -> Result<&mut Self, ImageError> {
        let (addr, p) = self.locate(id, point)?;
        let words = encode(p.ty, p.size, &value, WordOrder::BigEndian);
        let start = usize::from(addr - self.base);
        for (i, w) in words.into_iter().enumerate() {
            if let Some(r) = self.regs.get_mut(start + i) {
                *r = w;
            }
        }
        Ok(self)
    }

    /// The registers `[addr, addr + count)`, if all inside the image.
    pub fn read(&self, addr: u16, count: u16) -> Option<&[u16]> {
        let start = usize::from(addr.checked_sub(self.base)?);
        self.regs.get(start..start + usize::from(count))
    }
}

impl SunSpecImage {
    /// Writes `words` at `addr` if every register is inside the image and writable.
    pub fn write(&mut self, addr: u16, words: &[u16]) -> bool {
        let Some(start) = addr.checked_sub(self.base).map(usize::from) else {
            return false;
        };
        let end = start + words.len();
        let ok = self
            .writable
            .get(start..end)
            .is_some_and(|w| w.iter().all(|rw| *rw));
        if ok {
            self.regs[start..end].copy_from_slice(words);
        }
        ok
    }

    /// Decodes a whole model as a client would read it (decode once when reading several points).
    pub fn decoded(&self, id: u16) -> Result<super::decode::DecodedModel, ImageError> {
        let slot = self
            .models
            .iter()
            .find(|m| m.id == id)
            .ok_or(ImageError::ModelNotInImage(id))?;
        let regs = self
            .read(slot.address, slot.length + 2)
            .ok_or(ImageError::TooLarge)?;
        super::decode::decode_model(slot.address, regs, WordOrder::BigEndian)
            .ok_or(ImageError::ModelNotInImage(id))
    }

    /// Decodes a top-group point's current value (scale factor applied from the image).
    pub fn value(&self, id: u16, point: &str) -> Result<super::decode::Value, ImageError> {
        self.decoded(id)?
            .point(point)
            .cloned()
            .ok_or_else(|| ImageError::UnknownPoint {
                model: id,
                point: point.to_owned(),
            })
    }
}
