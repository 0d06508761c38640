//! One home's part in a day's ADMM over the community bus (docs/scheduling.md), sans-IO.
//!
//! Every gateway runs the same session: it solves its local step (the shell does, on a worker
//! thread: [`SessionEffect::Solve`]), signs and publishes its proposal, collects every member's
//! proposal of the iteration from the bus, and runs the aggregator step itself — there is no
//! aggregator node, every gateway computes the same prices from the same proposals. When the
//! residuals fall below the tolerance (or at the iteration limit) each gateway holds the same
//! commitment; one member (the first in key order) submits it, and every node verifies it by
//! replay when it arrives in a block.
//!
//! Messages can be lost or come late: a session republishes its proposals of the current and
//! the previous iteration (peers are at most one iteration behind), keeps proposals of the next
//! iteration for later, and gives up after a deadline.

use std::collections::BTreeMap;

use gridlet_ledger::crypto::Signature;
use gridlet_ledger::genesis::ScheduleParams;
use gridlet_ledger::market::day_ahead::build_commit;
use gridlet_ledger::market::dispatch::{
    converged, kw, proposal_digest, to_mw, Aggregator, DispatchParams, StepReport,
};
use gridlet_ledger::tx::{ScheduleCommit, SignedProposal};
use gridlet_ledger::{Hash32, MemberKey};
use secp256k1::{PublicKey, SecretKey};

/// A proposal as it travels on the bus.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProposalMessage {
    /// The day planned.
    pub day: u64,
    /// The iteration.
    pub round: u32,
    /// The proposing home.
    pub home: MemberKey,
    /// Net exchange per interval, W.
    pub values_mw: Vec<i32>,
    /// The home's signature over the proposal digest, hex.
    pub signature: String,
}

/// What the session wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEffect {
    /// Solve the local step towards `target` (kW per interval) for iteration `round`, and hand
    /// the net exchange back with [`Session::solved`].
    Solve {
        /// The iteration.
        round: u32,
        /// The target of the local step.
        target: Vec<f64>,
        /// The penalty ρ.
        rho: f64,
    },
    /// Publish a proposal on the bus.
    Publish(ProposalMessage),
    /// The iterations ended: this is the day's commitment (every member computes the same).
    Finished {
        /// The commitment.
        commit: Box<ScheduleCommit>,
        /// Whether this member submits it.
        submit: bool,
        /// The last residuals.
        report: StepReport,
    },
    /// The session gave up.
    Failed(String),
}

/// Why a proposal from the bus was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// Not a member of this community.
    #[error("proposal from non-member {0}")]
    NotMember(MemberKey),
    /// The signature does not verify.
    #[error("proposal of {home} for iteration {round} has a bad signature")]
    BadSignature {
        /// Home.
        home: MemberKey,
        /// Iteration.
        round: u32,
    },
    /// Wrong number of values.
    #[error("proposal of {home} has {found} values for {expected} intervals")]
    WrongLength {
        /// Home.
        home: MemberKey,
        /// Values.
        found: usize,
        /// Intervals.
        expected: usize,
    },
    /// Another member's proposal for an iteration already received, with other values.
    #[error("{home} sent two different proposals for iteration {round}")]
    Conflicting {
        /// Home.
        home: MemberKey,
        /// Iteration.
        round: u32,
    },
}

/// The community's side of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The chain id.
    pub chain_id: Hash32,
    /// The day planned.
    pub day: u64,
    /// The genesis schedule section.
    pub params: ScheduleParams,
    /// The grid tariff (where the section has no per-interval prices).
    pub grid_tariff: u64,
    /// Members and their keys.
    pub members: BTreeMap<MemberKey, PublicKey>,
    /// Republish own proposals this often, ms.
    pub resend_ms: u64,
    /// Give up after this long, ms.
    pub deadline_ms: u64,
}

/// One home's session for one day.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    me: MemberKey,
    key: SecretKey,
    dispatch: DispatchParams,
    tolerance_kw: f64,
    agg: Aggregator,
    round: u32,
    /// My last proposal, kW (as every peer sees it: whole milliwatts).
    my_last: Vec<f64>,
    /// Proposals by iteration, then home.
    received: BTreeMap<u32, BTreeMap<MemberKey, SignedProposal>>,
    /// Completed iterations, members in key order.
    history: Vec<Vec<(MemberKey, SignedProposal)>>,
    solving: bool,
    failed: bool,
    started_ms: u64,
    last_sent_ms: u64,
    done: bool,
}

fn signature_hex(s: &Signature) -> String {
    s.to_hex()
}

