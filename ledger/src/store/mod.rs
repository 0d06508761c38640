//! Persistence: the block store trait and its backends (redb; sled, kept to migrate from), the
//! chain that commits through it, and the fsync'd signer guard.
//!
//! A block counts as committed once the store has flushed it: for [`RedbStore`] one durable
//! (fsync'd, two-phase) commit. Opening a store still re-verifies what it holds and truncates
//! to the last valid block, reporting what it dropped, and the fsync'd final mark shows whether
//! acknowledged final blocks went missing. What no peer can give back — what this node signed —
//! lives in [`signer`] and [`vote_guard`] with a real fsync.

mod final_mark;
pub mod power_cut;
mod redb_store;
pub mod signer;
mod sled_store;
pub mod vote_guard;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::block::Block;
use crate::chain::{Chain, Checks, Finalized, Inserted};
use crate::crypto::Hash32;
use crate::error::{BlockError, StoreError};
use crate::finality::Certificate;
use crate::genesis::Genesis;

pub use redb_store::RedbStore;
pub use signer::SignerGuard;
pub use sled_store::SledStore;
pub use vote_guard::VoteGuard;

/// Where blocks of the canonical chain are kept, by height (1-based, contiguous).
pub trait BlockStore {
    /// The genesis hash the store was created for, if recorded.
    fn chain_id(&self) -> Result<Option<Hash32>, StoreError>;
    /// Records the genesis hash.
    fn set_chain_id(&mut self, id: Hash32) -> Result<(), StoreError>;
    /// The highest stored height (0 if empty).
    fn tip_height(&self) -> Result<u64, StoreError>;
    /// The encoded block at `height`.
    fn get(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores the encoded block at `height`.
    fn put(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError>;
    /// Removes every block above `height`.
    fn truncate_above(&mut self, height: u64) -> Result<(), StoreError>;
    /// Makes every earlier write durable (as far as the backend can).
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Stores the encoded certificate that finalized the block at `height`.
    fn put_certificate(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError>;
    /// The encoded certificates of final blocks at heights `from..=to`, ascending.
    fn certificates(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// The certificate of the highest final block, if any.
    fn last_certificate(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Records durably, after a flush, that blocks up to `height` are final here (what this
    /// node acknowledged to its household): the mark that shows later whether the backend
    /// lost acknowledged blocks. A backend with nothing to lose keeps it in memory.
    fn mark_final(&mut self, height: u64) -> Result<(), StoreError>;
    /// The last height [`Self::mark_final`] recorded (`None` before the first).
    fn marked_final(&self) -> Result<Option<u64>, StoreError>;
}

/// A boxed store is a store: a tool can pick its backend at run time.
impl<T: BlockStore + ?Sized> BlockStore for Box<T> {
    fn chain_id(&self) -> Result<Option<Hash32>, StoreError> {
        (**self).chain_id()
    }
    fn set_chain_id(&mut self, id: Hash32) -> Result<(), StoreError> {
        (**self).set_chain_id(id)
    }
    fn tip_height(&self) -> Result<u64, StoreError> {
        (**self).tip_height()
    }
    fn get(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(height)
    }
    fn put(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        (**self).put(height, bytes)
    }
    fn truncate_above(&mut self, height: u64) -> Result<(), StoreError> {
        (**self).truncate_above(height)
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn put_certificate(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        (**self).put_certificate(height, bytes)
    }
    fn certificates(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        (**self).certificates(from, to)
    }
    fn last_certificate(&self) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).last_certificate()
    }
    fn mark_final(&mut self, height: u64) -> Result<(), StoreError> {
        (**self).mark_final(height)
    }
    fn marked_final(&self) -> Result<Option<u64>, StoreError> {
        (**self).marked_final()
    }
}

/// A store in memory, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct MemStore {
    chain_id: Option<Hash32>,
    blocks: BTreeMap<u64, Vec<u8>>,
    certificates: BTreeMap<u64, Vec<u8>>,
    final_mark: Option<u64>,
}

impl BlockStore for MemStore {
    fn chain_id(&self) -> Result<Option<Hash32>, StoreError> {
        Ok(self.chain_id)
    }
    fn set_chain_id(&mut self, id: Hash32) -> Result<(), StoreError> {
        self.chain_id = Some(id);
        Ok(())
    }
    fn tip_height(&self) -> Result<u64, StoreError> {
        Ok(self.blocks.keys().next_back().copied().unwrap_or(0))
    }
    fn get(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blocks.get(&height).cloned())
    }
    fn put(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.blocks.insert(height, bytes.to_vec());
        Ok(())
    }
    fn truncate_above(&mut self, height: u64) -> Result<(), StoreError> {
        self.blocks.split_off(&height.saturating_add(1));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn put_certificate(&mut self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.certificates.insert(height, bytes.to_vec());
        Ok(())
    }
    fn certificates(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self
            .certificates
            .range(from..=to)
            .map(|(h, b)| (*h, b.clone()))
            .collect())
    }
    fn last_certificate(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.certificates.values().next_back().cloned())
    }
    fn mark_final(&mut self, height: u64) -> Result<(), StoreError> {
        self.final_mark = Some(height);
        Ok(())
    }
    fn marked_final(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.final_mark)
    }
}

/// What opening a store found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Blocks that verified and were loaded.
    pub loaded: u64,
    /// Stored blocks dropped because they did not verify (`from_height`, count, reason).
    pub dropped: Option<(u64, u64, String)>,
    /// The store came back with fewer final blocks than this node acknowledged
    /// (`acknowledged final height`, `final height loaded`): it lost them (a power cut before
    /// the backend wrote them, or damage). Peers give them back; the loss is reported.
    pub lost_final: Option<(u64, u64)>,
    /// The final mark could not be read (why); nothing can be said about lost final blocks.
    pub mark_unreadable: Option<String>,
    /// Stored certificates that did not verify (their blocks stay non-final).
    pub bad_certificates: u64,
}

