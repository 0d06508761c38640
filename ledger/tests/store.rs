//! Storage: reopening, corruption recovery, reorgs on disk and the chain-id guard.

mod common;

use common::Community;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::{
    open_sled, open_store, BlockStore, MemStore, PersistentChain, RedbStore,
};
use gridlet_ledger::{Genesis, StoreError};

fn fill<S: BlockStore>(c: &Community, pc: &mut PersistentChain<S>, blocks: u64) {
    for nonce in 0..blocks {
        let slot = pc.chain().head_state().slot + 1;
        let tx = c.transfer(0, 1, 10, nonce);
        let b = c.produce(pc.chain(), slot, &[tx]);
        pc.commit(b, Checks::FULL).unwrap();
    }
}

#[test]
fn a_reopened_store_has_the_same_head_and_state() {
    let c = Community::new(3, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    let (head, state) = {
        let (mut pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
        assert_eq!(report.loaded, 0);
        fill(&c, &mut pc, 12);
        (pc.chain().head_hash(), pc.chain().head_state().hash())
    };
    let (pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(report.loaded, 12);
    assert_eq!(report.dropped, None);
    assert_eq!(pc.chain().head_hash(), head);
    assert_eq!(pc.chain().head_state().hash(), state);
}

#[test]
fn a_corrupt_block_truncates_the_chain_and_names_the_height() {
    let c = Community::new(3, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut pc, _) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
        fill(&c, &mut pc, 10);
    }
    {
        let mut store = RedbStore::open(dir.path()).unwrap();
        let mut bytes = store.get(7).unwrap().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        store.put(7, &bytes).unwrap();
        store.flush().unwrap();
    }
    let (pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    let (from, count, _reason) = report.dropped.expect("corruption reported");
    assert_eq!((from, count), (7, 4));
    assert_eq!(report.loaded, 6);
    assert_eq!(pc.chain().head_height(), 6);
    assert_eq!(pc.store().tip_height().unwrap(), 6);
}

#[test]
fn a_reorg_rewrites_the_non_final_blocks_on_disk() {
    let c = Community::new(4, SelectionRule::Paper);
    let (mut pc, _) =
        PersistentChain::open(MemStore::default(), c.genesis.clone(), u64::MAX).unwrap();
    let fallback = c.produce_ranked(pc.chain(), 1, 2, &[]);
    let elected = c.produce_ranked(pc.chain(), 1, 1, &[]);
    pc.commit(fallback.clone(), Checks::FULL).unwrap();
    assert_eq!(pc.block_at(1).unwrap().unwrap(), fallback);
    let ins = pc.commit(elected.clone(), Checks::FULL).unwrap();
    assert!(ins.head_changed);
    assert_eq!(pc.block_at(1).unwrap().unwrap(), elected);
    assert_eq!(pc.hash_at(1), Some(elected.hash()));
}

#[test]
fn a_store_of_another_chain_is_refused() {
    let c = Community::new(3, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    drop(open_store(dir.path(), c.genesis.clone(), 0).unwrap());
    let mut other: Genesis = c.genesis.clone();
    other.chain_id = "another".into();
    let reopened = open_store(dir.path(), other, 0);
    assert!(
        matches!(reopened, Err(StoreError::WrongChain { .. })),
        "{:?}",
        reopened.map(|_| ())
    );
}

#[test]
fn a_certificate_for_another_branch_rewrites_every_block_from_the_fork() {
    // The stored branch a: elected blocks at heights 1..=3. Branch b, built elsewhere: fallback
    // blocks (a lower score, so the head stays on a) — until a quorum certifies b's block 2.
    // Every b block must then replace what is on disk, and survive a reopen.
    let c = Community::new(4, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    let (mut pc, _) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    for slot in 1..=3 {
        let b = c.produce_ranked(pc.chain(), slot, 1, &[]);
        pc.commit(b, Checks::FULL).unwrap();
    }
    let a_head = pc.chain().head_hash();
    let mut other = gridlet_ledger::chain::Chain::new(c.genesis.clone()).unwrap();
    let mut branch = Vec::new();
    for (slot, rank) in [(1, 3), (2, 3)] {
        let b = c.produce_ranked(&other, slot, rank, &[]);
        other.insert(b.clone(), Checks::FULL).unwrap();
        branch.push(b);
    }
    for b in &branch {
        let ins = pc.commit(b.clone(), Checks::FULL).unwrap();
        assert!(!ins.head_changed);
    }
    assert_eq!(pc.chain().head_hash(), a_head);
    // Three of four signatures are a quorum (⌊8/3⌋ + 1 = 3); two are not.
    assert!(pc.finalize(c.certify(1, &branch[1], 2)).is_err());
    let done = pc.finalize(c.certify(1, &branch[1], 3)).unwrap();
    assert_eq!(done.blocks.len(), 2);
    assert_eq!(pc.chain().finalized().1, 2);
    assert_eq!(pc.chain().head_hash(), branch[1].hash());
    for (i, b) in branch.iter().enumerate() {
        let h = i as u64 + 1;
        assert_eq!(pc.block_at(h).unwrap().as_ref(), Some(b), "height {h}");
        assert_eq!(pc.hash_at(h), Some(b.hash()));
    }
    assert_eq!(pc.block_at(3).unwrap(), None, "a's block 3 is gone");
    // Reopened, the store verifies from genesis and the certificate finalizes again.
    drop(pc);
    let (pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(report.dropped, None);
    assert_eq!(pc.chain().head_hash(), branch[1].hash());
    assert_eq!(pc.chain().finalized().1, 2);
    assert_eq!(pc.last_certificate().map(|c| c.checkpoint), Some(1));
}

#[test]
fn reopening_refinalizes_as_it_replays_and_counts_a_bad_certificate() {
    let c = Community::new(4, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut pc, _) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
        for slot in 1..=5 {
            let b = c.produce_ranked(pc.chain(), slot, 1, &[]);
            pc.commit(b.clone(), Checks::FULL).unwrap();
            pc.finalize(c.certify(slot, &b, 3)).unwrap();
        }
        assert_eq!(pc.chain().finalized().1, 5);
    }
    let (pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(report.bad_certificates, 0);
    assert_eq!(pc.chain().finalized().1, 5);
    assert_eq!(pc.last_certificate().map(|c| c.checkpoint), Some(5));
    drop(pc);
    // The newest certificate damaged on disk: block 5 stays non-final, and it is reported.
    {
        use gridlet_ledger::store::{BlockStore, RedbStore};
        let mut store = RedbStore::open(dir.path()).unwrap();
        store.put_certificate(5, b"\x01garbage").unwrap();
        store.flush().unwrap();
    }
    let (pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(report.bad_certificates, 1);
    assert_eq!(report.dropped, None);
    assert_eq!(pc.chain().finalized().1, 4);
    assert_eq!(pc.chain().head_height(), 5);
}

#[test]
fn a_store_held_open_is_refused_as_in_use_and_free_once_closed() {
    let dir = tempfile::tempdir().unwrap();
    let held = RedbStore::open(dir.path()).unwrap();
    match RedbStore::open(dir.path()) {
        Err(StoreError::InUse { path }) => assert!(path.ends_with("blocks.redb"), "{path}"),
        other => panic!("a store held open must be refused as in use, got {other:?}"),
    }
    drop(held);
    RedbStore::open(dir.path()).unwrap();
}

#[test]
fn a_sled_store_is_migrated_once_with_its_certificates_and_kept_aside() {
    let c = Community::new(4, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    let (head, state) = {
        let (mut pc, _) = open_sled(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
        for slot in 1..=6 {
            let b = c.produce_ranked(pc.chain(), slot, 1, &[]);
            pc.commit(b.clone(), Checks::FULL).unwrap();
            if slot % 3 == 0 {
                pc.finalize(c.certify(slot, &b, 3)).unwrap();
            }
        }
        (pc.chain().head_hash(), pc.chain().head_state().hash())
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // An interrupted earlier attempt left a partial file: it is discarded.
    std::fs::write(dir.path().join("blocks.redb.partial"), b"half a store").unwrap();
    let (pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(pc.store().migrated(), Some(6));
    assert_eq!((report.loaded, report.dropped.clone()), (6, None));
    assert_eq!(report.lost_final, None);
    assert_eq!(pc.chain().head_hash(), head);
    assert_eq!(pc.chain().head_state().hash(), state);
    assert_eq!(pc.chain().finalized().1, 6);
    assert!(dir.path().join("blocks.sled.migrated").exists());
    assert!(!dir.path().join("blocks.sled").exists());
    assert!(!dir.path().join("blocks.redb.partial").exists());
    drop(pc);
    let (pc, _) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(
        pc.store().migrated(),
        None,
        "a second open migrates nothing"
    );
    assert_eq!(pc.chain().head_hash(), head);
}

#[test]
fn a_store_that_lost_acknowledged_final_blocks_says_so_on_open() {
    let c = Community::new(4, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut pc, _) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
        for slot in 1..=6 {
            let b = c.produce_ranked(pc.chain(), slot, 1, &[]);
            pc.commit(b.clone(), Checks::FULL).unwrap();
            pc.finalize(c.certify(slot, &b, 3)).unwrap();
        }
        assert_eq!(pc.store().marked_final().unwrap(), Some(6));
    }
    let (_, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(report.lost_final, None);
    // A store that came back shorter (restored from an old copy, or damaged).
    {
        let mut store = RedbStore::open(dir.path()).unwrap();
        store.truncate_above(3).unwrap();
        store.flush().unwrap();
    }
    let (pc, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert_eq!(report.lost_final, Some((6, 3)));
    assert_eq!(pc.chain().finalized().1, 3);
    drop(pc);
    // A damaged mark is reported, not fatal.
    std::fs::write(dir.path().join("final.mark"), b"garbage").unwrap();
    let (_, report) = open_store(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
    assert!(
        report
            .mark_unreadable
            .as_deref()
            .is_some_and(|r| r.contains("final.mark")),
        "{report:?}"
    );
}

#[test]
fn a_damaged_sled_conf_names_the_store_and_what_to_do() {
    let c = Community::new(3, SelectionRule::Paper);
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut pc, _) = open_sled(dir.path(), c.genesis.clone(), u64::MAX).unwrap();
        fill(&c, &mut pc, 3);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let conf = dir.path().join("blocks.sled").join("conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    for b in bytes.iter_mut().take(8) {
        *b ^= 0x5a;
    }
    std::fs::write(&conf, bytes).unwrap();
    let err = open_sled(dir.path(), c.genesis.clone(), u64::MAX).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err:?}");
    assert!(
        text.contains("blocks.sled") && text.contains("resyncs the chain from peers"),
        "{text}"
    );
}
