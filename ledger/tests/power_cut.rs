//! The storage fault suite on a simulated disk (`../shared/notes/reliability.md` rows S3, S5,
//! S6), against the block store gateways run ([`RedbStore`]):
//! - S3: power cuts at random sync points, dropping every write not yet synced or keeping a
//!   random part of them: the store opens, every acknowledged block and final height is there,
//!   no partial block is visible.
//! - S5: random damage to a stopped store's file: no panic, no damaged block served.
//! - S6: the disk fills up: nothing is acknowledged after the failed write; once space is free
//!   the store opens with everything acknowledged and goes on.
//!
//! `GRIDLET_POWER_CUTS`, `GRIDLET_CORRUPTIONS` and `GRIDLET_DISK_FULLS` set the counts
//! (defaults 200, 1 000 and 50); every run prints its figures.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use common::Community;
use gridlet_ledger::chain::Checks;
use gridlet_ledger::crypto::Hash32;
use gridlet_ledger::finality::Certificate;
use gridlet_ledger::selection::SelectionRule;
use gridlet_ledger::store::power_cut::PowerCutDisk;
use gridlet_ledger::store::{MemStore, OpenReport, PersistentChain, RedbStore};
use gridlet_ledger::{Block, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The suite's randomness, seeded, so every run cuts at the same places.
fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

enum Step {
    Commit(Block),
    Finalize(Certificate),
}

/// The canonical chain and final height a correct store holds after a step.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    canonical: Vec<Hash32>,
    final_height: u64,
}

struct Workload {
    community: Community,
    steps: Vec<Step>,
    /// `after[0]`: the empty chain; `after[i + 1]`: after `steps[i]`.
    after: Vec<Expected>,
}

fn expected_of<S: gridlet_ledger::store::BlockStore>(pc: &PersistentChain<S>) -> Expected {
    let head = pc.chain().head_height();
    Expected {
        canonical: (1..=head).map(|h| pc.hash_at(h).unwrap()).collect(),
        final_height: pc.chain().finalized().1,
    }
}

/// 30 slots of 4 homes: transfers in every block, a fallback block replaced by the elected
/// one every 6th slot (a reorg rewrites the stored tip), a certificate every 5th height.
fn workload() -> Workload {
    let c = Community::new(4, SelectionRule::Paper);
    let (mut pc, _) =
        PersistentChain::open(MemStore::default(), c.genesis.clone(), u64::MAX).unwrap();
    let mut steps = Vec::new();
    let mut after = vec![expected_of(&pc)];
    for slot in 1..=30u64 {
        let tx = c.transfer(0, 1, 10, slot - 1);
        let mut blocks = Vec::new();
        if slot % 6 == 0 {
            blocks.push(c.produce_ranked(pc.chain(), slot, 2, std::slice::from_ref(&tx)));
        }
        blocks.push(c.produce_ranked(pc.chain(), slot, 1, std::slice::from_ref(&tx)));
        for b in blocks {
            pc.commit(b.clone(), Checks::FULL).unwrap();
            steps.push(Step::Commit(b));
            after.push(expected_of(&pc));
        }
        let height = pc.chain().head_height();
        if height % 5 == 0 {
            let head = pc.block_at(height).unwrap().unwrap();
            let cert = c.certify(height, &head, 3);
            pc.finalize(cert.clone()).unwrap();
            steps.push(Step::Finalize(cert));
            after.push(expected_of(&pc));
        }
    }
    Workload {
        community: c,
        steps,
        after,
    }
}

/// What running the steps on a store did.
struct Ran {
    /// Steps acknowledged before the first error (opening counts as none).
    acked: usize,
    /// The first error.
    error: Option<StoreError>,
    /// Steps the same store acknowledged after that error (a fail-stop store: none).
    acked_after_error: usize,
}

/// Opens the store on `disk` and runs the steps from `from`, going on after an error to count
/// whether the store still acknowledges anything.
fn run(w: &Workload, disk: &PowerCutDisk, mark_dir: &std::path::Path, from: usize) -> Ran {
    let opened = RedbStore::with_backend(disk.clone(), mark_dir)
        .and_then(|s| PersistentChain::open(s, w.community.genesis.clone(), u64::MAX));
    let mut pc = match opened {
        Ok((pc, _)) => pc,
        Err(e) => {
            return Ran {
                acked: from,
                error: Some(e),
                acked_after_error: 0,
            }
        }
    };
    let mut ran = Ran {
        acked: from,
        error: None,
        acked_after_error: 0,
    };
    for step in w.steps.iter().skip(from) {
        let done = match step {
            Step::Commit(b) => pc.commit(b.clone(), Checks::FULL).map(|_| ()),
            Step::Finalize(cert) => pc.finalize(cert.clone()).map(|_| ()),
        };
        match (done, ran.error.is_some()) {
            (Ok(()), false) => ran.acked += 1,
            (Ok(()), true) => ran.acked_after_error += 1,
            (Err(e), false) => ran.error = Some(e),
            (Err(_), true) => {}
        }
    }
    ran
}

