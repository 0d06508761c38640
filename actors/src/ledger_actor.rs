//! The ledger actor: a thin shell around the community [`Node`] state machine.
//!
//! The node does blocking work (store commits, the signer guard's fsync, verifying big blocks),
//! so it lives in a [`SyncArbiter`] thread ([`NodeWorker`]); the [`LedgerActor`] on the async
//! arbiter feeds it clock ticks and bus messages, publishes what it returns, and acknowledges a
//! bus message only after the node processed it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use gridlet_ledger::store::{BlockStore, RedbStore};
use gridlet_ledger::Hash32;

use crate::bus::{BusEvent, BusHandle};
use gridlet_core::node::{Effect, Input, Node};

pub use crate::clock::Clock;

/// What the ledger actor reports (read by the HTTP API and the metrics).
#[derive(Debug, Clone, Default)]
pub struct LedgerStatus {
    /// Head height.
    pub height: u64,
    /// Head hash.
    pub head: Option<Hash32>,
    /// Height of the last quorum-final block.
    pub finalized: u64,
    /// The last final blocks (height, hash), oldest first, at most [`RECENT_FINAL`].
    pub recent_final: std::collections::VecDeque<(u64, Hash32)>,
    /// Blocks this node produced.
    pub produced: u64,
    /// Blocks committed.
    pub committed: u64,
    /// Messages refused.
    pub rejected: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Malformed bus payloads.
    pub malformed: u64,
}

/// Final blocks the status keeps (for the API: peers and tools compare final chains).
pub const RECENT_FINAL: usize = 64;

/// One step of the node, run on the sync arbiter.
#[derive(Message)]
#[rtype(result = "Result<Vec<Effect>, String>")]
pub struct Step(pub Input);

/// The node on its own thread.
pub struct NodeWorker<S: BlockStore + Unpin + 'static> {
    node: Node<S>,
}

impl<S: BlockStore + Unpin + 'static> NodeWorker<S> {
    /// Wraps a node.
    pub fn new(node: Node<S>) -> Self {
        NodeWorker { node }
    }
}

impl<S: BlockStore + Unpin + 'static> Actor for NodeWorker<S> {
    type Context = SyncContext<Self>;
}

impl<S: BlockStore + Unpin + 'static> Handler<Step> for NodeWorker<S> {
    type Result = Result<Vec<Effect>, String>;

    fn handle(&mut self, msg: Step, _: &mut SyncContext<Self>) -> Self::Result {
        use crate::metrics as m;
        let carries_blocks = matches!(
            &msg.0,
            Input::Bus(gridlet_core::node::BusMessage::Block { .. })
                | Input::Bus(gridlet_core::node::BusMessage::SyncResponse { .. })
        );
        let started = Instant::now();
        let out = self.node.handle(msg.0).map_err(|e| e.to_string());
        if carries_blocks {
            metrics::histogram!(m::LEDGER_VALIDATION_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
        let chain = self.node.chain().chain();
        metrics::gauge!(m::LEDGER_HEIGHT).set(chain.head_height() as f64);
        metrics::gauge!(m::LEDGER_FINALIZED).set(chain.finalized().1 as f64);
        metrics::gauge!(m::LEDGER_SLOT).set(self.node.slot() as f64);
        metrics::gauge!(m::LEDGER_MEMPOOL).set(self.node.mempool_len() as f64);
        metrics::gauge!(m::LEDGER_SYNC_LAG).set(self.node.sync_lag() as f64);
        let (checkpoint, round) = self.node.checkpoint();
        metrics::gauge!(m::FINALITY_CHECKPOINT).set(checkpoint as f64);
        metrics::gauge!(m::FINALITY_ROUND).set(f64::from(round.unwrap_or(0)));
        out
    }
}

/// A copy of the state after the head (for the API, the market strategy, tests).
#[derive(Message)]
#[rtype(result = "Option<gridlet_ledger::LedgerState>")]
pub struct GetState;

impl<S: BlockStore + Unpin + 'static> Handler<GetState> for NodeWorker<S> {
    type Result = Option<gridlet_ledger::LedgerState>;

    fn handle(&mut self, _: GetState, _: &mut SyncContext<Self>) -> Self::Result {
        Some(self.node.chain().chain().head_state().clone())
    }
}

impl Handler<GetState> for LedgerActor {
    type Result = ResponseFuture<Option<gridlet_ledger::LedgerState>>;

    fn handle(&mut self, msg: GetState, _: &mut Context<Self>) -> Self::Result {
        let fut = self.worker.send(msg);
        Box::pin(async move { fut.await.ok().flatten() })
    }
}

