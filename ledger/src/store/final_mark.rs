//! `final.mark`: the final height this node acknowledged, fsync'd beside the block store and
//! independent of it, so a store that comes back with fewer final blocks is found out
//! (docs/protocol.md §10).

use std::path::Path;

use super::signer;
use crate::crypto::Hash32;
use crate::error::StoreError;

const MARK_MAGIC: &[u8; 8] = b"GRLFIN01";

/// Writes `height` to the mark at `path` (write–fsync–rename–fsync(dir)).
pub(super) fn write(path: &Path, height: u64) -> Result<(), StoreError> {
    let mut record = MARK_MAGIC.to_vec();
    record.extend_from_slice(&height.to_be_bytes());
    let check = Hash32::sha256(&record);
    record.extend_from_slice(&check.0);
    signer::write_durably(path, &record)
}

/// The height in the mark at `path`; `None` if there is none yet.
pub(super) fn read(path: &Path) -> Result<Option<u64>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.display().to_string(),
                source: e,
            })
        }
    };
    let damaged = || StoreError::Corrupt {
        height: 0,
        reason: format!("{} is not a valid final mark", path.display()),
    };
    let (body, check) = bytes.split_at_checked(16).ok_or_else(damaged)?;
    if body.get(..8) != Some(&MARK_MAGIC[..]) || Hash32::sha256(body).0 != check {
        return Err(damaged());
    }
    let height: [u8; 8] = body
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(damaged)?;
    Ok(Some(u64::from_be_bytes(height)))
}
