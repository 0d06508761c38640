//! The transaction Merkle tree, as RFC 6962 §2.1 defines it.
//!
//! Leaves are `SHA-256(0x00 || txid)` and interior nodes `SHA-256(0x01 || left || right)`; a
//! tree of `n > 1` leaves splits at the largest power of two below `n`. Nothing is duplicated
//! to fill a level, so — unlike Bitcoin's tree (CVE-2012-2459) — a list with its last
//! transaction repeated has a different root from the original. The header also commits to the
//! transaction count, so an inclusion proof verifies against a header alone.

use serde::Serialize;

use crate::crypto::Hash32;

const LEAF: u8 = 0x00;
const NODE: u8 = 0x01;

/// The leaf hash of a transaction id.
pub fn leaf_hash(txid: &Hash32) -> Hash32 {
    Hash32::tagged(&[LEAF], &[&txid.0])
}

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    Hash32::tagged(&[NODE], &[&left.0, &right.0])
}

/// Largest power of two strictly below `n` (for `n >= 2`).
fn split_point(n: usize) -> usize {
    let mut k = 1usize;
    while k.checked_mul(2).is_some_and(|d| d < n) {
        k = k.saturating_mul(2);
    }
    k
}

fn root_of_leaves(leaves: &[Hash32]) -> Hash32 {
    match leaves {
        [] => Hash32::sha256(&[]),
        [one] => *one,
        _ => {
            let (left, right) = leaves.split_at(split_point(leaves.len()));
            node_hash(&root_of_leaves(left), &root_of_leaves(right))
        }
    }
}

/// The Merkle root of a list of transaction ids (SHA-256 of nothing for an empty list).
pub fn root(txids: &[Hash32]) -> Hash32 {
    let leaves: Vec<Hash32> = txids.iter().map(leaf_hash).collect();
    root_of_leaves(&leaves)
}

/// An inclusion proof: the RFC 6962 audit path of one leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proof {
    /// Position of the leaf.
    pub index: u64,
    /// Number of leaves in the tree.
    pub tree_size: u64,
    /// Sibling hashes from the leaf up.
    pub path: Vec<Hash32>,
}

fn path_of(index: usize, leaves: &[Hash32], out: &mut Vec<Hash32>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    let (left, right) = leaves.split_at(k);
    if index < k {
        path_of(index, left, out);
        out.push(root_of_leaves(right));
    } else {
        path_of(index.saturating_sub(k), right, out);
        out.push(root_of_leaves(left));
    }
}

/// The proof for the leaf at `index`, or `None` if there is no such leaf.
pub fn prove(txids: &[Hash32], index: usize) -> Option<Proof> {
    if index >= txids.len() {
        return None;
    }
    let leaves: Vec<Hash32> = txids.iter().map(leaf_hash).collect();
    let mut path = Vec::new();
    path_of(index, &leaves, &mut path);
    Some(Proof {
        index: index as u64,
        tree_size: txids.len() as u64,
        path,
    })
}

/// Whether `proof` shows `txid` in the tree with root `root` (RFC 9162 §2.1.3.2).
pub fn verify(root: &Hash32, txid: &Hash32, proof: &Proof) -> bool {
    if proof.index >= proof.tree_size {
        return false;
    }
    let mut fnode = proof.index;
    let mut snode = proof.tree_size.saturating_sub(1);
    let mut r = leaf_hash(txid);
    for p in &proof.path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Hash32> {
        (0..n as u64)
            .map(|i| Hash32::sha256(&i.to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_leaf_proves_and_no_other_does() {
        for n in 1..=33 {
            let txids = ids(n);
            let r = root(&txids);
            for i in 0..n {
                let proof = prove(&txids, i).unwrap();
                assert!(verify(&r, &txids[i], &proof), "n={n} i={i}");
                for (j, other) in txids.iter().enumerate() {
                    if j != i {
                        assert!(!verify(&r, other, &proof), "n={n} i={i} j={j}");
                    }
                }
                let mut out_of_range = proof.clone();
                out_of_range.index = n as u64;
                assert!(!verify(&r, &txids[i], &out_of_range));
            }
            assert!(prove(&txids, n).is_none());
        }
    }

    #[test]
    fn duplicated_last_leaf_changes_the_root() {
        for n in 1..=20 {
            let txids = ids(n);
            let mut dup = txids.clone();
            dup.push(*txids.last().unwrap());
            assert_ne!(root(&txids), root(&dup), "n={n}");
        }
    }

    #[test]
    fn matches_rfc6962_shape_for_three_leaves() {
        let t = ids(3);
        let l: Vec<Hash32> = t.iter().map(leaf_hash).collect();
        let expected = node_hash(&node_hash(&l[0], &l[1]), &l[2]);
        assert_eq!(root(&t), expected);
        assert_eq!(root(&[]), Hash32::sha256(&[]));
    }
}
