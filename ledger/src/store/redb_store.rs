//! The block store: a redb database (`DIR/blocks.redb`).
//!
//! Why redb (docs/protocol.md §10): its commits are fsync'd (two-phase here), its file format
//! is stable, and it takes a storage backend, so the power-cut suite can drop every write not
//! yet synced and check what survives. Writes between flushes are non-durable commits; a flush
//! is one durable commit, so a power cut leaves the store as it was at a flush, never half a
//! block.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
    WriteTransaction,
};

use super::{final_mark, BlockStore, SledStore};
use crate::crypto::Hash32;
use crate::error::StoreError;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const CERTIFICATES: TableDefinition<u64, &[u8]> = TableDefinition::new("certificates");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_CHAIN_ID: &str = "chain_id";
/// redb's page cache (its default is 1 GiB, too much for a gateway box).
const CACHE_BYTES: usize = 16 << 20;

/// Blocks, certificates and the chain id in redb; the final mark in `final.mark` beside it.
#[derive(Debug)]
pub struct RedbStore {
    /// Always there until `Drop`, which leaks a database redb panicked on instead of closing it.
    db: Option<Database>,
    /// What errors name: the database file.
    path: String,
    mark_path: PathBuf,
    migrated: Option<u64>,
    /// redb panicked on damaged data once: its state is not to be trusted again.
    failed: AtomicBool,
}

impl RedbStore {
    /// Opens or creates `DIR/blocks.redb`. A new store is written under a temporary name and
    /// renamed once durable, so a power cut while it is created leaves no half-made store. A
    /// gateway that still has `DIR/blocks.sled` has its blocks, certificates and chain id
    /// copied into the new store in that same durable commit; the sled store is then renamed
    /// `blocks.sled.migrated`.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("blocks.redb");
        let migrated = if path.exists() {
            None
        } else {
            create_new(dir, &path)?
        };
        let name = path.display().to_string();
        let db = contained(&name, || {
            builder().create(&path).map_err(|e| store_error(&name, e))
        })?;
        let mut store = RedbStore::from_database(db, name, dir)?;
        store.migrated = migrated;
        Ok(store)
    }

    /// A store on `backend` (the power-cut suite's simulated disk), its final mark in
    /// `mark_dir`.
    pub fn with_backend(
        backend: impl StorageBackend,
        mark_dir: &Path,
    ) -> Result<RedbStore, StoreError> {
        let name = "blocks.redb (simulated disk)".to_string();
        let db = contained(&name, || {
            builder()
                .create_with_backend(backend)
                .map_err(|e| store_error(&name, e))
        })?;
        RedbStore::from_database(db, name, mark_dir)
    }

    /// How many blocks were copied from a sled store when it was opened, if it was.
    pub fn migrated(&self) -> Option<u64> {
        self.migrated
    }

    fn from_database(db: Database, path: String, dir: &Path) -> Result<RedbStore, StoreError> {
        let mut store = RedbStore {
            db: Some(db),
            path,
            mark_path: dir.join("final.mark"),
            migrated: None,
            failed: AtomicBool::new(false),
        };
        // Creates the tables, so that reads never meet a table that does not exist.
        store.write(|txn| {
            txn.open_table(BLOCKS)?;
            txn.open_table(CERTIFICATES)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        store.flush()?;
        Ok(store)
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::Backend(format!("{} is closed", self.path)))
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        store_error(&self.path, e)
    }

    /// Runs one store operation with redb's panics contained (see [`contained`]); after one,
    /// every later operation fails the same way.
    fn guarded<T>(&self, op: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(StoreError::Unreadable {
                path: self.path.clone(),
                reason: "an earlier read met damaged data".into(),
            });
        }
        let result = contained(&self.path, op);
        if matches!(&result, Err(StoreError::Unreadable { .. })) {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// One non-durable commit: visible to every later read, made durable by the next flush.
    fn write(
        &self,
        change: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        self.guarded(|| {
            let mut txn = self.db()?.begin_write().map_err(|e| self.err(e))?;
            txn.set_durability(Durability::None)
                .map_err(|e| self.err(e))?;
            change(&txn).map_err(|e| self.err(e))?;
            txn.commit().map_err(|e| self.err(e))
        })
    }

    fn read_u64_table(
        &self,
        table: TableDefinition<u64, &[u8]>,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.guarded(|| {
            let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
            let t = txn.open_table(table).map_err(|e| self.err(e))?;
            let mut out = Vec::new();
            for item in t.range(from..=to).map_err(|e| self.err(e))? {
                let (k, v) = item.map_err(|e| self.err(e))?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn last_of(
        &self,
        table: TableDefinition<u64, &[u8]>,
    ) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.guarded(|| {
            let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
            let t = txn.open_table(table).map_err(|e| self.err(e))?;
            let last = t
                .last()
                .map_err(|e| self.err(e))?
                .map(|(k, v)| (k.value(), v.value().to_vec()));
            Ok(last)
        })
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing writes the clean-shutdown flag through state the panic left behind, and
        // can panic again: a damaged store is left as it is on disk, its memory leaked.
        let db = self.db.take();
        if self.failed.load(Ordering::Relaxed) {
            std::mem::forget(db);
            return;
        }
        let _ = contained(&self.path, || {
            drop(db);
            Ok(())
        });
    }
}

/// redb 4.1 panics on some damaged files (an assertion on a file shorter than its header
/// says, `unreachable!` on a garbled B-tree page: 381 of 1 000 corruptions in
/// `ledger/tests/power_cut.rs`). A gateway must say the store is damaged and resync, not crash:
/// the panic becomes [`StoreError::Unreadable`] naming the file.
fn contained<T>(path: &str, op: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(op)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(StoreError::Unreadable {
            path: path.to_string(),
            reason: format!("the store library failed on damaged data: {what}"),
        })
    })
}

fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// Names the store in every error; damage and a second opener get their own variants.
fn store_error(path: &str, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_string(),
        },
        redb::Error::Corrupted(reason) => StoreError::Unreadable {
            path: path.to_string(),
            reason,
        },
        redb::Error::UpgradeRequired(version) => StoreError::Unreadable {
            path: path.to_string(),
            reason: format!("file format version {version} is not this version's"),
        },
        redb::Error::Io(source) => StoreError::Io {
            path: path.to_string(),
            source,
        },
        other => StoreError::Backend(format!("{path}: {other}")),
    }
}

