//! Blocks: a signed header committing to the parent, the transactions (Merkle root and count)
//! and the state after them.
//!
//! Header encoding: `version u8 = 1 | chain_id [32] | height u64 | slot u64 | prev_hash [32] |
//! tx_root [32] | tx_count u32 | state_hash [32] | producer [33]`. The block hash is
//! `SHA-256("gridlet/block/v1" || header)` and is also the digest the producer signs. A block
//! is `header | signature [64] | count u32 | count × (len u32 | signed transaction)`.

use secp256k1::SecretKey;

use crate::codec::{Reader, Writer};
use crate::crypto::{Hash32, MemberKey, Signature};
use crate::error::DecodeError;
use crate::merkle;
use crate::tx::SignedTransaction;

/// The block format version.
pub const BLOCK_VERSION: u8 = 1;
const BLOCK_TAG: &[u8] = b"gridlet/block/v1";

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// The genesis hash.
    pub chain_id: Hash32,
    /// Height: the parent's plus one (the first block is 1).
    pub height: u64,
    /// The slot it was produced in; strictly above the parent's.
    pub slot: u64,
    /// The parent's hash (zero for the first block).
    pub prev_hash: Hash32,
    /// Merkle root of the transaction ids.
    pub tx_root: Hash32,
    /// Number of transactions.
    pub tx_count: u32,
    /// Hash of the state after the block.
    pub state_hash: Hash32,
    /// The producer.
    pub producer: MemberKey,
}

impl BlockHeader {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    fn encode_into(&self, w: &mut Writer) {
        w.u8(BLOCK_VERSION)
            .fixed(&self.chain_id.0)
            .u64(self.height)
            .u64(self.slot)
            .fixed(&self.prev_hash.0)
            .fixed(&self.tx_root.0)
            .u32(self.tx_count)
            .fixed(&self.state_hash.0)
            .fixed(&self.producer.0);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<BlockHeader, DecodeError> {
        let version = r.u8()?;
        if version != BLOCK_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "block",
                expected: BLOCK_VERSION,
                found: version,
            });
        }
        Ok(BlockHeader {
            chain_id: Hash32(r.array()?),
            height: r.u64()?,
            slot: r.u64()?,
            prev_hash: Hash32(r.array()?),
            tx_root: Hash32(r.array()?),
            tx_count: r.u32()?,
            state_hash: Hash32(r.array()?),
            producer: MemberKey::from_bytes(r.array()?)?,
        })
    }

    /// The block hash, which the producer signs.
    pub fn hash(&self) -> Hash32 {
        Hash32::tagged(BLOCK_TAG, &[&self.encode()])
    }
}

/// A signed block with its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The producer's signature over the header hash.
    pub signature: Signature,
    /// The transactions, in execution order.
    pub transactions: Vec<SignedTransaction>,
}

impl Block {
    /// Signs a header and bundles it with its transactions.
    pub fn seal(
        header: BlockHeader,
        transactions: Vec<SignedTransaction>,
        sk: &SecretKey,
    ) -> Block {
        let signature = Signature::sign(&header.hash(), sk);
        Block {
            header,
            signature,
            transactions,
        }
    }

    /// The block hash.
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }

    /// The transaction ids, in order.
    pub fn txids(&self) -> Vec<Hash32> {
        self.transactions.iter().map(|t| t.id()).collect()
    }

    /// The Merkle root computed from the body.
    pub fn computed_tx_root(&self) -> Hash32 {
        merkle::root(&self.txids())
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.header.encode_into(&mut w);
        w.fixed(&self.signature.0);
        w.u32(u32::try_from(self.transactions.len()).unwrap_or(u32::MAX));
        for t in &self.transactions {
            w.var(t.bytes());
        }
        w.finish()
    }

    /// Decodes the canonical encoding; anything else is refused.
    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        let mut r = Reader::new(bytes);
        let header = BlockHeader::decode_from(&mut r)?;
        let signature = Signature::from_bytes(r.array()?)?;
        let count = r.u32()?;
        // Each transaction takes well over 100 bytes, which bounds a forged count.
        let cap = (bytes.len() / 100).min(count as usize);
        let mut transactions = Vec::with_capacity(cap);
        for _ in 0..count {
            transactions.push(SignedTransaction::decode(r.var()?)?);
        }
        r.finish()?;
        Ok(Block {
            header,
            signature,
            transactions,
        })
    }
}

/// What can be known of a block without its parent: it is for this chain, a member produced
/// and signed it, its slot is not after `current_slot`, and its height is not above its slot
/// (slots start at 1 and each block's slot is above its parent's). A block that fails this can
/// never become valid, so a node drops it instead of waiting for its parent or syncing towards
/// its height (docs/protocol.md §9.1); a block that passes may still be invalid.
pub fn check_header(
    rules: &crate::state::Rules,
    members: &std::collections::BTreeMap<MemberKey, secp256k1::PublicKey>,
    block: &Block,
    current_slot: u64,
) -> Result<(), crate::error::BlockError> {
    use crate::error::BlockError;
    let h = &block.header;
    if h.chain_id != rules.chain_id {
        return Err(BlockError::WrongChain {
            expected: rules.chain_id,
            found: h.chain_id,
        });
    }
    if h.slot > current_slot {
        return Err(BlockError::SlotInFuture {
            current: current_slot,
            found: h.slot,
        });
    }
    if h.height > h.slot {
        return Err(BlockError::HeightAboveSlot {
            height: h.height,
            slot: h.slot,
        });
    }
    match producer_signed(members, block) {
        None => Err(BlockError::UnknownProducer {
            producer: h.producer,
        }),
        Some(false) => Err(BlockError::BadProducerSignature { height: h.height }),
        Some(true) => Ok(()),
    }
}

/// Whether the header's producer signed the block: `None` if the producer is no member.
pub(crate) fn producer_signed(
    members: &std::collections::BTreeMap<MemberKey, secp256k1::PublicKey>,
    block: &Block,
) -> Option<bool> {
    let key = members.get(&block.header.producer)?;
    Some(block.signature.verify(&block.header.hash(), key))
}
