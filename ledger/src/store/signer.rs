//! The signer guard: the last slot this node signed a block for, kept across power loss.
//!
//! No peer can give this back, so it is written with a real `fsync` (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory) *before* the signature leaves
//! the node. A restarted node therefore never signs a second, different block for a slot.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::crypto::Hash32;
use crate::error::{GuardLoss, StoreError};

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
    /// Set when the record is gone or damaged: nothing is signed until [`Self::resume_after`].
    loss: Option<GuardLoss>,
}

impl SignerGuard {
    /// Opens (or starts) the guard in `dir` for a node whose opened chain is `chain_height`
    /// high. A missing file is a fresh start only for a node with no chain yet, and the start
    /// writes the file at once, so that from then on its absence means it was lost; a missing
    /// file beside a chain, or a damaged one, is never read as "never signed" (that could sign
    /// a slot twice): the guard refuses to sign until [`Self::resume_after`].
    pub fn open(dir: &Path, chain_height: u64) -> Result<SignerGuard, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(FILE_NAME);
        let (last, loss) = match fs::read(&path) {
            Ok(bytes) => match Self::decode(&bytes) {
                Some(last) => (Some(last), None),
                None => (None, Some(GuardLoss::Damaged)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (None, (chain_height > 0).then_some(GuardLoss::Missing))
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let fresh = last.is_none() && loss.is_none();
        let mut guard = SignerGuard { path, last, loss };
        if fresh {
            guard.write(0, Hash32([0; 32]))?;
        }
        Ok(guard)
    }

    /// What happened to the record, while signing waits for [`Self::resume_after`].
    pub fn loss(&self) -> Option<&GuardLoss> {
        self.loss.as_ref()
    }

    /// Ends a loss: records `slot` as signed, so only later slots can be. Safe with the
    /// current slot of the community clock, as no block can have been signed for a slot
    /// that had not begun.
    pub fn resume_after(&mut self, slot: u64) -> Result<(), StoreError> {
        let floor = self.last.map_or(slot, |(s, _)| s.max(slot));
        self.write(floor, Hash32([0; 32]))?;
        self.loss = None;
        Ok(())
    }

    fn write(&mut self, slot: u64, block_hash: Hash32) -> Result<(), StoreError> {
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
        if let Some(loss) = &self.loss {
            return Err(StoreError::SignerStateLost {
                path: self.path.display().to_string(),
                loss: loss.clone(),
            });
        }
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
        self.write(slot, block_hash)
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
        let mut g = SignerGuard::open(dir.path(), 0).unwrap();
        g.authorize(5, a).unwrap();
        drop(g);
        let mut g = SignerGuard::open(dir.path(), 9).unwrap();
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
    fn a_damaged_record_signs_nothing_until_resumed_past_the_current_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = SignerGuard::open(dir.path(), 0).unwrap();
        g.authorize(7, Hash32::sha256(b"a")).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        let mut g = SignerGuard::open(dir.path(), 3).unwrap();
        assert_eq!(g.loss(), Some(&GuardLoss::Damaged));
        let refused = g.authorize(9, Hash32::sha256(b"b")).unwrap_err();
        assert!(
            refused.to_string().contains("signer.state is damaged"),
            "{refused}"
        );
        g.resume_after(9).unwrap();
        assert!(
            g.authorize(9, Hash32::sha256(b"b")).is_err(),
            "the resume slot is taken"
        );
        g.authorize(10, Hash32::sha256(b"b")).unwrap();
        assert_eq!(SignerGuard::open(dir.path(), 3).unwrap().loss(), None);
    }

    #[test]
    fn a_missing_record_is_fresh_only_without_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SignerGuard::open(dir.path(), 0).unwrap().loss(), None);
        // The fresh start wrote its record: a node that never signed keeps it across restarts.
        assert_eq!(SignerGuard::open(dir.path(), 40).unwrap().loss(), None);
        fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let mut g = SignerGuard::open(dir.path(), 40).unwrap();
        assert_eq!(g.loss(), Some(&GuardLoss::Missing));
        assert!(matches!(
            g.authorize(50, Hash32::sha256(b"a")),
            Err(StoreError::SignerStateLost { .. })
        ));
    }
}