/// Reopens `image` and reads it back: what it holds, or why it could not be opened.
fn reopen(
    w: &Workload,
    image: Vec<u8>,
    mark_dir: &std::path::Path,
) -> Result<(Expected, OpenReport), StoreError> {
    let store = RedbStore::with_backend(PowerCutDisk::new(image), mark_dir)?;
    let (pc, report) = PersistentChain::open(store, w.community.genesis.clone(), u64::MAX)?;
    // Read every block back from the store, as the API and sync answers do.
    for h in 1..=pc.chain().head_height() {
        let stored = pc.block_at(h)?.map(|b| b.hash());
        if stored != pc.hash_at(h) {
            return Err(StoreError::Corrupt {
                height: h,
                reason: "the stored block is not the one loaded".into(),
            });
        }
    }
    Ok((expected_of(&pc), report))
}

/// A disk holding a newly created, empty store. Creation itself is not cut: `RedbStore::open`
/// creates a store under a temporary name and renames it once durable.
fn fresh_disk() -> PowerCutDisk {
    let dir = tempfile::tempdir().unwrap();
    let disk = PowerCutDisk::default();
    drop(RedbStore::with_backend(disk.clone(), dir.path()).unwrap());
    PowerCutDisk::new(disk.visible_image())
}

/// The disk after the whole workload ran on it without a fault.
fn clean_run(w: &Workload) -> PowerCutDisk {
    let dir = tempfile::tempdir().unwrap();
    let disk = fresh_disk();
    let ran = run(w, &disk, dir.path(), 0);
    assert!(ran.error.is_none(), "{:?}", ran.error);
    assert_eq!(ran.acked, w.steps.len());
    disk
}

#[test]
fn s3_power_cuts_lose_nothing_acknowledged_and_show_no_partial_block() {
    let w = workload();
    let syncs = clean_run(&w).syncs();
    let cuts = count("GRIDLET_POWER_CUTS", 200);
    let mut rng = seeded(3);
    let (mut unrecoverable, mut lost, mut partial, mut in_flight_kept) = (0, 0, 0, 0);
    for cut in 0..cuts {
        let dir = tempfile::tempdir().unwrap();
        let disk = fresh_disk();
        disk.cut_at_sync(1 + rng.random_range(0..syncs));
        let Ran { acked, error, .. } = run(&w, &disk, dir.path(), 0);
        assert!(disk.is_off(), "cut {cut}: the power never went ({error:?})");
        // Even cuts drop every unsynced write; odd ones keep a random half of them.
        let torn = cut % 2 == 1;
        let mut keep = seeded(rng.random());
        let image = disk.image_after_cut(|_| torn && keep.random_bool(0.5));
        match reopen(&w, image, dir.path()) {
            Err(e) => {
                eprintln!("cut {cut} (after {acked} steps): does not open: {e}");
                unrecoverable += 1;
            }
            Ok((found, report)) => {
                let want = &w.after[acked];
                let next = w.after.get(acked + 1);
                if report.dropped.is_some() || report.bad_certificates > 0 {
                    eprintln!("cut {cut}: a partial record is visible: {report:?}");
                    partial += 1;
                }
                if found == *want {
                } else if Some(&found) == next {
                    // The step in flight reached the disk before the power went, unacknowledged.
                    in_flight_kept += 1;
                } else {
                    eprintln!(
                        "cut {cut} (after {acked} steps): holds {} blocks, final {}; \
                         acknowledged {} blocks, final {} ({report:?})",
                        found.canonical.len(),
                        found.final_height,
                        want.canonical.len(),
                        want.final_height
                    );
                    lost += 1;
                }
                if report.lost_final.is_some() {
                    eprintln!("cut {cut}: the final mark is above the store: {report:?}");
                    lost += 1;
                }
            }
        }
    }
    println!(
        "S3 redb: {cuts} power cuts at random syncs (of {syncs} in a clean run; half dropping \
         every unsynced write, half keeping a random part): {unrecoverable} unrecoverable, {lost} \
         with acknowledged blocks lost, {partial} with a partial record visible; {in_flight_kept} \
         kept the unacknowledged step in flight"
    );
    assert_eq!((unrecoverable, lost, partial), (0, 0, 0));
}

