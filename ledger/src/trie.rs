//! The state's incremental commitment (protocol.md §7.2): a binary Merkle trie over the hashed
//! keys of a map, so that a block's state hash costs what the block changed, not the size of the
//! state. Persistent (shared `Arc` nodes): cloning the state for the next block is O(1), and an
//! insert or removal rehashes only its path.
//!
//! The root is defined by the set alone, whatever order it was built in:
//! `node(S, d)` is `ZERO` for an empty `S`, the leaf hash for one entry, else
//! `H("gridlet/trie/node" || node(S₀, d+1) || node(S₁, d+1))`, where `S₀`/`S₁` are the entries
//! whose path has bit `d` (most significant first) clear/set.

use std::sync::Arc;

use crate::crypto::Hash32;

const PATH_TAG: &[u8] = b"gridlet/trie/path";
const LEAF_TAG: &[u8] = b"gridlet/trie/leaf";
const NODE_TAG: &[u8] = b"gridlet/trie/node";

/// Where an entry sits in the trie: the hash of its key bytes.
pub fn path_of(key: &[u8]) -> Hash32 {
    Hash32::tagged(PATH_TAG, &[key])
}

/// What an entry contributes: the hash of its key and value bytes.
pub fn leaf_of(key: &[u8], value: &[u8]) -> Hash32 {
    Hash32::tagged(LEAF_TAG, &[key, value])
}

fn node_of(zero: &Hash32, one: &Hash32) -> Hash32 {
    Hash32::tagged(NODE_TAG, &[&zero.0, &one.0])
}

/// Bit `depth` of `path`, most significant bit of byte 0 first; paths have 256 bits.
fn bit(path: &Hash32, depth: usize) -> bool {
    path.0
        .get(depth / 8)
        .is_some_and(|b| b & (0x80 >> (depth % 8)) != 0)
}

#[derive(Debug)]
enum Node {
    Leaf {
        path: Hash32,
        hash: Hash32,
    },
    /// At least two leaves below.
    Branch {
        hash: Hash32,
        zero: Option<Arc<Node>>,
        one: Option<Arc<Node>>,
    },
}

impl Node {
    fn hash(&self) -> Hash32 {
        match self {
            Node::Leaf { hash, .. } | Node::Branch { hash, .. } => *hash,
        }
    }
}

fn hash_of(n: &Option<Arc<Node>>) -> Hash32 {
    n.as_ref().map_or(Hash32::ZERO, |n| n.hash())
}

fn branch(zero: Option<Arc<Node>>, one: Option<Arc<Node>>) -> Arc<Node> {
    Arc::new(Node::Branch {
        hash: node_of(&hash_of(&zero), &hash_of(&one)),
        zero,
        one,
    })
}

/// Two distinct leaves below `depth`: branches down to the first bit where their paths differ.
fn split(a: Arc<Node>, a_path: &Hash32, b: Arc<Node>, b_path: &Hash32, depth: usize) -> Arc<Node> {
    if depth >= 256 {
        // Equal paths (a SHA-256 collision): unreachable in practice; keep the newer leaf.
        return b;
    }
    match (bit(a_path, depth), bit(b_path, depth)) {
        (false, true) => branch(Some(a), Some(b)),
        (true, false) => branch(Some(b), Some(a)),
        (false, false) => branch(
            Some(split(a, a_path, b, b_path, depth.saturating_add(1))),
            None,
        ),
        (true, true) => branch(
            None,
            Some(split(a, a_path, b, b_path, depth.saturating_add(1))),
        ),
    }
}

fn insert(node: Option<&Arc<Node>>, path: &Hash32, hash: Hash32, depth: usize) -> Arc<Node> {
    let leaf = || Arc::new(Node::Leaf { path: *path, hash });
    match node.map(|n| (n, n.as_ref())) {
        None => leaf(),
        Some((_, Node::Leaf { path: p, .. })) if p == path => leaf(),
        Some((n, Node::Leaf { path: p, .. })) => split(n.clone(), p, leaf(), path, depth),
        Some((_, Node::Branch { zero, one, .. })) => {
            let below = depth.saturating_add(1);
            if bit(path, depth) {
                branch(zero.clone(), Some(insert(one.as_ref(), path, hash, below)))
            } else {
                branch(Some(insert(zero.as_ref(), path, hash, below)), one.clone())
            }
        }
    }
}

