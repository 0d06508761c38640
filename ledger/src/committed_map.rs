//! A map of the consensus state that keeps its own commitment: the values in a persistent map
//! (cloned in O(1) for the next block's state) beside the [`Trie`] of their encodings, updated
//! on every change. Reads go through `Deref` to the map; changes only through the methods here,
//! so the trie cannot fall behind.

use std::ops::Deref;

use imbl::OrdMap;
use serde::{Serialize, Serializer};

use crate::codec::Writer;
use crate::crypto::{Hash32, MemberKey};
use crate::trie::{leaf_of, path_of, Trie};

/// A key's canonical bytes (the first field(s) of its entry in the flat encoding).
pub trait EntryKey: Ord + Clone {
    /// Appends the key's bytes.
    fn encode_key(&self, w: &mut Writer);
}

/// A value's canonical bytes (what follows the key in the flat encoding).
pub trait EntryValue: Clone {
    /// Appends the value's bytes.
    fn encode_value(&self, w: &mut Writer);
}

impl EntryKey for Hash32 {
    fn encode_key(&self, w: &mut Writer) {
        w.fixed(&self.0);
    }
}

impl EntryKey for u64 {
    fn encode_key(&self, w: &mut Writer) {
        w.u64(*self);
    }
}

impl EntryKey for (MemberKey, u64) {
    fn encode_key(&self, w: &mut Writer) {
        w.fixed(&self.0 .0).u64(self.1);
    }
}

/// A map with an incrementally maintained Merkle root.
#[derive(Debug, Clone)]
pub struct CommittedMap<K: EntryKey, V: EntryValue> {
    map: OrdMap<K, V>,
    trie: Trie,
}

impl<K: EntryKey, V: EntryValue> Default for CommittedMap<K, V> {
    fn default() -> Self {
        CommittedMap {
            map: OrdMap::new(),
            trie: Trie::default(),
        }
    }
}

fn key_bytes<K: EntryKey>(k: &K) -> Vec<u8> {
    let mut w = Writer::new();
    k.encode_key(&mut w);
    w.finish()
}

impl<K: EntryKey, V: EntryValue> CommittedMap<K, V> {
    fn commit(&mut self, k: &K) {
        let key = key_bytes(k);
        let path = path_of(&key);
        match self.map.get(k) {
            Some(v) => {
                let mut w = Writer::new();
                v.encode_value(&mut w);
                self.trie.insert(&path, leaf_of(&key, w.as_slice()));
            }
            None => self.trie.remove(&path),
        }
    }

    /// Inserts or replaces; returns the old value.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let old = self.map.insert(k.clone(), v);
        self.commit(&k);
        old
    }

    /// Removes; returns the value.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.map.remove(k);
        if old.is_some() {
            self.commit(k);
        }
        old
    }

    /// Changes the value at `k` with `f` (if present), and returns what `f` returned.
    pub fn update<R>(&mut self, k: &K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let r = self.map.get_mut(k).map(f);
        if r.is_some() {
            self.commit(k);
        }
        r
    }

    /// Keeps only the entries for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let gone: Vec<K> = self
            .map
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.remove(k);
        }
    }

    /// Removes and returns the smallest entry.
    pub fn pop_first(&mut self) -> Option<(K, V)> {
        let k = self.map.keys().next()?.clone();
        self.remove(&k).map(|v| (k, v))
    }

    /// The Merkle root of the entries (protocol.md §7.2).
    pub fn root(&self) -> Hash32 {
        self.trie.root()
    }

    /// The flat encoding: `u32 n`, then each entry's key and value bytes, in key order.
    pub fn encode_flat(&self, w: &mut Writer) {
        w.u32(u32::try_from(self.map.len()).unwrap_or(u32::MAX));
        for (k, v) in &self.map {
            k.encode_key(w);
            v.encode_value(w);
        }
    }
}

impl<K: EntryKey, V: EntryValue> Deref for CommittedMap<K, V> {
    type Target = OrdMap<K, V>;
    fn deref(&self) -> &OrdMap<K, V> {
        &self.map
    }
}

impl<K: EntryKey, V: EntryValue + PartialEq> PartialEq for CommittedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: EntryKey, V: EntryValue + Eq> Eq for CommittedMap<K, V> {}

impl<K: EntryKey + Serialize, V: EntryValue + Serialize> Serialize for CommittedMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.map.iter())
    }
}

impl<K: EntryKey, V: EntryValue> FromIterator<(K, V)> for CommittedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = CommittedMap::default();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trie::root_of;
    use proptest::prelude::*;

    impl EntryValue for u64 {
        fn encode_value(&self, w: &mut Writer) {
            w.u64(*self);
        }
    }

    fn reference(m: &CommittedMap<u64, u64>) -> Hash32 {
        let entries: Vec<_> = m
            .iter()
            .map(|(k, v)| {
                let key = k.to_be_bytes();
                (path_of(&key), leaf_of(&key, &v.to_be_bytes()))
            })
            .collect();
        root_of(&entries)
    }

    proptest! {
        // Whatever changes it (insert, update, remove, retain, pop_first), the root is that of
        // the entries the map holds.
        #[test]
        fn the_root_follows_every_change(ops in prop::collection::vec((0u8..5, 0u64..30, 0u64..4), 0..120)) {
            let mut m = CommittedMap::<u64, u64>::default();
            for (op, k, v) in ops {
                match op {
                    0 => { m.insert(k, v); }
                    1 => { m.update(&k, |x| *x += v); }
                    2 => { m.remove(&k); }
                    3 => m.retain(|key, _| key % 4 != v),
                    _ => { m.pop_first(); }
                }
                prop_assert_eq!(m.root(), reference(&m));
            }
        }
    }
}
