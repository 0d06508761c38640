//! SunSpec: model tables, decoding, register images and the discovery walk.

pub mod decode;
pub mod image;
pub mod model;
pub mod scan;

pub use decode::{decode_model, DecodedModel, Value, WordOrder};
pub use image::SunSpecImage;
pub use scan::{ScanResult, Scanner, Step};

#[cfg(test)]
mod tests;