impl Session {
    /// A session for `me`, started at `now_ms`. Returns the first effects (solve iteration 0).
    pub fn start(
        cfg: SessionConfig,
        me: MemberKey,
        key: SecretKey,
        now_ms: u64,
    ) -> (Session, Vec<SessionEffect>) {
        let dispatch = DispatchParams::from_schedule(&cfg.params, cfg.grid_tariff);
        let intervals = dispatch.import_price.len();
        let s = Session {
            tolerance_kw: DispatchParams::tolerance_kw(&cfg.params),
            agg: Aggregator::new(intervals, dispatch.rho),
            dispatch,
            me,
            key,
            round: 0,
            my_last: vec![0.0; intervals],
            received: BTreeMap::new(),
            history: Vec::new(),
            solving: true,
            failed: false,
            started_ms: now_ms,
            last_sent_ms: now_ms,
            done: false,
            cfg,
        };
        let first = SessionEffect::Solve {
            round: 0,
            target: s.agg.target(&s.my_last),
            rho: s.agg.rho,
        };
        (s, vec![first])
    }

    /// The day planned.
    pub fn day(&self) -> u64 {
        self.cfg.day
    }

    /// The current iteration.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Whether the session ended (finished or failed).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The local step of `round` came back with the net exchange `net_kw`.
    pub fn solved(&mut self, round: u32, net_kw: &[f64], now_ms: u64) -> Vec<SessionEffect> {
        if self.done || round != self.round || !self.solving {
            return Vec::new();
        }
        self.solving = false;
        let values_mw: Vec<i32> = net_kw.iter().map(|x| to_mw(*x)).collect();
        self.my_last = values_mw.iter().map(|w| kw(*w)).collect();
        let digest = proposal_digest(
            &self.cfg.chain_id,
            self.cfg.day,
            round,
            &self.me,
            &values_mw,
        );
        let signature = Signature::sign(&digest, &self.key);
        let msg = ProposalMessage {
            day: self.cfg.day,
            round,
            home: self.me,
            values_mw: values_mw.clone(),
            signature: signature_hex(&signature),
        };
        self.received.entry(round).or_default().insert(
            self.me,
            SignedProposal {
                values_mw,
                signature,
            },
        );
        self.last_sent_ms = now_ms;
        let mut out = vec![SessionEffect::Publish(msg)];
        out.extend(self.advance());
        out
    }

    /// A proposal from the bus. Proposals of other days, of past iterations and duplicates
    /// are ignored (`Ok` with no effects); invalid ones are refused.
    pub fn receive(&mut self, m: &ProposalMessage) -> Result<Vec<SessionEffect>, ProposalError> {
        if m.day != self.cfg.day || self.done || m.round < self.round || m.home == self.me {
            return Ok(Vec::new());
        }
        let key = self
            .cfg
            .members
            .get(&m.home)
            .ok_or(ProposalError::NotMember(m.home))?;
        let intervals = self.dispatch.import_price.len();
        if m.values_mw.len() != intervals {
            return Err(ProposalError::WrongLength {
                home: m.home,
                found: m.values_mw.len(),
                expected: intervals,
            });
        }
        let signature = Signature::from_hex(&m.signature).ok_or(ProposalError::BadSignature {
            home: m.home,
            round: m.round,
        })?;
        let digest = proposal_digest(&self.cfg.chain_id, m.day, m.round, &m.home, &m.values_mw);
        if !signature.verify(&digest, key) {
            return Err(ProposalError::BadSignature {
                home: m.home,
                round: m.round,
            });
        }
        let round = self.received.entry(m.round).or_default();
        if let Some(existing) = round.get(&m.home) {
            if existing.values_mw != m.values_mw {
                return Err(ProposalError::Conflicting {
                    home: m.home,
                    round: m.round,
                });
            }
            return Ok(Vec::new());
        }
        round.insert(
            m.home,
            SignedProposal {
                values_mw: m.values_mw.clone(),
                signature,
            },
        );
        Ok(self.advance())
    }