/// The final height and the release orders still open in its state
/// ([`gridlet_ledger::market::MarketState::open_releases`]).
#[derive(Message)]
#[rtype(result = "(u64, Vec<gridlet_ledger::market::MarketEvent>)")]
pub struct GetOpenReleases;

impl<S: BlockStore + Unpin + 'static> Handler<GetOpenReleases> for NodeWorker<S> {
    type Result = MessageResult<GetOpenReleases>;

    fn handle(&mut self, _: GetOpenReleases, _: &mut SyncContext<Self>) -> Self::Result {
        let chain = self.node.chain().chain();
        MessageResult((
            chain.finalized().1,
            chain.finalized_state().market().open_releases(),
        ))
    }
}

/// What became of a transaction (pending, included, final, refused, unknown).
#[derive(Message)]
#[rtype(result = "Option<gridlet_core::tx_status::TxStatus>")]
pub struct GetTx(pub Hash32);

impl<S: BlockStore + Unpin + 'static> Handler<GetTx> for NodeWorker<S> {
    type Result = Option<gridlet_core::tx_status::TxStatus>;

    fn handle(&mut self, msg: GetTx, _: &mut SyncContext<Self>) -> Self::Result {
        Some(self.node.tx_status(&msg.0))
    }
}

impl Handler<GetTx> for LedgerActor {
    type Result = ResponseFuture<Option<gridlet_core::tx_status::TxStatus>>;

    fn handle(&mut self, msg: GetTx, _: &mut Context<Self>) -> Self::Result {
        let fut = self.worker.send(msg);
        Box::pin(async move { fut.await.ok().flatten() })
    }
}

/// A bus event for the ledger actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromBus(pub BusEvent);

/// A block committed by this node, with its market events (sent to subscribers).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChainEvents {
    /// Height.
    pub height: u64,
    /// The block's market events.
    pub events: Vec<gridlet_ledger::market::MarketEvent>,
}

/// The ledger actor.
pub struct LedgerActor {
    worker: Addr<NodeWorker<RedbStore>>,
    bus: BusHandle,
    clock: Clock,
    tick: Duration,
    status: Arc<Mutex<LedgerStatus>>,
    subscribers: Vec<Recipient<ChainEvents>>,
    /// Where day-ahead proposals from the bus go.
    proposals: Option<Recipient<crate::day_ahead::ProposalReceived>>,
    net_powers: Option<Recipient<crate::battery::BuyerPower>>,
    /// Acknowledgement sequencer (in arrival order).
    acks: Option<
        tokio::sync::mpsc::UnboundedSender<(
            crate::bus::Delivery,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
}

impl LedgerActor {
    /// A ledger actor over a node worker and a bus.
    pub fn new(
        worker: Addr<NodeWorker<RedbStore>>,
        bus: BusHandle,
        clock: Clock,
        tick: Duration,
        status: Arc<Mutex<LedgerStatus>>,
    ) -> Self {
        LedgerActor {
            worker,
            bus,
            clock,
            tick,
            status,
            subscribers: Vec::new(),
            proposals: None,
            net_powers: None,
            acks: None,
        }
    }

    /// Sends every committed block's market events to `r` as well.
    pub fn subscribe(&mut self, r: Recipient<ChainEvents>) {
        self.subscribers.push(r);
    }