#[test]
fn s5_random_damage_is_never_served_and_never_panics() {
    let w = workload();
    let clean = clean_run(&w).visible_image();
    let full = w.after.last().unwrap();
    let trials = count("GRIDLET_CORRUPTIONS", 1_000);
    let mut rng = seeded(5);
    let (mut panics, mut served_damaged, mut refused, mut truncated, mut intact) = (0, 0, 0, 0, 0);
    let mut contained_panics = 0;
    for trial in 0..trials {
        let mut image = clean.clone();
        let len = image.len() as u64;
        match trial % 4 {
            // A few flipped bits.
            0 => {
                for _ in 0..=rng.random_range(0..4) {
                    let at = rng.random_range(0..len) as usize;
                    image[at] ^= 1 << rng.random_range(0..8);
                }
            }
            // A zeroed 4 KiB page.
            1 => {
                let page = rng.random_range(0..len / 4096) as usize * 4096;
                let end = (page + 4096).min(image.len());
                image[page..end].fill(0);
            }
            // A torn tail.
            2 => image.truncate(rng.random_range(0..len) as usize),
            // A sector of garbage.
            _ => {
                let sector = rng.random_range(0..len / 512) as usize * 512;
                let end = (sector + 512).min(image.len());
                for b in image[sector..end].iter_mut() {
                    *b = rng.random();
                }
            }
        }
        let mark_dir = tempfile::tempdir().unwrap();
        match catch_unwind(AssertUnwindSafe(|| reopen(&w, image, mark_dir.path()))) {
            Err(_) => {
                eprintln!("trial {trial}: panicked");
                panics += 1;
            }
            Ok(Err(e)) => {
                refused += 1;
                if e.to_string().contains("failed on damaged data") {
                    contained_panics += 1;
                }
            }
            Ok(Ok((found, _))) => {
                // What is served must be a prefix of what was written, block for block.
                let n = found.canonical.len();
                if full.canonical.get(..n) != Some(&found.canonical[..]) {
                    eprintln!("trial {trial}: served blocks that were never written");
                    served_damaged += 1;
                } else if n < full.canonical.len() {
                    truncated += 1;
                } else {
                    intact += 1;
                }
            }
        }
    }
    println!(
        "S5 redb: {trials} random corruptions (bit flips, zeroed pages, torn tails, garbage \
         sectors): {panics} panics, {served_damaged} with a damaged block served; {refused} \
         refused with an error ({contained_panics} of them redb panics turned into errors), {truncated} opened shorter (resync from peers), {intact} \
         unaffected"
    );
    assert_eq!((panics, served_damaged), (0, 0));
}

#[test]
fn s6_a_full_disk_stops_acknowledging_and_recovers_once_space_is_free() {
    let w = workload();
    let full_len = clean_run(&w).visible_image().len() as u64;
    let trials = count("GRIDLET_DISK_FULLS", 50);
    let mut rng = seeded(7);
    let (mut acked_after_failure, mut not_recovered) = (0, 0);
    let mut recovery_us = Vec::new();
    for trial in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        let disk = fresh_disk();
        disk.set_capacity(Some(rng.random_range(0..full_len)));
        let ran = run(&w, &disk, dir.path(), 0);
        // Smaller than what the workload needs, so some write must fail.
        let (acked, Some(err)) = (ran.acked, ran.error) else {
            panic!("trial {trial}: a disk smaller than the workload needs never filled");
        };
        acked_after_failure += ran.acked_after_error;
        // Space is freed; the gateway restarts on the same disk (no power cut).
        let started = std::time::Instant::now();
        let restarted = PowerCutDisk::new(disk.visible_image());
        let resumed = reopen(&w, disk.visible_image(), dir.path())
            .ok()
            .filter(|(found, _)| *found == w.after[acked] || w.after.get(acked + 1) == Some(found))
            .map(|(found, _)| {
                let step = w.after.iter().position(|e| *e == found).unwrap();
                let ran = run(&w, &restarted, dir.path(), step);
                (ran.acked, ran.error)
            });
        match resumed {
            Some((done, None)) if done == w.steps.len() => {
                recovery_us.push(started.elapsed().as_micros())
            }
            other => {
                eprintln!("trial {trial}: after {err} no recovery: {other:?}");
                not_recovered += 1;
            }
        }
    }
    recovery_us.sort_unstable();
    let median = recovery_us.get(recovery_us.len() / 2).copied().unwrap_or(0);
    println!(
        "S6 redb: {trials} full disks, each smaller than the workload needs: \
         {acked_after_failure} steps acknowledged after a failed write, {not_recovered} not \
         recovered once space was free; reopen and finish, median {median} µs"
    );
    assert_eq!((acked_after_failure, not_recovered), (0, 0));
}