    /// Time passed: republish, or give up at the deadline.
    /// A finished session keeps republishing its last proposal: a peer that lost it would
    /// otherwise wait forever. The shell drops the session once the day is committed.
    pub fn tick(&mut self, now_ms: u64) -> Vec<SessionEffect> {
        if self.failed {
            return Vec::new();
        }
        if !self.done && now_ms.saturating_sub(self.started_ms) > self.cfg.deadline_ms {
            self.failed = true;
            self.done = true;
            let have = self.received.get(&self.round).map_or(0, BTreeMap::len);
            return vec![SessionEffect::Failed(format!(
                "day {}: iteration {} has {have} of {} proposals at the deadline",
                self.cfg.day,
                self.round,
                self.cfg.members.len()
            ))];
        }
        if now_ms.saturating_sub(self.last_sent_ms) < self.cfg.resend_ms {
            return Vec::new();
        }
        self.last_sent_ms = now_ms;
        let mut out = Vec::new();
        let rounds = if self.done {
            [self.round, self.round]
        } else {
            [self.round.saturating_sub(1), self.round]
        };
        for round in rounds {
            if let Some(p) = self
                .received
                .get(&round)
                .and_then(|r| r.get(&self.me))
                .or_else(|| {
                    self.history
                        .get(usize::try_from(round).unwrap_or(usize::MAX))
                        .and_then(|r| r.iter().find(|(k, _)| *k == self.me).map(|(_, p)| p))
                })
            {
                let msg = ProposalMessage {
                    day: self.cfg.day,
                    round,
                    home: self.me,
                    values_mw: p.values_mw.clone(),
                    signature: signature_hex(&p.signature),
                };
                if !out.contains(&SessionEffect::Publish(msg.clone())) {
                    out.push(SessionEffect::Publish(msg));
                }
            }
        }
        out
    }

