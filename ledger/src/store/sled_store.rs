//! The sled 0.34 block store (`DIR/blocks.sled`): the store of gateways before 0.2, kept to
//! migrate them to [`super::RedbStore`]. Its flush uses `sync_file_range`, not `fsync`, and it
//! offers no storage hook to test power cuts with (docs/protocol.md §10).

use std::path::Path;

use super::{final_mark, BlockStore};
use crate::crypto::Hash32;
use crate::error::StoreError;

/// Blocks in a sled database (`DIR/blocks.sled`).
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    blocks: sled::Tree,
    certificates: sled::Tree,
    /// `DIR/final.mark`: the final height acknowledged, fsync'd outside sled (whose flush is
    /// not an fsync), so a store that lost final blocks is found out.
    mark_path: std::path::PathBuf,
}

const META_CHAIN_ID: &[u8] = b"chain_id";

impl SledStore {
    /// Opens or creates the store under `dir`. A lock still held is waited for, briefly: sled
    /// 0.34 releases its file lock from a background flusher thread some moments after the
    /// last handle drops (spacejam/sled#1234), so a store reopened in the same process can find
    /// its own lock. Another process holding the store is still refused, after that wait.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        use backon::{BlockingRetryable, ConstantBuilder};
        let lock_wait = ConstantBuilder::default()
            .with_delay(std::time::Duration::from_millis(50))
            .with_max_times(40);
        (|| SledStore::open_once(dir))
            .retry(lock_wait)
            .when(|e| matches!(e, StoreError::InUse { .. }))
            .call()
    }

    fn open_once(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.join("blocks.sled");
        let db = sled::open(&path).map_err(|e| match e {
            // sled's file lock (reported as an `Other` I/O error with this text): another
            // process has this store open.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::InUse {
                    path: path.display().to_string(),
                }
            }
            // A damaged `conf` reads as "sled version earlier than 0.29", a damaged log as
            // corruption: name the store and what to do, not only sled's words.
            sled::Error::Unsupported(reason) => StoreError::Unreadable {
                path: path.display().to_string(),
                reason,
            },
            sled::Error::Corruption { .. } => StoreError::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            },
            other => other.into(),
        })?;
        let blocks = db.open_tree("blocks")?;
        let certificates = db.open_tree("certificates")?;
        Ok(SledStore {
            db,
            blocks,
            certificates,
            mark_path: dir.join("final.mark"),
        })
    }
}

impl BlockStore for SledStore {
    fn chain_id(&self) -> Result<Option<Hash32>, StoreError> {
        match self.db.get(META_CHAIN_ID)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 32] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    height: 0,
                    reason: "chain id record is not 32 bytes".into(),
                })?;
                Ok(Some(Hash32(bytes)))
            }
        }
    }
    fn set_chain_id(&mut self, id: Hash32) -> Result<(), StoreError> {
        self.db.insert(META_CHAIN_ID, &id.0[..])?;
        Ok(())
    }
    fn tip_height(&self) -> Result<u64, StoreError> {
        match self.blocks.last()? {
            None => Ok(0),
            Some((k, _)) => {
                let bytes: [u8; 8] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    height: 0,
                    reason: "block key is not 8 bytes".into(),
                })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }
    fn get(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blocks.get(height.to_be_bytes())?.map(|v| v.to_vec()))
    }
    fn put(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.blocks.insert(height.to_be_bytes(), bytes)?;
        Ok(())
    }
    fn truncate_above(&mut self, height: u64) -> Result<(), StoreError> {
        let start = height.saturating_add(1).to_be_bytes();
        let keys: Vec<sled::IVec> = self
            .blocks
            .range(start..)
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys {
            self.blocks.remove(k)?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
    fn put_certificate(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.certificates.insert(height.to_be_bytes(), bytes)?;
        Ok(())
    }
    fn certificates(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self
            .certificates
            .range(from.to_be_bytes()..=to.to_be_bytes())
        {
            let (k, v) = item?;
            let key: [u8; 8] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                height: 0,
                reason: "certificate key is not 8 bytes".into(),
            })?;
            out.push((u64::from_be_bytes(key), v.to_vec()));
        }
        Ok(out)
    }
    fn last_certificate(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.certificates.last()?.map(|(_, v)| v.to_vec()))
    }
    fn mark_final(&mut self, height: u64) -> Result<(), StoreError> {
        final_mark::write(&self.mark_path, height)
    }
    fn marked_final(&self) -> Result<Option<u64>, StoreError> {
        final_mark::read(&self.mark_path)
    }
}
