//! Who belongs to the community: the member set in the state, and the on-chain proposals that
//! add or remove a member once a quorum of the current members approved (protocol.md §7.1).
//!
//! The set starts as genesis's members. A change takes effect at the end of the block in which
//! its approvals reach the quorum, so the next block is checked against the new set; the voters
//! of a checkpoint are the members of the state of the previous final block (§9), so every home
//! judges a certificate by the same set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use secp256k1::PublicKey;
use serde::Serialize;

use crate::codec::{Reader, Writer};
use crate::crypto::{Hash32, MemberKey};
use crate::error::{DecodeError, TxError};
use crate::genesis::{AttestorSigner, Equipment, FinalityParams, Genesis};

/// Blocks an unapproved proposal stays open before it is dropped.
pub const PROPOSAL_LIFETIME_BLOCKS: u64 = 7_200;
/// Open proposals one member may have at a time (no member can grow the state without bound).
pub const MAX_OPEN_PROPOSALS_PER_MEMBER: usize = 4;
/// Longest member name, bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// A change of the member set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MemberChange {
    /// A new home joins with balance 0.
    Add {
        /// Its name (unique in the community).
        name: String,
        /// Its member key.
        key: MemberKey,
        /// Its battery's attestor key.
        attestor: MemberKey,
        /// Who holds that key and what its devices can deliver.
        equipment: Equipment,
    },
    /// A member leaves; its account stays, but it can no longer send, produce or vote.
    Remove {
        /// The member.
        key: MemberKey,
    },
}

impl MemberChange {
    pub(crate) fn encode_into(&self, w: &mut Writer) {
        match self {
            MemberChange::Add {
                name,
                key,
                attestor,
                equipment,
            } => {
                w.u8(1)
                    .var(name.as_bytes())
                    .fixed(&key.0)
                    .fixed(&attestor.0);
                equipment.encode_into(w);
            }
            MemberChange::Remove { key } => {
                w.u8(2).fixed(&key.0);
            }
        }
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<MemberChange, DecodeError> {
        match r.u8()? {
            1 => {
                let name =
                    String::from_utf8(r.var()?.to_vec()).map_err(|_| DecodeError::NotUtf8 {
                        what: "member name",
                    })?;
                let key = MemberKey::from_bytes(r.array()?)?;
                let attestor = MemberKey::from_bytes(r.array()?)?;
                let code = r.u8()?;
                let signer = AttestorSigner::from_code(code)
                    .ok_or(DecodeError::UnknownAttestorSigner { code })?;
                Ok(MemberChange::Add {
                    name,
                    key,
                    attestor,
                    equipment: Equipment {
                        signer,
                        battery_wh: r.u64()?,
                        pv_w: r.u64()?,
                    },
                })
            }
            2 => Ok(MemberChange::Remove {
                key: MemberKey::from_bytes(r.array()?)?,
            }),
            kind => Err(DecodeError::UnknownMemberChange { kind }),
        }
    }
}

/// An open proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberProposal {
    /// What it changes.
    pub change: MemberChange,
    /// Who proposed it (its first approval).
    pub proposer: MemberKey,
    /// The height of the block that holds the proposal.
    pub proposed_at: u64,
    /// Members who approved, the proposer included.
    pub approvals: BTreeSet<MemberKey>,
}

/// A member as the state knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// Its name.
    pub name: String,
    /// Its battery's attestor key.
    pub attestor: MemberKey,
    /// Who holds that key and what its devices can deliver.
    pub equipment: Equipment,
    /// The height from which it is a member (0 = genesis).
    pub since: u64,
}

/// A change that took effect, reported with the block's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MembershipChanged {
    /// The proposal.
    pub proposal: Hash32,
    /// The change.
    pub change: MemberChange,
    /// The first height checked against the new set.
    pub effective_height: u64,
}

/// The member set with its parsed keys, and the open proposals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    #[serde(serialize_with = "serialize_arc")]
    members: Arc<BTreeMap<MemberKey, MemberInfo>>,
    #[serde(skip)]
    keys: Arc<BTreeMap<MemberKey, PublicKey>>,
    #[serde(skip)]
    attestors: Arc<BTreeMap<MemberKey, PublicKey>>,
    proposals: BTreeMap<Hash32, MemberProposal>,
}

impl Membership {
    /// Genesis's members. Keys that do not parse are left out (genesis validation refuses them).
    pub fn genesis(genesis: &Genesis) -> Membership {
        let mut m = Membership {
            members: Arc::new(BTreeMap::new()),
            keys: Arc::new(BTreeMap::new()),
            attestors: Arc::new(BTreeMap::new()),
            proposals: BTreeMap::new(),
        };
        for g in &genesis.members {
            m.insert(g.key, g.name.clone(), g.attestor, g.equipment, 0);
        }
        m
    }

