//! `gridlet genesis`, `gridlet chain verify|export|produce`: the ledger from the command line.
//!
//! A data directory holds `genesis.json` (the community file), `blocks.redb` (the chain) and
//! `signer.state` (the last slot this node signed, fsync'd).

use gridlet_ledger::MicroCredits;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gridlet_ledger::chain::Checks;
use gridlet_ledger::codec::to_hex;
use gridlet_ledger::genesis::{AttestorSigner, Equipment, Member};
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{open_store, BlockStore, RedbStore, SignerGuard};
use gridlet_ledger::{Block, Chain, Genesis, MemberKey, Transaction, TxPayload};
use serde_json::json;

use crate::keys;

/// The genesis file of a data directory.
pub fn genesis_path(data: &Path) -> PathBuf {
    data.join("genesis.json")
}

/// Reads and validates a genesis file.
pub fn load_genesis(path: &Path) -> Result<Genesis> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read genesis {}", path.display()))?;
    Genesis::from_json(&text).with_context(|| format!("invalid genesis {}", path.display()))
}

/// Copies a genesis into a data directory, refusing to replace a different one.
pub fn install_genesis(data: &Path, genesis: &Genesis) -> Result<()> {
    fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let path = genesis_path(data);
    if path.exists() {
        let existing = load_genesis(&path)?;
        if existing.hash() != genesis.hash() {
            bail!(
                "{} already holds chain {}, not {}",
                data.display(),
                existing.hash(),
                genesis.hash()
            );
        }
        return Ok(());
    }
    fs::write(&path, genesis.to_json() + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What a member spec leaves out: `--battery-wh`, `--pv-w` and `--signer`'s defaults.
pub const DEFAULT_EQUIPMENT: Equipment = Equipment {
    signer: AttestorSigner::Gateway,
    battery_wh: 10_000,
    pv_w: 5_000,
};

/// The optional tail of a member spec, `[,BATTERY_WH,PV_W[,device|gateway]]`, over `defaults`.
pub fn parse_equipment(arg: &str, tail: &[&str], defaults: Equipment) -> Result<Equipment> {
    let number = |what: &str, s: &str| -> Result<u64> {
        s.trim()
            .parse()
            .with_context(|| format!("{arg:?}: {what} {s:?} is not a whole number"))
    };
    let signer = |s: &str| -> Result<AttestorSigner> {
        match s.trim() {
            "device" => Ok(AttestorSigner::Device),
            "gateway" => Ok(AttestorSigner::Gateway),
            other => bail!("{arg:?}: signer {other:?} is neither `device` nor `gateway`"),
        }
    };
    Ok(match tail {
        [] => defaults,
        [battery, pv] => Equipment {
            battery_wh: number("battery Wh", battery)?,
            pv_w: number("PV W", pv)?,
            ..defaults
        },
        [battery, pv, who] => Equipment {
            signer: signer(who)?,
            battery_wh: number("battery Wh", battery)?,
            pv_w: number("PV W", pv)?,
        },
        _ => bail!(
            "{arg:?}: after NAME,KEY,ATTESTOR expected nothing, BATTERY_WH,PV_W or \
             BATTERY_WH,PV_W,device|gateway"
        ),
    })
}

/// One `--member NAME,KEY_FILE,ATTESTOR_KEY_FILE[,BATTERY_WH,PV_W[,SIGNER]]` argument.
pub fn parse_member(
    arg: &str,
    balance: gridlet_ledger::MicroCredits,
    defaults: Equipment,
) -> Result<Member> {
    let parts: Vec<&str> = arg.split(',').collect();
    let [name, key, attestor, tail @ ..] = parts.as_slice() else {
        bail!(
            "--member {arg:?}: expected NAME,KEY_FILE,ATTESTOR_KEY_FILE[,BATTERY_WH,PV_W[,SIGNER]]"
        );
    };
    Ok(Member {
        name: (*name).to_owned(),
        key: keys::load_public(Path::new(key))?,
        attestor: keys::load_public(Path::new(attestor))?,
        equipment: parse_equipment(arg, tail, defaults)?,
        balance,
    })
}

/// Builds a genesis with defaults, then the options given.
pub struct GenesisOptions {
    /// Chain name.
    pub chain_id: String,
    /// Members.
    pub members: Vec<Member>,
    /// Selection rule.
    pub rule: SelectionRule,
    /// Slot 0 start (unix ms).
    pub genesis_time_ms: u64,
    /// Slot length.
    pub slot_ms: u64,
    /// Most blocks above the last final one a member builds on.
    pub max_unfinal_blocks: u64,
    /// Fee.
    pub tx_fee: u64,
    /// Fallback ranks.
    pub fallback_ranks: u32,
    /// Delivery window beyond the energy's own time, blocks.
    pub delivery_blocks: u64,
    /// Planning power of deliveries, W.
    pub delivery_power_w: u64,
    /// Auction round length, blocks.
    pub auction_round_blocks: u64,
    /// Retention window, blocks.
    pub retention_blocks: u64,
    /// Grid tariff, µcredits/kWh.
    pub grid_tariff: u64,
    /// Floor price, µcredits/kWh.
    pub floor_price: u64,
}

/// A validated genesis from options.
pub fn build_genesis(o: GenesisOptions) -> Result<Genesis> {
    let mut g = Genesis::with_defaults(&o.chain_id, o.genesis_time_ms, o.members, o.rule);
    g.slot_ms = o.slot_ms;
    g.finality.max_unfinal_blocks = o.max_unfinal_blocks;
    g.tx_fee = gridlet_ledger::MicroCredits::new(o.tx_fee);
    g.selection.fallback_ranks = o.fallback_ranks;
    g.market.delivery_blocks = o.delivery_blocks;
    g.market.delivery_power_w = o.delivery_power_w;
    g.market.retention_blocks = o.retention_blocks;
    g.market.auction_round_blocks = o.auction_round_blocks;
    g.grid_tariff = gridlet_ledger::Price::new(o.grid_tariff);
    g.floor_price = gridlet_ledger::Price::new(o.floor_price);
    g.validate().context("genesis")?;
    Ok(g)
}

/// A stored chain re-verified from genesis.
pub(crate) struct Verified {
    /// The chain.
    pub chain: Chain,
    /// Transactions in it.
    pub txs: u64,
    /// The producer of each block, by height from 1.
    pub producers: Vec<gridlet_ledger::MemberKey>,
    /// The slot of each block, by height from 1.
    pub slots: Vec<u64>,
    /// Certificates checked.
    pub certificates: u64,
    /// Trades retired from the state on the way (protocol.md §12.9), in retirement order.
    pub retired: Vec<(gridlet_ledger::Hash32, gridlet_ledger::market::book::Trade)>,
}

/// Re-verifies a stored chain from genesis without changing it.
pub(crate) fn load_verified(data: &Path) -> Result<Verified> {
    let genesis = load_genesis(&genesis_path(data))?;
    let store = RedbStore::open(data).context("cannot open the block store")?;
    if let Some(found) = store.chain_id()? {
        if found != genesis.hash() {
            bail!("store holds chain {found}, genesis says {}", genesis.hash());
        }
    }
    let mut chain = Chain::new(genesis)?;
    chain.set_verify_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let file = data.join("blocks.redb");
    let file = file.display();
    let tip = store.tip_height()?;
    let mut txs = 0u64;
    let mut producers = Vec::new();
    let mut slots = Vec::new();
    let mut retired = Vec::new();
    for height in 1..=tip {
        let bytes = store
            .get(height)?
            .with_context(|| format!("block {height} is missing from {file} (tip {tip})"))?;
        let block = Block::decode(&bytes)
            .with_context(|| format!("block {height} in {file} is corrupt"))?;
        if block.header.height != height {
            bail!(
                "record {height} in {file} holds block {}",
                block.header.height
            );
        }
        txs += block.transactions.len() as u64;
        producers.push(block.header.producer);
        slots.push(block.header.slot);
        let inserted = chain
            .insert(block, Checks::FULL)
            .with_context(|| format!("block {height} in {file} does not verify"))?;
        for e in inserted.events {
            if let gridlet_ledger::market::MarketEvent::Retired { trades, .. } = e {
                retired.extend(trades);
            }
        }
    }
    // Every stored certificate must prove its block, in checkpoint order, by the members of the
    // previous final block's state (protocol.md §9); each one finalizes the chain below it.
    let mut certificates = 0u64;
    let mut last: Option<gridlet_ledger::finality::Certificate> = None;
    for (height, bytes) in store.certificates(1, tip)? {
        let cert = gridlet_ledger::finality::Certificate::decode(&bytes)
            .with_context(|| format!("the certificate of block {height} is corrupt"))?;
        let voters = chain.finalized_state().members();
        let rules = chain.rules();
        cert.verify(&rules.chain_id, voters, &rules.finality)
            .with_context(|| format!("the certificate of block {height} does not verify"))?;
        if cert.block.height != height || chain.block(&cert.block.hash).is_none() {
            bail!("the certificate stored for block {height} names another block");
        }
        if last
            .as_ref()
            .is_some_and(|l| l.checkpoint >= cert.checkpoint)
        {
            bail!("certificate checkpoints do not increase at block {height}");
        }
        chain
            .finalize(&cert.block.hash)
            .with_context(|| format!("block {} cannot be finalized", cert.block.height))?;
        certificates += 1;
        last = Some(cert);
    }
    // What this node acknowledged as final must still be here: a store restored from an old
    // copy, damaged, or (before 0.2, sled) flushed without an fsync can hold less.
    let mark = data.join("final.mark");
    let marked = store.marked_final().with_context(|| {
        format!(
            "cannot tell which blocks were acknowledged as final ({})",
            mark.display()
        )
    })?;
    let final_height = chain.finalized().1;
    if let Some(m) = marked.filter(|m| *m > final_height) {
        bail!(
            "{file} lost final blocks: {} acknowledged blocks up to {m} as final, the store \
             proves only {final_height} (its tip is {tip}); blocks {}..={m} are gone (a power \
             cut before they were written, or damage). Start the gateway: peers give them back",
            mark.display(),
            final_height.saturating_add(1)
        );
    }
    Ok(Verified {
        chain,
        txs,
        producers,
        slots,
        certificates,
        retired,
    })
}

/// Re-verifies a stored chain from genesis without changing it.
pub fn verify(data: &Path) -> Result<serde_json::Value> {
    let Verified {
        chain,
        txs,
        certificates,
        ..
    } = load_verified(data)?;
    let state = chain.head_state();
    Ok(json!({
        "chain_id": chain.chain_id().to_hex(),
        "height": chain.head_height(),
        "tip_hash": chain.head_hash().to_hex(),
        "state_hash": state.hash().to_hex(),
        "finalized_height": chain.finalized().1,
        "certificates": certificates,
        "transactions": txs,
        "total_credits": state.total_credits().to_string(),
    }))
}

/// One block as a JSON line: header fields, its certificate (hex) if one finalized it, and
/// each transaction decoded and as hex.
pub fn block_json(block: &Block, certificate: Option<&[u8]>) -> serde_json::Value {
    let h = &block.header;
    let txs: Vec<serde_json::Value> = block
        .transactions
        .iter()
        .map(|t| {
            json!({
                "id": t.id().to_hex(),
                "hex": to_hex(t.bytes()),
                "tx": t.tx(),
                "signature": t.signature().to_hex(),
            })
        })
        .collect();
    json!({
        "height": h.height,
        "hash": block.hash().to_hex(),
        "slot": h.slot,
        "prev_hash": h.prev_hash.to_hex(),
        "tx_root": h.tx_root.to_hex(),
        "tx_count": h.tx_count,
        "state_hash": h.state_hash.to_hex(),
        "producer": h.producer.to_hex(),
        "signature": block.signature.to_hex(),
        "certificate": certificate.map(to_hex),
        "header_hex": to_hex(&h.encode()),
        "transactions": txs,
    })
}

/// Prints the stored chain as JSON lines.
pub fn export(data: &Path, out: &mut impl Write) -> Result<u64> {
    let store = RedbStore::open(data).context("cannot open the block store")?;
    let tip = store.tip_height()?;
    let certificates: std::collections::BTreeMap<u64, Vec<u8>> =
        store.certificates(1, tip)?.into_iter().collect();
    for height in 1..=tip {
        let bytes = store
            .get(height)?
            .with_context(|| format!("block {height} is missing"))?;
        let block = Block::decode(&bytes).with_context(|| format!("block {height} is corrupt"))?;
        let cert = certificates.get(&height).map(Vec::as_slice);
        writeln!(out, "{}", block_json(&block, cert))?;
    }
    Ok(tip)
}

/// Signs a prevote and a precommit in round 0 of `count` checkpoints through the vote guard
/// (from the guard's checkpoint on), each for a block drawn from `salt`; prints each signature
/// after the guard released it.
pub fn sign_votes(data: &Path, key_file: &Path, count: u64, salt: u64) -> Result<()> {
    use gridlet_ledger::finality::{BlockRef, Vote, VoteStep};
    let genesis = load_genesis(&genesis_path(data))?;
    let sk = keys::load_secret(key_file)?;
    let me = MemberKey::from_secret(&sk);
    let chain_id = genesis.hash();
    // Votes only, no chain here: a missing record is a fresh start (the crash tests' case).
    let mut guard = gridlet_ledger::store::VoteGuard::open(data, 0)?;
    let first = guard.checkpoint().max(1);
    let stdout = std::io::stdout();
    for checkpoint in first..first + count {
        for step in [VoteStep::Prevote, VoteStep::Precommit] {
            let value = BlockRef {
                height: checkpoint,
                hash: gridlet_ledger::Hash32::sha256(
                    &[
                        salt.to_be_bytes(),
                        checkpoint.to_be_bytes(),
                        [step.code(); 8],
                    ]
                    .concat(),
                ),
            };
            let vote = Vote {
                checkpoint,
                round: 0,
                step,
                value: Some(value),
                voter: me,
            };
            let signed = guard.sign_vote(&chain_id, vote, &sk)?;
            let mut out = stdout.lock();
            writeln!(
                out,
                "signed {checkpoint} 0 {} {}",
                step.code(),
                signed.signature.to_hex()
            )?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Produces `blocks` blocks as the key holder, in the next slots where it is ranked, each
/// with up to `txs_per_block` transfers from its own account; prints `committed HEIGHT HASH
/// SLOT` after each block is flushed (the acknowledgement crash tests record).
pub fn produce(data: &Path, key_file: &Path, blocks: u64, txs_per_block: u64) -> Result<()> {
    let genesis = load_genesis(&genesis_path(data))?;
    let sk = keys::load_secret(key_file)?;
    let me = MemberKey::from_secret(&sk);
    if !genesis.members.iter().any(|m| m.key == me) {
        bail!("{} is not a member of {}", me, genesis.chain_id);
    }
    let others: Vec<MemberKey> = genesis
        .members
        .iter()
        .map(|m| m.key)
        .filter(|k| *k != me)
        .collect();
    if others.is_empty() && txs_per_block > 0 {
        bail!("transfers need a second member in the genesis");
    }
    let (mut pc, report) = open_store(data, genesis.clone(), u64::MAX)?;
    let mut guard = SignerGuard::open(data, pc.chain().head_height())?;
    if let Some((from, count, reason)) = &report.dropped {
        tracing::warn!(from, count, %reason, "dropped stored blocks that did not verify");
    }
    let stdout = std::io::stdout();
    let mut produced = 0u64;
    let mut slot = pc.chain().head_state().slot;
    if let Some((last, _)) = guard.last_signed() {
        slot = slot.max(last);
    }
    let mut idle = 0u32;
    while produced < blocks {
        slot += 1;
        if pc.chain().rank_for(slot, &me).is_none() {
            idle += 1;
            if idle > 10_000 {
                bail!("{me} was not ranked in 10 000 consecutive slots");
            }
            continue;
        }
        idle = 0;
        let state = pc.chain().head_state();
        let nonce = state.account(&me).nonce;
        let txs: Vec<_> = (0..txs_per_block)
            .map(|i| {
                let to = others[(i as usize) % others.len()];
                Transaction {
                    chain_id: genesis.hash(),
                    sender: me,
                    nonce: nonce + i,
                    fee: genesis.tx_fee,
                    payload: TxPayload::Transfer {
                        to,
                        amount: MicroCredits::new(1),
                    },
                }
                .sign(&sk)
            })
            .collect();
        let out = pc.chain().produce(&sk, slot, &txs)?;
        // Persist the slot before the signed block goes anywhere.
        guard.authorize(slot, out.block.hash())?;
        let ins = pc.commit(out.block, Checks::FULL)?;
        let mut lock = stdout.lock();
        writeln!(lock, "committed {} {} {}", ins.height, ins.hash, slot)?;
        lock.flush()?;
        produced += 1;
    }
    Ok(())
}

/// The market's trades after the stored chain, with provenance: one JSON value per trade,
/// those retired from the state (`"retired": true`) first, gathered as the replay passed them.
pub fn trades(data: &Path) -> Result<Vec<serde_json::Value>> {
    let Verified { chain, retired, .. } = load_verified(data)?;
    let market = chain.head_state().market();
    let old = retired.iter().map(|(id, t)| (id, t, true));
    let live = market.trades.iter().map(|(id, t)| (id, t, false));
    Ok(old
        .chain(live)
        .map(|(id, t, retired)| {
            json!({
                "trade": id.to_hex(),
                "retired": retired,
                "source": t.source,
                "seller": t.seller.to_hex(),
                "energy_wh": t.energy_wh,
                "payment": t.payment,
                "payers": t.payers.iter().map(|(k, v)| json!({"member": k.to_hex(), "paid": v})).collect::<Vec<_>>(),
                "release_height": t.release_height,
                "deadline_height": t.deadline_height,
                "released": t.released,
                "delivered_wh": t.delivered_wh,
                "paid_out": t.paid_out,
                "settled": t.settled,
                "provenance": t.allocation.iter().map(|a| json!({"home": t.seller.to_hex(), "interval": a.interval, "wh": a.wh})).collect::<Vec<_>>(),
            })
        })
        .collect())
}