    fn run_step(
        &mut self,
        input: Input,
        ack: Option<crate::bus::Delivery>,
        ctx: &mut Context<Self>,
    ) {
        let bus = self.bus.clone();
        let status = self.status.clone();
        let subscribers = self.subscribers.clone();
        let fut = self.worker.send(Step(input));
        // MQTT wants acknowledgements in the order the messages came: each one waits in the
        // sequencer until its message is processed.
        let done = ack.map(|d| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if let Some(seq) = &self.acks {
                let _ = seq.send((d, rx));
            }
            tx
        });
        ctx.spawn(
            async move {
                match fut.await {
                    Ok(Ok(effects)) => {
                        for e in effects {
                            dispatch(e, &bus, &status, &subscribers).await;
                        }
                    }
                    Ok(Err(e)) => {
                        metrics::counter!(crate::metrics::LEDGER_STORE_ERRORS).increment(1);
                        tracing::error!(%e, "ledger node failed: storage error")
                    }
                    Err(e) => tracing::error!(%e, "ledger node unreachable"),
                }
                // Acknowledge only now: the node has processed (and persisted) the message.
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            .into_actor(self),
        );
    }
}

/// Carries out one effect of the node: market events to the subscribers, then the I/O.
async fn dispatch(
    e: Effect,
    bus: &BusHandle,
    status: &Arc<Mutex<LedgerStatus>>,
    subscribers: &[Recipient<ChainEvents>],
) {
    // Only final blocks' events are acted on: releases, settlements, the strategy's view.
    if let Effect::Finalized { height, events, .. } = &e {
        for s in subscribers {
            s.do_send(ChainEvents {
                height: *height,
                events: events.clone(),
            });
        }
    }
    apply_effect(e, bus, status).await;
}

async fn apply_effect(e: Effect, bus: &BusHandle, status: &Arc<Mutex<LedgerStatus>>) {
    match e {
        Effect::Publish(m) => {
            bus.publish(m).await;
        }
        Effect::Committed {
            height,
            hash,
            produced,
            head,
        } => {
            // Every slot's block is a debug line: at INFO it would be 86 400 lines a day.
            if produced {
                tracing::debug!(height, %hash, "block produced");
            } else {
                tracing::debug!(height, %hash, "block committed");
            }
            if produced {
                metrics::counter!(crate::metrics::LEDGER_PRODUCED).increment(1);
            } else {
                metrics::counter!(crate::metrics::LEDGER_RECEIVED).increment(1);
            }
            if let Ok(mut s) = status.lock() {
                s.committed += 1;
                if produced {
                    s.produced += 1;
                }
                s.height = head.0;
                s.head = Some(head.1);
            }
        }
        Effect::Finalized {
            height,
            hash,
            events,
        } => {
            tracing::debug!(height, %hash, "block final");
            for ev in &events {
                tracing::info!(?ev, "market event");
            }
            metrics::counter!(crate::metrics::LEDGER_FINALIZED_BLOCKS).increment(1);
            if let Ok(mut s) = status.lock() {
                s.finalized = s.finalized.max(height);
                s.recent_final.push_back((height, hash));
                while s.recent_final.len() > RECENT_FINAL {
                    s.recent_final.pop_front();
                }
            }
        }
        Effect::Rejected {
            what,
            class,
            reason,
        } => {
            tracing::warn!(what, %reason, "refused");
            metrics::counter!(crate::metrics::LEDGER_REJECTED, "what" => what, "reason" => class)
                .increment(1);
            if let Ok(mut s) = status.lock() {
                s.rejected += 1;
            }
        }
        Effect::Submitted { id } => tracing::debug!(%id, "transaction submitted"),
        Effect::SignerState {
            what,
            signing,
            reason,
        } => {
            if signing {
                tracing::warn!(what, %reason, "signer record recovered");
            } else {
                tracing::error!(what, %reason, "signer record lost: holding signatures");
            }
            if what == "votes" {
                metrics::gauge!(crate::metrics::SIGNER_HELD, "what" => what).set(if signing {
                    0.0
                } else {
                    1.0
                });
            }
        }
        Effect::Duplicate => {
            metrics::counter!(crate::metrics::BUS_DUPLICATES).increment(1);
            if let Ok(mut s) = status.lock() {
                s.duplicates += 1;
            }
        }
    }
}

impl Actor for LedgerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
            crate::bus::Delivery,
            tokio::sync::oneshot::Receiver<()>,
        )>();
        self.acks = Some(tx);
        let bus = self.bus.clone();
        ctx.spawn(
            async move {
                while let Some((delivery, processed)) = rx.recv().await {
                    // A step that failed still answers (the sender drops): ack, as before.
                    let _ = processed.await;
                    bus.ack(delivery).await;
                }
            }
            .into_actor(self),
        );
        ctx.run_interval(self.tick, |act, ctx| {
            let now_ms = act.clock.now_ms();
            act.run_step(Input::Tick { now_ms }, None, ctx);
        });
    }
}

impl Handler<FromBus> for LedgerActor {
    type Result = ();

    fn handle(&mut self, msg: FromBus, ctx: &mut Context<Self>) {
        match msg.0 {
            BusEvent::Message(d) => {
                let side = match &d.message {
                    gridlet_core::node::BusMessage::Proposal(p) => {
                        if let Some(r) = &self.proposals {
                            r.do_send(crate::day_ahead::ProposalReceived(p.clone()));
                        }
                        true
                    }
                    gridlet_core::node::BusMessage::NetPower(m) => {
                        if let Some(r) = &self.net_powers {
                            r.do_send(crate::battery::BuyerPower(m.clone()));
                        }
                        true
                    }
                    _ => false,
                };
                if side {
                    // Not the node's: handed on; acknowledged in order.
                    let (done, processed) = tokio::sync::oneshot::channel();
                    if let Some(seq) = &self.acks {
                        let _ = seq.send((*d, processed));
                    }
                    let _ = done.send(());
                    return;
                }
                let input = Input::Bus(d.message.clone());
                self.run_step(input, Some(*d), ctx);
            }
            BusEvent::Malformed { topic, reason } => {
                tracing::warn!(%topic, %reason, "malformed bus payload");
                if let Ok(mut s) = self.status.lock() {
                    s.malformed += 1;
                }
            }
            BusEvent::Connected => {
                tracing::info!("community bus connected");
                // Ask for anything missed while away.
                self.run_step(Input::Reconnected, None, ctx);
            }
            BusEvent::Disconnected { reason } => {
                tracing::warn!(%reason, "community bus down, retrying")
            }
        }
    }
}