impl BlockStore for RedbStore {
    fn chain_id(&self) -> Result<Option<Hash32>, StoreError> {
        self.guarded(|| {
            let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
            let t = txn.open_table(META).map_err(|e| self.err(e))?;
            let Some(v) = t.get(META_CHAIN_ID).map_err(|e| self.err(e))? else {
                return Ok(None);
            };
            let bytes: [u8; 32] = v.value().try_into().map_err(|_| StoreError::Corrupt {
                height: 0,
                reason: "chain id record is not 32 bytes".into(),
            })?;
            Ok(Some(Hash32(bytes)))
        })
    }
    fn set_chain_id(&mut self, id: Hash32) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(META)?.insert(META_CHAIN_ID, &id.0[..])?;
            Ok(())
        })
    }
    fn tip_height(&self) -> Result<u64, StoreError> {
        Ok(self.last_of(BLOCKS)?.map_or(0, |(h, _)| h))
    }
    fn get(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.guarded(|| {
            let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
            let t = txn.open_table(BLOCKS).map_err(|e| self.err(e))?;
            Ok(t.get(height)
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec()))
        })
    }
    fn put(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(BLOCKS)?.insert(height, bytes)?;
            Ok(())
        })
    }
    fn truncate_above(&mut self, height: u64) -> Result<(), StoreError> {
        let Some(start) = height.checked_add(1) else {
            return Ok(());
        };
        self.write(|txn| {
            txn.open_table(BLOCKS)?.retain_in(start.., |_, _| false)?;
            Ok(())
        })
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        self.guarded(|| {
            let mut txn = self.db()?.begin_write().map_err(|e| self.err(e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| self.err(e))?;
            // Two fsyncs per commit: the commit slot is valid before it is made primary, so a
            // torn write at a power cut cannot activate a half-written commit.
            txn.set_two_phase_commit(true);
            txn.commit().map_err(|e| self.err(e))
        })
    }
    fn put_certificate(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(CERTIFICATES)?.insert(height, bytes)?;
            Ok(())
        })
    }
    fn certificates(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        self.read_u64_table(CERTIFICATES, from, to)
    }
    fn last_certificate(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.last_of(CERTIFICATES)?.map(|(_, v)| v))
    }
    fn mark_final(&mut self, height: u64) -> Result<(), StoreError> {
        final_mark::write(&self.mark_path, height)
    }
    fn marked_final(&self) -> Result<Option<u64>, StoreError> {
        final_mark::read(&self.mark_path)
    }
}

/// Creates the store at `path` through `blocks.redb.partial`, with a sled store's contents if
/// `dir` has one (returning how many blocks it held).
fn create_new(dir: &Path, path: &Path) -> Result<Option<u64>, StoreError> {
    let partial = dir.join("blocks.redb.partial");
    let name = partial.display().to_string();
    let io = |at: &Path| {
        let path = at.display().to_string();
        move |source| StoreError::Io { path, source }
    };
    match std::fs::remove_file(&partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&partial)(e)),
    }
    let sled_dir = dir.join("blocks.sled");
    let sled = if sled_dir.exists() {
        Some(SledStore::open(dir)?)
    } else {
        None
    };
    let fail = |e: redb::Error| store_error(&name, e);
    let db = builder().create(&partial).map_err(|e| fail(e.into()))?;
    let txn = db.begin_write().map_err(|e| fail(e.into()))?;
    let mut migrated = None;
    {
        let mut blocks = txn.open_table(BLOCKS).map_err(|e| fail(e.into()))?;
        let mut certs = txn.open_table(CERTIFICATES).map_err(|e| fail(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
        if let Some(sled) = &sled {
            let tip = sled.tip_height()?;
            for height in 1..=tip {
                if let Some(bytes) = sled.get(height)? {
                    blocks
                        .insert(height, bytes.as_slice())
                        .map_err(|e| fail(e.into()))?;
                }
            }
            for (height, bytes) in sled.certificates(0, u64::MAX)? {
                certs
                    .insert(height, bytes.as_slice())
                    .map_err(|e| fail(e.into()))?;
            }
            if let Some(id) = sled.chain_id()? {
                meta.insert(META_CHAIN_ID, &id.0[..])
                    .map_err(|e| fail(e.into()))?;
            }
            migrated = Some(tip);
        }
    }
    txn.commit().map_err(|e| fail(e.into()))?;
    drop(db);
    drop(sled);
    std::fs::rename(&partial, path).map_err(io(path))?;
    if migrated.is_some() {
        std::fs::rename(&sled_dir, dir.join("blocks.sled.migrated")).map_err(io(&sled_dir))?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(migrated)
}
