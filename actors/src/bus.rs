//! The community bus over MQTT (rumqttc), and the embedded broker (rumqttd) used when no
//! broker is configured.
//!
//! Topics, under a configurable prefix and the chain id: `<prefix>/<chain>/tx`, `…/block`,
//! `…/sync/request`, `…/sync/response/<node>`, `…/dispatch` (day-ahead proposals). Payloads are the JSON of [`BusMessage`]. A stable
//! client id and a persistent session (`clean_session = false`) keep subscriptions and QoS 1
//! messages across reconnects; messages are acknowledged only after the consumer processed them
//! ([`BusHandle::ack`]); reconnects back off exponentially (rumqttc has no backoff of its own).

use std::time::Duration;

use gridlet_drivers::backoff::BackoffPolicy;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use gridlet_core::node::BusMessage;

/// Bus settings.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// This node's name (stable: it is the client id and the sync-response address).
    pub node: String,
    /// Topic prefix.
    pub prefix: String,
    /// The chain id (hex); the first 16 characters go into the topics.
    pub chain_id: String,
    /// Keep the broker session across reconnects.
    pub persistent_session: bool,
    /// Reconnect backoff.
    pub backoff: BackoffPolicy,
    /// Largest payload accepted, bytes.
    pub max_packet_bytes: usize,
}

impl BusConfig {
    fn base(&self) -> String {
        let chain: String = self.chain_id.chars().take(16).collect();
        format!("{}/{chain}", self.prefix)
    }

    /// The topic a message goes to.
    pub fn topic_for(&self, m: &BusMessage) -> String {
        let base = self.base();
        match m {
            BusMessage::Tx { .. } => format!("{base}/tx"),
            BusMessage::Block { .. } => format!("{base}/block"),
            BusMessage::SyncRequest { .. } => format!("{base}/sync/request"),
            BusMessage::SyncResponse { node, .. } => format!("{base}/sync/response/{node}"),
            BusMessage::Proposal(_) => format!("{base}/dispatch"),
            BusMessage::Consensus { .. } => format!("{base}/consensus"),
            BusMessage::NetPower(_) => format!("{base}/power"),
        }
    }

    /// The topics this node subscribes to.
    pub fn subscriptions(&self) -> Vec<String> {
        let base = self.base();
        vec![
            format!("{base}/tx"),
            format!("{base}/block"),
            format!("{base}/sync/request"),
            format!("{base}/sync/response/{}", self.node),
            format!("{base}/dispatch"),
            format!("{base}/consensus"),
            format!("{base}/power"),
        ]
    }
}

/// A message received, to be acknowledged once processed.
#[derive(Debug)]
pub struct Delivery {
    /// The decoded message.
    pub message: BusMessage,
    publish: Publish,
}

/// What the bus reports.
#[derive(Debug)]
pub enum BusEvent {
    /// A message arrived.
    Message(Box<Delivery>),
    /// A payload that is not a bus message (counted, acknowledged, dropped).
    Malformed {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Connected (again).
    Connected,
    /// The connection failed; retrying after the backoff.
    Disconnected {
        /// Why.
        reason: String,
    },
}

enum Command {
    Publish(BusMessage),
    Ack(Box<Publish>),
}

/// The sending side of a running bus.
#[derive(Debug, Clone)]
pub struct BusHandle {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Publish(m) => write!(f, "Publish({m:?})"),
            Command::Ack(_) => write!(f, "Ack"),
        }
    }
}

impl BusHandle {
    /// Queues a message for publication (QoS 1).
    pub async fn publish(&self, m: BusMessage) -> bool {
        self.commands.send(Command::Publish(m)).await.is_ok()
    }

    /// Acknowledges a processed delivery.
    pub async fn ack(&self, d: Delivery) -> bool {
        self.commands
            .send(Command::Ack(Box::new(d.publish)))
            .await
            .is_ok()
    }
}

/// Starts the bus task.
pub fn spawn(cfg: BusConfig) -> (BusHandle, mpsc::Receiver<BusEvent>, JoinHandle<()>) {
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let task = tokio::spawn(run(cfg, cmd_rx, ev_tx));
    (BusHandle { commands: cmd_tx }, ev_rx, task)
}

async fn run(
    cfg: BusConfig,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<BusEvent>,
) {
    let mut options = MqttOptions::new(format!("gridlet-{}", cfg.node), cfg.host.clone(), cfg.port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_clean_session(!cfg.persistent_session);
    options.set_manual_acks(true);
    options.set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let mut reconnect = cfg.backoff.schedule();
    loop {
        tokio::select! {
            polled = eventloop.poll() => match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    reconnect.connected();
                    for t in cfg.subscriptions() {
                        if let Err(e) = client.subscribe(t.clone(), QoS::AtLeastOnce).await {
                            tracing::warn!(%e, topic = %t, "cannot subscribe");
                        }
                    }
                    metrics::counter!(crate::metrics::BUS_CONNECTS).increment(1);
                    let _ = events.send(BusEvent::Connected).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    match serde_json::from_slice::<BusMessage>(&p.payload) {
                        Ok(message) => {
                            metrics::counter!(crate::metrics::BUS_MESSAGES, "direction" => "in", "kind" => crate::metrics::bus_kind(&message)).increment(1);
                            let delivery = Delivery { message, publish: p };
                            if events.send(BusEvent::Message(Box::new(delivery))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            metrics::counter!(crate::metrics::BUS_MALFORMED).increment(1);
                            let _ = client.ack(&p).await;
                            let _ = events
                                .send(BusEvent::Malformed {
                                    topic: p.topic.clone(),
                                    reason: e.to_string(),
                                })
                                .await;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let delay = reconnect.failed().max(Duration::from_millis(100));
                    let _ = events.send(BusEvent::Disconnected { reason: e.to_string() }).await;
                    tokio::time::sleep(delay).await;
                }
            },
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::Publish(m)) => {
                    metrics::counter!(crate::metrics::BUS_MESSAGES, "direction" => "out", "kind" => crate::metrics::bus_kind(&m)).increment(1);
                    let topic = cfg.topic_for(&m);
                    match serde_json::to_vec(&m) {
                        Ok(payload) => {
                            if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, payload).await {
                                tracing::warn!(%e, "cannot queue a bus message");
                            }
                        }
                        Err(e) => tracing::error!(%e, "cannot encode a bus message"),
                    }
                }
                Some(Command::Ack(p)) => {
                    let _ = client.ack(&p).await;
                }
            },
        }
    }
}

pub use crate::broker::{start_embedded_broker, start_embedded_broker_on, BrokerError};
