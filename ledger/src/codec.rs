//! The canonical binary encoding: big-endian fixed-width integers, fixed-size byte arrays and
//! `u32`-length-prefixed byte strings. Every value has exactly one encoding, and the [`Reader`]
//! refuses anything else (short input, trailing bytes, oversized lengths), so that
//! `encode(decode(bytes)) == bytes` holds for every accepted input.

use crate::error::DecodeError;

/// Upper bound on any length prefix, so a forged length cannot make a decoder allocate wildly.
pub const MAX_VAR_LEN: u32 = 16 * 1024 * 1024;

/// Appends canonical encodings to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose buffer starts with a domain tag (not length-prefixed: tags are constants).
    pub fn with_tag(tag: &[u8]) -> Self {
        Self { buf: tag.to_vec() }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian two's-complement `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a big-endian two's-complement `i32`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends bytes whose length the reader knows in advance.
    pub fn fixed(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a `u32` length followed by the bytes.
    ///
    /// Lengths above [`MAX_VAR_LEN`] are a caller bug; they are clamped so encoding never
    /// panics, and the reader will then refuse the result.
    pub fn var(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes encoded so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads canonical encodings from a byte slice, tracking the offset for error messages.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::UnexpectedEnd {
            offset: self.pos,
            needed: n,
        })?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(DecodeError::UnexpectedEnd {
                offset: self.pos,
                needed: n,
            })?;
        self.pos = end;
        Ok(out)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian two's-complement `i64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian two's-complement `i32`.
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    /// Reads a `u32` element count, refusing counts whose elements (at least `min_bytes`
    /// each) could not fit in what is left: no allocation larger than the input.
    pub fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.u32()?;
        let left = self.bytes.len().saturating_sub(self.pos);
        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
        if n_usize.saturating_mul(min_bytes.max(1)) > left {
            return Err(DecodeError::LengthTooLarge {
                length: n,
                offset: at,
                max: u32::try_from(left.checked_div(min_bytes.max(1)).unwrap_or(0))
                    .unwrap_or(u32::MAX),
            });
        }
        Ok(n_usize)
    }

    /// Reads a `u32` length and that many bytes.
    pub fn var(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.u32()?;
        if len > MAX_VAR_LEN {
            return Err(DecodeError::LengthTooLarge {
                offset: at,
                length: len,
                max: MAX_VAR_LEN,
            });
        }
        self.take(len as usize)
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                offset: self.pos,
                remaining: self.bytes.len().saturating_sub(self.pos),
            })
        }
    }
}

/// Lower-case hex of `bytes` (the `hex` crate).
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Parses hex (either case); `None` on odd length or a non-hex character.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_short_and_trailing_input() {
        let mut w = Writer::new();
        w.u32(7).var(b"abc");
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.var().unwrap(), b"abc");
        r.finish().unwrap();

        let mut short = Reader::new(&bytes[..5]);
        short.u32().unwrap();
        assert!(matches!(
            short.var(),
            Err(DecodeError::UnexpectedEnd { .. })
        ));

        let mut long = bytes.clone();
        long.push(0);
        let mut r = Reader::new(&long);
        r.u32().unwrap();
        r.var().unwrap();
        assert_eq!(
            r.finish(),
            Err(DecodeError::TrailingBytes {
                offset: 11,
                remaining: 1
            })
        );
    }

    #[test]
    fn forged_length_is_refused_before_allocation() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2];
        let mut r = Reader::new(&bytes);
        assert!(matches!(r.var(), Err(DecodeError::LengthTooLarge { .. })));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(to_hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex("00ABff").unwrap(), vec![0x00, 0xab, 0xff]);
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