    fn insert(
        &mut self,
        key: MemberKey,
        name: String,
        attestor: MemberKey,
        equipment: Equipment,
        since: u64,
    ) {
        let (Ok(public), Ok(attestor_public)) = (key.to_public_key(), attestor.to_public_key())
        else {
            return;
        };
        Arc::make_mut(&mut self.keys).insert(key, public);
        Arc::make_mut(&mut self.attestors).insert(key, attestor_public);
        Arc::make_mut(&mut self.members).insert(
            key,
            MemberInfo {
                name,
                attestor,
                equipment,
                since,
            },
        );
    }

    /// The members' parsed keys.
    pub fn keys(&self) -> &Arc<BTreeMap<MemberKey, PublicKey>> {
        &self.keys
    }

    /// Each member's parsed attestor key.
    pub fn attestors(&self) -> &Arc<BTreeMap<MemberKey, PublicKey>> {
        &self.attestors
    }

    /// A member's equipment (its attestation bound and who signs for it).
    pub fn equipment(&self, key: &MemberKey) -> Option<Equipment> {
        self.members.get(key).map(|m| m.equipment)
    }

    /// The members with their names.
    pub fn members(&self) -> &BTreeMap<MemberKey, MemberInfo> {
        &self.members
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if nobody is a member (never, on a valid chain).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `key` is a member.
    pub fn contains(&self, key: &MemberKey) -> bool {
        self.members.contains_key(key)
    }

    /// The open proposals by id.
    pub fn proposals(&self) -> &BTreeMap<Hash32, MemberProposal> {
        &self.proposals
    }

    /// Why `change` cannot apply to the current set, if it cannot.
    fn refusal(&self, change: &MemberChange) -> Option<&'static str> {
        match change {
            MemberChange::Add {
                name,
                key,
                attestor,
                ..
            } => {
                if self.members.contains_key(key) {
                    Some("the key is already a member")
                } else if name.is_empty() || name.len() > MAX_NAME_BYTES {
                    Some("the name is empty or longer than 64 bytes")
                } else if self.members.values().any(|m| &m.name == name) {
                    Some("the name is taken")
                } else if key.to_public_key().is_err() || attestor.to_public_key().is_err() {
                    Some("a key is not a valid secp256k1 point")
                } else {
                    None
                }
            }
            MemberChange::Remove { key } => {
                if !self.members.contains_key(key) {
                    Some("the key is not a member")
                } else if self.members.len() <= 1 {
                    Some("the last member cannot leave")
                } else {
                    None
                }
            }
        }
    }

    /// Opens a proposal (the proposing transaction's id) with the proposer's approval.
    pub(crate) fn propose(
        &mut self,
        id: Hash32,
        proposer: MemberKey,
        change: &MemberChange,
        height: u64,
    ) -> Result<(), TxError> {
        if let Some(reason) = self.refusal(change) {
            return Err(TxError::MemberChangeInvalid { reason });
        }
        let open = self
            .proposals
            .values()
            .filter(|p| p.proposer == proposer)
            .count();
        if open >= MAX_OPEN_PROPOSALS_PER_MEMBER {
            return Err(TxError::MemberChangeInvalid {
                reason: "the proposer already has 4 open proposals",
            });
        }
        if self.proposals.values().any(|p| &p.change == change) {
            return Err(TxError::MemberChangeInvalid {
                reason: "the same change is already proposed",
            });
        }
        self.proposals.insert(
            id,
            MemberProposal {
                change: change.clone(),
                proposer,
                proposed_at: height,
                approvals: BTreeSet::from([proposer]),
            },
        );
        Ok(())
    }

    /// Records `approver`'s approval of an open proposal.
    pub(crate) fn approve(&mut self, id: &Hash32, approver: MemberKey) -> Result<(), TxError> {
        let proposal = self
            .proposals
            .get_mut(id)
            .ok_or(TxError::UnknownProposal { proposal: *id })?;
        if !proposal.approvals.insert(approver) {
            return Err(TxError::MemberChangeInvalid {
                reason: "already approved by this member",
            });
        }
        Ok(())
    }

    /// At the end of block `height`: applies the proposals a quorum of current members approved
    /// (in id order), drops those that can no longer apply or have expired.
    pub(crate) fn end_block(
        &mut self,
        finality: &FinalityParams,
        height: u64,
    ) -> Vec<MembershipChanged> {
        let mut changed = Vec::new();
        let ids: Vec<Hash32> = self.proposals.keys().copied().collect();
        for id in ids {
            let Some(p) = self.proposals.get(&id) else {
                continue;
            };
            let approvals = p
                .approvals
                .iter()
                .filter(|k| self.members.contains_key(k))
                .count();
            let ready = approvals >= finality.quorum(self.members.len());
            let expired = height.saturating_sub(p.proposed_at) > PROPOSAL_LIFETIME_BLOCKS;
            let stale = self.refusal(&p.change).is_some();
            if !(ready || expired || stale) {
                continue;
            }
            let Some(p) = self.proposals.remove(&id) else {
                continue;
            };
            if ready && !stale {
                let effective_height = height.saturating_add(1);
                match &p.change {
                    MemberChange::Add {
                        name,
                        key,
                        attestor,
                        equipment,
                    } => self.insert(*key, name.clone(), *attestor, *equipment, effective_height),
                    MemberChange::Remove { key } => {
                        Arc::make_mut(&mut self.members).remove(key);
                        Arc::make_mut(&mut self.keys).remove(key);
                        Arc::make_mut(&mut self.attestors).remove(key);
                    }
                }
                changed.push(MembershipChanged {
                    proposal: id,
                    change: p.change,
                    effective_height,
                });
            }
        }
        changed
    }