    /// Runs the aggregator step when the current iteration is complete.
    fn advance(&mut self) -> Vec<SessionEffect> {
        let complete = self
            .received
            .get(&self.round)
            .is_some_and(|r| r.len() == self.cfg.members.len());
        if self.solving || !complete {
            return Vec::new();
        }
        let Some(round) = self.received.remove(&self.round) else {
            return Vec::new();
        };
        let proposals: Vec<(MemberKey, SignedProposal)> = round.into_iter().collect();
        let kws: Vec<Vec<f64>> = proposals
            .iter()
            .map(|(_, p)| p.values_mw.iter().map(|w| kw(*w)).collect())
            .collect();
        let refs: Vec<&[f64]> = kws.iter().map(Vec::as_slice).collect();
        let report = self.agg.step(&self.dispatch, &refs);
        self.history.push(proposals);
        let limit = self.round.saturating_add(1) >= self.cfg.params.max_iterations;
        if converged(&report, self.tolerance_kw) || limit {
            self.done = true;
            let commit = build_commit(
                &self.cfg.params,
                self.cfg.grid_tariff,
                self.cfg.day,
                self.history.clone(),
            );
            let submit = self.cfg.members.keys().next() == Some(&self.me);
            return vec![SessionEffect::Finished {
                commit: Box::new(commit),
                submit,
                report,
            }];
        }
        self.round = self.round.saturating_add(1);
        self.solving = true;
        vec![SessionEffect::Solve {
            round: self.round,
            target: self.agg.target(&self.my_last),
            rho: self.agg.rho,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{generate, local_step, Community, HomeData};
    use gridlet_ledger::crypto::deterministic_key;

    fn community(n: u64) -> (Vec<(MemberKey, SecretKey)>, SessionConfig) {
        let mut keys: Vec<(MemberKey, SecretKey)> = (0..n)
            .map(|i| {
                let sk = deterministic_key(31, i);
                (MemberKey::from_secret(&sk), sk)
            })
            .collect();
        keys.sort_by_key(|(k, _)| *k);
        let mut params = ScheduleParams::with_feeder(6_000);
        params.intervals = 24;
        params.interval_min = 60;
        let cfg = SessionConfig {
            chain_id: Hash32([7; 32]),
            day: 3,
            params,
            grid_tariff: 300_000,
            members: keys.iter().map(|(k, sk)| (*k, sk.public_key())).collect(),
            resend_ms: 1_000,
            deadline_ms: 100_000_000,
        };
        (keys, cfg)
    }

    fn data(n: usize, cfg: &SessionConfig) -> (Vec<HomeData>, Community) {
        let (homes, mut c) = generate(n, 24, 11);
        let p = DispatchParams::from_schedule(&cfg.params, cfg.grid_tariff);
        c.dt_h = p.dt_h;
        c.import_price = p.import_price;
        c.export_price = p.export_price;
        c.feeder_kw = p.feeder_kw;
        (homes, c)
    }

    /// Runs sessions that pass messages in a shuffled order, with every third message lost
    /// the first time (the resend brings it).
    #[test]
    fn sessions_over_a_lossy_bus_agree_on_one_valid_commitment() {
        let (keys, cfg) = community(3);
        let (homes, c) = data(3, &cfg);
        let mut sessions = Vec::new();
        let mut queue: Vec<(usize, SessionEffect)> = Vec::new();
        for (i, (k, sk)) in keys.iter().enumerate() {
            let (s, fx) = Session::start(cfg.clone(), *k, *sk, 0);
            sessions.push(s);
            queue.extend(fx.into_iter().map(|e| (i, e)));
        }
        let mut finished: Vec<Option<ScheduleCommit>> = vec![None; 3];
        let mut submitters = 0;
        let mut now = 0;
        let mut sent = 0u64;
        while finished.iter().any(Option::is_none) {
            now += 1_500;
            assert!(now < 3_000_000, "no agreement");
            let batch = std::mem::take(&mut queue);
            for (from, e) in batch.into_iter().rev() {
                match e {
                    SessionEffect::Solve { round, target, rho } => {
                        let plan = local_step(&homes[from], &c, rho, &target).unwrap();
                        let fx = sessions[from].solved(round, &plan.net_kw, now);
                        queue.extend(fx.into_iter().map(|e| (from, e)));
                    }
                    SessionEffect::Publish(m) => {
                        sent += 1;
                        if sent.is_multiple_of(3) {
                            continue;
                        }
                        for (to, s) in sessions.iter_mut().enumerate() {
                            if to != from {
                                let fx = s.receive(&m).unwrap();
                                queue.extend(fx.into_iter().map(|e| (to, e)));
                            }
                        }
                    }
                    SessionEffect::Finished { commit, submit, .. } => {
                        submitters += usize::from(submit);
                        finished[from] = Some(*commit);
                    }
                    SessionEffect::Failed(why) => panic!("{why}"),
                }
            }
            for (i, s) in sessions.iter_mut().enumerate() {
                queue.extend(s.tick(now).into_iter().map(|e| (i, e)));
            }
        }
        assert_eq!(submitters, 1);
        let first = finished[0].clone().unwrap();
        assert!(finished.iter().all(|f| f.as_ref() == Some(&first)));
        assert!(first.rounds.len() > 1);
        // The ledger accepts it: the replay agrees and the stopping rule holds.
        let rounds: Vec<Vec<(MemberKey, Vec<i32>)>> = first
            .rounds
            .iter()
            .map(|r| {
                keys.iter()
                    .map(|(k, _)| *k)
                    .zip(r.iter().map(|p| p.values_mw.clone()))
                    .collect()
            })
            .collect();
        let p = DispatchParams::from_schedule(&cfg.params, cfg.grid_tariff);
        let replayed = gridlet_ledger::market::dispatch::replay_checked(
            &p,
            &rounds,
            DispatchParams::tolerance_kw(&cfg.params),
            cfg.params.max_iterations,
        )
        .unwrap();
        assert_eq!(replayed.prices, first.prices);
        assert_eq!(replayed.inputs_hash, first.inputs_hash);
    }

    #[test]
    fn forged_conflicting_and_foreign_proposals_are_refused() {
        let (keys, cfg) = community(2);
        let (mut s, _) = Session::start(cfg.clone(), keys[0].0, keys[0].1, 0);
        let (peer, peer_sk) = keys[1];
        let sign = |values: &[i32], sk: &SecretKey| {
            Signature::sign(&proposal_digest(&cfg.chain_id, 3, 0, &peer, values), sk).to_hex()
        };
        let values = vec![100; 24];
        let good = ProposalMessage {
            day: 3,
            round: 0,
            home: peer,
            values_mw: values.clone(),
            signature: sign(&values, &peer_sk),
        };
        let forged = ProposalMessage {
            signature: sign(&values, &keys[0].1),
            ..good.clone()
        };
        assert!(matches!(
            s.receive(&forged),
            Err(ProposalError::BadSignature { .. })
        ));
        let stranger = MemberKey::from_secret(&deterministic_key(99, 0));
        assert_eq!(
            s.receive(&ProposalMessage {
                home: stranger,
                ..good.clone()
            }),
            Err(ProposalError::NotMember(stranger))
        );
        assert!(matches!(
            s.receive(&ProposalMessage {
                values_mw: vec![1; 5],
                ..good.clone()
            }),
            Err(ProposalError::WrongLength { found: 5, .. })
        ));
        assert_eq!(s.receive(&good), Ok(Vec::new()));
        let other = vec![200; 24];
        assert!(matches!(
            s.receive(&ProposalMessage {
                values_mw: other.clone(),
                signature: sign(&other, &peer_sk),
                ..good.clone()
            }),
            Err(ProposalError::Conflicting { .. })
        ));
        // Another day's proposals are none of this session's business.
        assert_eq!(
            s.receive(&ProposalMessage { day: 4, ..good }),
            Ok(Vec::new())
        );
        // Nobody answers: the session gives up at the deadline.
        assert!(matches!(
            s.tick(cfg.deadline_ms + 1).as_slice(),
            [SessionEffect::Failed(_)]
        ));
    }
}
