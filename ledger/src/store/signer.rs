//! The signer guard: the last slot this node signed a block for, kept across power loss.
//!
//! No peer can give this back, so it is written with a real `fsync` (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory) *before* the signature leaves
//! the node. A restarted node therefore never signs a second, different block for a slot.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::crypto::Hash32;
use crate::error::StoreError;

const FILE_NAME: &str = "signer.state";
const MAGIC: &[u8; 8] = b"GRLSIGN1";
const RECORD_LEN: usize = 8 + 8 + 32 + 32;

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, e))?;
        f.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
        f.sync_all().map_err(|e| io_error(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// The last signed slot and block hash, persisted in `DIR/signer.state`.
#[derive(Debug)]
pub struct SignerGuard {
    path: PathBuf,
    last: Option<(u64, Hash32)>,
}

impl SignerGuard {
    /// Opens (or starts) the guard in `dir`. A corrupt file is an error, never "no record":
    /// treating it as empty could let the node sign a slot twice.
    pub fn open(dir: &Path) -> Result<SignerGuard, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(FILE_NAME);
        let last = match fs::read(&path) {
            Ok(bytes) => Some(Self::decode(&bytes).ok_or_else(|| StoreError::Corrupt {
                height: 0,
                reason: format!("{} is not a valid signer record", path.display()),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&path, e)),
        };
        Ok(SignerGuard { path, last })
    }

    fn decode(bytes: &[u8]) -> Option<(u64, Hash32)> {
        if bytes.len() != RECORD_LEN || bytes.get(..8)? != MAGIC {
            return None;
        }
        let body = bytes.get(..48)?;
        let check = Hash32::sha256(body);
        if bytes.get(48..)? != check.0 {
            return None;
        }
        let slot = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let hash = Hash32(bytes.get(16..48)?.try_into().ok()?);
        Some((slot, hash))
    }

    /// The last slot signed, if any.
    pub fn last_signed(&self) -> Option<(u64, Hash32)> {
        self.last
    }

    /// Records that the node signs `block_hash` for `slot`, durably, before the signature may
    /// be used. Refuses an earlier slot, or the same slot with a different block.
    pub fn authorize(&mut self, slot: u64, block_hash: Hash32) -> Result<(), StoreError> {
        if let Some((last_slot, last_hash)) = self.last {
            if slot < last_slot || (slot == last_slot && block_hash != last_hash) {
                return Err(StoreError::SlotAlreadySigned {
                    slot,
                    last_signed: last_slot,
                });
            }
            if slot == last_slot {
                return Ok(());
            }
        }
        let mut record = Vec::with_capacity(RECORD_LEN);
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&slot.to_be_bytes());
        record.extend_from_slice(&block_hash.0);
        let check = Hash32::sha256(&record);
        record.extend_from_slice(&check.0);
        write_durably(&self.path, &record)?;
        self.last = Some((slot, block_hash));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_second_block_for_a_signed_slot_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = Hash32::sha256(b"a");
        let b = Hash32::sha256(b"b");
        let mut g = SignerGuard::open(dir.path()).unwrap();
        g.authorize(5, a).unwrap();
        drop(g);
        let mut g = SignerGuard::open(dir.path()).unwrap();
        assert_eq!(g.last_signed(), Some((5, a)));
        g.authorize(5, a).unwrap();
        assert!(matches!(
            g.authorize(5, b),
            Err(StoreError::SlotAlreadySigned { slot: 5, .. })
        ));
        assert!(g.authorize(4, b).is_err());
        g.authorize(6, b).unwrap();
    }

    #[test]
    fn corrupt_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = SignerGuard::open(dir.path()).unwrap();
        g.authorize(1, Hash32::sha256(b"a")).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            SignerGuard::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