fn remove(node: &Arc<Node>, path: &Hash32, depth: usize) -> Option<Arc<Node>> {
    match node.as_ref() {
        Node::Leaf { path: p, .. } => (p != path).then(|| node.clone()),
        Node::Branch { zero, one, .. } => {
            let below = depth.saturating_add(1);
            let (zero, one) = if bit(path, depth) {
                (
                    zero.clone(),
                    one.as_ref().and_then(|n| remove(n, path, below)),
                )
            } else {
                (
                    zero.as_ref().and_then(|n| remove(n, path, below)),
                    one.clone(),
                )
            };
            // A branch holds at least two leaves: one leaf left alone moves up in its place.
            match (zero, one) {
                (None, None) => None,
                (Some(n), None) | (None, Some(n)) if matches!(n.as_ref(), Node::Leaf { .. }) => {
                    Some(n)
                }
                (zero, one) => Some(branch(zero, one)),
            }
        }
    }
}

/// A persistent Merkle trie of (path, leaf hash) entries.
#[derive(Debug, Clone, Default)]
pub struct Trie {
    root: Option<Arc<Node>>,
}

impl Trie {
    /// Sets the leaf at `path` (inserting or replacing it).
    pub fn insert(&mut self, path: &Hash32, leaf: Hash32) {
        self.root = Some(insert(self.root.as_ref(), path, leaf, 0));
    }

    /// Removes the leaf at `path`, if any.
    pub fn remove(&mut self, path: &Hash32) {
        self.root = self.root.as_ref().and_then(|n| remove(n, path, 0));
    }

    /// The root: `Hash32::ZERO` when empty.
    pub fn root(&self) -> Hash32 {
        hash_of(&self.root)
    }
}

/// The root of `entries` (path, leaf) computed from scratch, by the definition: the reference the
/// incremental trie is tested against (what `gateway/tests/py/verify_export.py` implements).
#[cfg(test)]
pub(crate) fn root_of(entries: &[(Hash32, Hash32)]) -> Hash32 {
    let mut sorted = entries.to_vec();
    sorted.sort();
    sorted.dedup_by(|a, b| a.0 == b.0);
    root_at(&sorted, 0)
}

#[cfg(test)]
fn root_at(entries: &[(Hash32, Hash32)], depth: usize) -> Hash32 {
    match entries {
        [] => Hash32::ZERO,
        [(_, leaf)] => *leaf,
        _ => {
            let ones = entries.partition_point(|(p, _)| !bit(p, depth));
            let (zero, one) = entries.split_at(ones);
            let below = depth.saturating_add(1);
            node_of(&root_at(zero, below), &root_at(one, below))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(k: u64, v: u64) -> (Hash32, Hash32) {
        (
            path_of(&k.to_be_bytes()),
            leaf_of(&k.to_be_bytes(), &v.to_be_bytes()),
        )
    }

    #[test]
    fn empty_and_single() {
        let mut t = Trie::default();
        assert_eq!(t.root(), Hash32::ZERO);
        let (p, l) = entry(1, 2);
        t.insert(&p, l);
        assert_eq!(t.root(), l);
        t.remove(&p);
        assert_eq!(t.root(), Hash32::ZERO);
    }

    proptest! {
        // Any sequence of inserts, replacements and removals gives the root of the final set.
        #[test]
        fn incremental_root_is_the_root_of_the_set(ops in prop::collection::vec((0u64..40, 0u64..3, any::<bool>()), 0..200)) {
            let mut t = Trie::default();
            let mut set = std::collections::BTreeMap::new();
            for (k, v, delete) in ops {
                let (p, l) = entry(k, v);
                if delete {
                    t.remove(&p);
                    set.remove(&k);
                } else {
                    t.insert(&p, l);
                    set.insert(k, v);
                }
                let reference: Vec<_> = set.iter().map(|(k, v)| entry(*k, *v)).collect();
                prop_assert_eq!(t.root(), root_of(&reference));
            }
        }
    }

    #[test]
    fn a_clone_is_unaffected_by_later_changes() {
        let mut t = Trie::default();
        for k in 0..100 {
            let (p, l) = entry(k, 0);
            t.insert(&p, l);
        }
        let before = t.clone();
        let root = before.root();
        let (p, l) = entry(5, 1);
        t.insert(&p, l);
        t.remove(&entry(6, 0).0);
        assert_ne!(t.root(), root);
        assert_eq!(before.root(), root);
    }
}