/// A transaction to submit through the node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitTx(pub gridlet_ledger::SignedTransaction);

impl Handler<SubmitTx> for LedgerActor {
    type Result = ();

    fn handle(&mut self, msg: SubmitTx, ctx: &mut Context<Self>) {
        self.run_step(Input::Submit(Box::new(msg.0)), None, ctx);
    }
}

/// Sign a payload as this member and submit it.
#[derive(Message)]
#[rtype(result = "Result<Hash32, SubmitError>")]
pub struct SignAndSubmit(pub gridlet_ledger::TxPayload);

/// Why a transaction this home signed did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The node refused it: the rule it breaks against the chain it would meet.
    #[error("refused: {0}")]
    Refused(String),
    /// The node worker did not answer (stopped, or its store failed).
    #[error("the ledger node is unavailable")]
    Unavailable,
}

impl Handler<SignAndSubmit> for LedgerActor {
    type Result = ResponseFuture<Result<Hash32, SubmitError>>;

    /// Signs, checks and submits; answers with the transaction id once it is in the mempool and
    /// published, or with the reason it was refused (no nonce is spent on a refused payload).
    fn handle(&mut self, msg: SignAndSubmit, _: &mut Context<Self>) -> Self::Result {
        let fut = self.worker.send(Step(Input::Sign(Box::new(msg.0))));
        let (bus, status, subscribers) = (
            self.bus.clone(),
            self.status.clone(),
            self.subscribers.clone(),
        );
        Box::pin(async move {
            let effects = match fut.await {
                Ok(Ok(effects)) => effects,
                Ok(Err(e)) => {
                    metrics::counter!(crate::metrics::LEDGER_STORE_ERRORS).increment(1);
                    tracing::error!(%e, "ledger node failed: storage error");
                    return Err(SubmitError::Unavailable);
                }
                Err(_) => return Err(SubmitError::Unavailable),
            };
            let mut result = Err(SubmitError::Unavailable);
            for e in effects {
                match &e {
                    Effect::Submitted { id } => result = Ok(*id),
                    Effect::Rejected {
                        what: "tx", reason, ..
                    } if result.is_err() => result = Err(SubmitError::Refused(reason.clone())),
                    _ => {}
                }
                dispatch(e, &bus, &status, &subscribers).await;
            }
            result
        })
    }
}

/// Send day-ahead proposals from the bus to this recipient.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RouteProposals(pub Recipient<crate::day_ahead::ProposalReceived>);

impl Handler<RouteProposals> for LedgerActor {
    type Result = ();

    fn handle(&mut self, msg: RouteProposals, _: &mut Context<Self>) {
        self.proposals = Some(msg.0);
    }
}

/// Send buyers' net power messages from the bus to this recipient (the battery).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RouteNetPower(pub Recipient<crate::battery::BuyerPower>);

impl Handler<RouteNetPower> for LedgerActor {
    type Result = ();

    fn handle(&mut self, msg: RouteNetPower, _: &mut Context<Self>) {
        self.net_powers = Some(msg.0);
    }
}

/// Subscribe to committed blocks' market events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<ChainEvents>);

impl Handler<Subscribe> for LedgerActor {
    type Result = ();

    /// The new subscriber also gets the release orders still open in the final state: after
    /// a restart, the blocks that raised them are not replayed, and a trade whose release (or
    /// its report) a crash cut off would otherwise be refunded with the energy moved or never
    /// move at all.
    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) {
        let subscriber = msg.0.clone();
        self.subscribe(msg.0);
        let open = self.worker.send(GetOpenReleases);
        ctx.spawn(
            async move {
                match open.await {
                    Ok((height, events)) if !events.is_empty() => {
                        tracing::info!(
                            height,
                            open = events.len(),
                            "release orders still open in the final state: handing them on"
                        );
                        subscriber.do_send(ChainEvents { height, events });
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(%e, "ledger node unreachable"),
                }
            }
            .into_actor(self),
        );
    }
}

/// Forwards bus events to the actor (run on the actor's arbiter).
pub fn forward_bus(mut events: tokio::sync::mpsc::Receiver<BusEvent>, actor: Addr<LedgerActor>) {
    actix::spawn(async move {
        while let Some(ev) = events.recv().await {
            if actor.send(FromBus(ev)).await.is_err() {
                break;
            }
        }
    });
}