    /// The canonical encoding (part of the state hash).
    pub(crate) fn encode_into(&self, w: &mut Writer) {
        w.u32(u32::try_from(self.members.len()).unwrap_or(u32::MAX));
        for (key, m) in self.members.iter() {
            w.fixed(&key.0).var(m.name.as_bytes()).fixed(&m.attestor.0);
            m.equipment.encode_into(w);
            w.u64(m.since);
        }
        w.u32(u32::try_from(self.proposals.len()).unwrap_or(u32::MAX));
        for (id, p) in &self.proposals {
            w.fixed(&id.0);
            p.change.encode_into(w);
            w.fixed(&p.proposer.0).u64(p.proposed_at);
            w.u32(u32::try_from(p.approvals.len()).unwrap_or(u32::MAX));
            for k in &p.approvals {
                w.fixed(&k.0);
            }
        }
    }
}

fn serialize_arc<S: serde::Serializer, T: Serialize>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::deterministic_key;
    use crate::genesis::Member;
    use crate::selection::SelectionRule;
    use crate::units::MicroCredits;

    fn genesis(n: u64) -> Genesis {
        let members = (0..n)
            .map(|i| Member {
                name: format!("home-{i}"),
                key: MemberKey::from_secret(&deterministic_key(1, i)),
                attestor: MemberKey::from_secret(&deterministic_key(2, i)),
                equipment: crate::genesis::Equipment::device(20_000, 10_000),
                balance: MicroCredits::new(1),
            })
            .collect();
        Genesis::with_defaults("membership", 0, members, SelectionRule::Paper)
    }

    #[test]
    fn an_unapproved_proposal_is_dropped_after_its_lifetime() {
        let g = genesis(4);
        let mut m = Membership::genesis(&g);
        let key = MemberKey::from_secret(&deterministic_key(1, 9));
        let change = MemberChange::Remove {
            key: g.members[1].key,
        };
        let id = Hash32::sha256(b"p");
        m.propose(id, g.members[0].key, &change, 10).unwrap();
        assert!(m
            .end_block(&g.finality, 10 + PROPOSAL_LIFETIME_BLOCKS)
            .is_empty());
        assert!(m.proposals().contains_key(&id));
        assert!(m
            .end_block(&g.finality, 11 + PROPOSAL_LIFETIME_BLOCKS)
            .is_empty());
        assert!(m.proposals().is_empty());
        assert_eq!(m.len(), 4);
        assert!(!m.contains(&key));
    }

    #[test]
    fn a_change_that_no_longer_applies_is_dropped_not_applied() {
        let g = genesis(4);
        let mut m = Membership::genesis(&g);
        let gone = g.members[3].key;
        let (a, b) = (Hash32::sha256(b"a"), Hash32::sha256(b"b"));
        let remove = MemberChange::Remove { key: gone };
        m.propose(a, g.members[0].key, &remove, 1).unwrap();
        // The same removal proposed again is refused while the first is open.
        assert!(m.propose(b, g.members[1].key, &remove, 1).is_err());
        for k in [1, 2] {
            m.approve(&a, g.members[k].key).unwrap();
        }
        let changed = m.end_block(&g.finality, 1);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].effective_height, 2);
        assert_eq!(m.len(), 3);
        // Approving a closed proposal fails; encoding is deterministic.
        assert!(m.approve(&a, g.members[0].key).is_err());
        let (mut w1, mut w2) = (Writer::new(), Writer::new());
        m.encode_into(&mut w1);
        m.clone().encode_into(&mut w2);
        assert_eq!(w1.finish(), w2.finish());
    }

    #[test]
    fn a_change_round_trips_through_its_encoding() {
        let add = MemberChange::Add {
            name: "neighbour".into(),
            key: MemberKey::from_secret(&deterministic_key(3, 0)),
            attestor: MemberKey::from_secret(&deterministic_key(3, 1)),
            equipment: crate::genesis::Equipment::device(20_000, 10_000),
        };
        let mut w = Writer::new();
        add.encode_into(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(MemberChange::decode_from(&mut r).unwrap(), add);
        let mut bad = bytes.clone();
        bad[0] = 7;
        assert!(matches!(
            MemberChange::decode_from(&mut Reader::new(&bad)),
            Err(DecodeError::UnknownMemberChange { kind: 7 })
        ));
    }
}