/// A [`Chain`] whose canonical branch is kept in a [`BlockStore`].
#[derive(Debug)]
pub struct PersistentChain<S: BlockStore> {
    chain: Chain,
    store: S,
    /// Hashes of the stored canonical blocks; index = height (index 0 = the genesis hash).
    canonical: Vec<Hash32>,
    /// The certificate of the final block (none while genesis is the final block).
    last_certificate: Option<Certificate>,
}

impl<S: BlockStore> PersistentChain<S> {
    /// Opens a store: re-verifies every stored block (signatures for the newest
    /// `signature_depth` of them) and truncates at the first one that fails.
    pub fn open(
        mut store: S,
        genesis: Genesis,
        signature_depth: u64,
    ) -> Result<(PersistentChain<S>, OpenReport), StoreError> {
        let mut chain = Chain::new(genesis).map_err(|e| StoreError::Corrupt {
            height: 0,
            reason: e.to_string(),
        })?;
        let id = chain.chain_id();
        match store.chain_id()? {
            Some(found) if found != id => {
                return Err(StoreError::WrongChain {
                    expected: id,
                    found,
                })
            }
            Some(_) => {}
            None => {
                store.set_chain_id(id)?;
                store.flush()?;
            }
        }
        // Read before anything here writes a new mark.
        let (marked, mark_unreadable) = match store.marked_final() {
            Ok(m) => (m, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let tip = store.tip_height()?;
        let sig_from = tip.saturating_sub(signature_depth);
        let mut canonical = vec![id];
        let mut dropped = None;
        let mut bad_certificates = 0u64;
        for height in 1..=tip {
            let failure = match store.get(height)? {
                None => Some("missing".to_string()),
                Some(bytes) => match Block::decode(&bytes) {
                    Err(e) => Some(format!("does not decode: {e}")),
                    Ok(block) if block.header.height != height => {
                        Some(format!("holds height {} instead", block.header.height))
                    }
                    Ok(block) => {
                        let checks = Checks {
                            signatures: height > sig_from,
                            current_slot: None,
                        };
                        match chain.insert(block, checks) {
                            Ok(ins) => {
                                canonical.push(ins.hash);
                                // Finalize as the replay goes, or every replayed block would
                                // stay in memory with its own state until the end.
                                // A bad certificate leaves its block non-final (peers resend
                                // certificates with sync answers); it is counted, not fatal.
                                if let Some((_, bytes)) = store.certificates(height, height)?.pop()
                                {
                                    if refinalize(&mut chain, &bytes, &ins.hash, checks).is_err() {
                                        bad_certificates = bad_certificates.saturating_add(1);
                                    }
                                }
                                None
                            }
                            Err(e) => Some(e.to_string()),
                        }
                    }
                },
            };
            if let Some(reason) = failure {
                let count = tip.saturating_sub(height).saturating_add(1);
                dropped = Some((height, count, reason));
                store.truncate_above(height.saturating_sub(1))?;
                store.flush()?;
                break;
            }
        }
        let loaded = u64::try_from(canonical.len().saturating_sub(1)).unwrap_or(u64::MAX);
        // The newest certificate that finalized a replayed block (one above a truncated chain
        // waits until peers supply the blocks again).
        let final_height = chain.finalized().1;
        let last_certificate = match store.certificates(final_height, final_height)?.pop() {
            Some((_, bytes)) if final_height > 0 => Some(Certificate::decode(&bytes).map_err(
                |e| StoreError::Corrupt {
                    height: final_height,
                    reason: format!("stored certificate does not decode: {e}"),
                },
            )?),
            _ => None,
        };
        let lost_final = marked
            .filter(|m| *m > final_height)
            .map(|m| (m, final_height));
        let pc = PersistentChain {
            chain,
            store,
            canonical,
            last_certificate,
        };
        Ok((
            pc,
            OpenReport {
                loaded,
                dropped,
                bad_certificates,
                lost_final,
                mark_unreadable,
            },
        ))
    }

    /// The in-memory chain.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Mutable access to the in-memory chain (e.g. to set verification threads).
    pub fn chain_mut(&mut self) -> &mut Chain {
        &mut self.chain
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stored canonical block at `height`.
    pub fn block_at(&self, height: u64) -> Result<Option<Block>, StoreError> {
        match self.store.get(height)? {
            None => Ok(None),
            Some(bytes) => Block::decode(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    height,
                    reason: e.to_string(),
                }),
        }
    }

    /// The stored canonical hash at `height`.
    pub fn hash_at(&self, height: u64) -> Option<Hash32> {
        usize::try_from(height)
            .ok()
            .and_then(|h| self.canonical.get(h))
            .copied()
    }

    /// The certificate of the final block, if a quorum finalized any block yet.
    pub fn last_certificate(&self) -> Option<&Certificate> {
        self.last_certificate.as_ref()
    }

    /// Stored certificates of final blocks at heights `from..=to`.
    pub fn certificates(&self, from: u64, to: u64) -> Result<Vec<Certificate>, StoreError> {
        self.store
            .certificates(from, to)?
            .into_iter()
            .map(|(height, bytes)| {
                Certificate::decode(&bytes).map_err(|e| StoreError::Corrupt {
                    height,
                    reason: format!("certificate does not decode: {e}"),
                })
            })
            .collect()
    }

    /// Makes the certified block final: checks the certificate against the members and the
    /// quorum, stores it (flushed) and moves the chain's root. A certificate at or below the
    /// final height is a no-op.
    pub fn finalize(&mut self, cert: Certificate) -> Result<Finalized, StoreError> {
        if cert.block.height <= self.chain.finalized().1 {
            return Ok(Finalized::default());
        }
        // The voters are the members of the previous final block's state (protocol.md §9).
        let rules = self.chain.rules();
        let voters = self.chain.finalized_state().members();
        cert.verify(&rules.chain_id, voters, &rules.finality)
            .map_err(BlockError::BadCertificate)?;
        match self.chain.block(&cert.block.hash) {
            Some(b) if b.header.height == cert.block.height => {}
            _ => {
                return Err(StoreError::Block(BlockError::FinalizeUnknown {
                    hash: cert.block.hash,
                }))
            }
        }
        let finalized = self.chain.finalize(&cert.block.hash)?;
        if let Some((from, branch)) = &finalized.head_switch {
            self.replace_above(*from, branch)?;
        }
        self.store
            .put_certificate(cert.block.height, &cert.encode())?;
        self.store.flush()?;
        self.store.mark_final(cert.block.height)?;
        self.last_certificate = Some(cert);
        Ok(finalized)
    }

    fn replace_above(&mut self, ancestor: u64, branch: &[Arc<Block>]) -> Result<(), StoreError> {
        if self.store.tip_height()? > ancestor {
            self.store.truncate_above(ancestor)?;
        }
        self.canonical.truncate(
            usize::try_from(ancestor)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        );
        for b in branch {
            self.store.put(b.header.height, &b.encode())?;
            self.canonical.push(b.hash());
        }
        Ok(())
    }

    /// Validates and inserts `block`; if the head moved, writes the new canonical branch and
    /// flushes. When this returns `Ok`, the block is committed.
    pub fn commit(&mut self, block: Block, checks: Checks) -> Result<Inserted, StoreError> {
        let inserted = self.chain.insert(block, checks)?;
        if inserted.head_changed {
            self.replace_above(inserted.fork_height, &inserted.new_branch)?;
            self.store.flush()?;
        }
        Ok(inserted)
    }
}

/// Re-finalizes a replayed block with its stored certificate (checked like the block: its
/// signatures only within the re-verified window).
fn refinalize(
    chain: &mut Chain,
    bytes: &[u8],
    hash: &Hash32,
    checks: Checks,
) -> Result<(), BlockError> {
    let cert = Certificate::decode(bytes)?;
    if cert.block.hash != *hash {
        return Err(BlockError::FinalizeUnknown {
            hash: cert.block.hash,
        });
    }
    if checks.signatures {
        let rules = chain.rules();
        let voters = chain.finalized_state().members();
        cert.verify(&rules.chain_id, voters, &rules.finality)
            .map_err(BlockError::BadCertificate)?;
    }
    chain.finalize(hash)?;
    Ok(())
}

/// Opens the block store in `dir` (migrating a sled store found there) and loads its chain.
pub fn open_store(
    dir: &Path,
    genesis: Genesis,
    signature_depth: u64,
) -> Result<(PersistentChain<RedbStore>, OpenReport), StoreError> {
    PersistentChain::open(RedbStore::open(dir)?, genesis, signature_depth)
}

/// Opens a sled store in `dir` as it is, without migrating it (tests and comparisons).
pub fn open_sled(
    dir: &Path,
    genesis: Genesis,
    signature_depth: u64,
) -> Result<(PersistentChain<SledStore>, OpenReport), StoreError> {
    PersistentChain::open(SledStore::open(dir)?, genesis, signature_depth)
}
