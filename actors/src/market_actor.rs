//! The market actor: turns the ledger's release orders for this home into battery releases,
//! and the battery's measured deliveries into signed receipts on chain; places offers (with the
//! battery's attestation) and purchases for the home.
//!
//! The strategy that decides *when* to offer or buy from the device readings comes with the
//! device wiring; the messages here are what it (and the HTTP API) will send.

use actix::prelude::*;
use gridlet_ledger::crypto::Signature;
use gridlet_ledger::market::{attestation_digest, receipt_digest, MarketEvent};
use gridlet_ledger::tx::Attestation;
use gridlet_ledger::{Hash32, MemberKey, TxPayload};
use secp256k1::SecretKey;

use crate::battery::{BatteryStorage, Delivered, Release};
use crate::ledger_actor::{ChainEvents, Clock, LedgerActor, SignAndSubmit};
use crate::release::ReleaseOrder;

/// Offer energy the battery stored: attests it (battery key) and offers it in one sale.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Offer {
    /// Market interval of the attested generation.
    pub interval: u64,
    /// Energy attested and offered, Wh.
    pub energy_wh: u64,
    /// Price, micro-credits per kWh.
    pub price: u64,
    /// Last height the offer can be bought at.
    pub expiry_height: u64,
}

/// Buy a sale contract.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Buy {
    /// The contract id.
    pub contract: Hash32,
    /// The exact payment.
    pub payment: u64,
}

/// The market actor.
pub struct MarketActor {
    me: MemberKey,
    /// The battery's key; without a battery nothing is attested, offered or receipted.
    attestor: Option<SecretKey>,
    chain_id: Hash32,
    slot_ms: u64,
    clock: Clock,
    ledger: Addr<LedgerActor>,
    battery: Option<Addr<BatteryStorage>>,
}

impl MarketActor {
    /// A market actor for member `me` whose battery (if any) signs with `attestor`.
    pub fn new(
        me: MemberKey,
        attestor: Option<SecretKey>,
        chain_id: Hash32,
        slot_ms: u64,
        clock: Clock,
        ledger: Addr<LedgerActor>,
    ) -> Self {
        MarketActor {
            me,
            attestor,
            chain_id,
            slot_ms,
            clock,
            ledger,
            battery: None,
        }
    }

    /// Sets the battery that releases this home's energy.
    pub fn with_battery(mut self, battery: Addr<BatteryStorage>) -> Self {
        self.battery = Some(battery);
        self
    }
}

impl Actor for MarketActor {
    type Context = Context<Self>;
}

impl Handler<ChainEvents> for MarketActor {
    type Result = ();

    fn handle(&mut self, msg: ChainEvents, _: &mut Context<Self>) {
        for e in msg.events {
            if let MarketEvent::Release {
                trade,
                seller,
                energy_wh,
                deadline_height,
            } = e
            {
                if seller != self.me {
                    continue;
                }
                let blocks_left = deadline_height.saturating_sub(msg.height);
                let order = ReleaseOrder {
                    trade,
                    energy_wh,
                    deadline_ms: self
                        .clock
                        .now_ms()
                        .saturating_add(blocks_left.saturating_mul(self.slot_ms)),
                };
                match &self.battery {
                    Some(b) => {
                        tracing::info!(%trade, energy_wh, "trade final: releasing");
                        b.do_send(Release(order));
                    }
                    None => tracing::error!(%trade, "trade final but no battery is configured"),
                }
            }
        }
    }
}

impl Handler<Delivered> for MarketActor {
    type Result = ();

    fn handle(&mut self, msg: Delivered, _: &mut Context<Self>) {
        let Some(attestor) = &self.attestor else {
            tracing::error!(trade = %msg.trade, "a delivery without a battery key cannot be receipted");
            return;
        };
        let receipt = Signature::sign(
            &receipt_digest(&self.chain_id, &msg.trade, msg.delivered_wh),
            attestor,
        );
        tracing::info!(trade = %msg.trade, delivered_wh = msg.delivered_wh, "reporting delivery");
        self.ledger.do_send(SignAndSubmit(TxPayload::Deliver {
            trade: msg.trade,
            delivered_wh: msg.delivered_wh,
            receipt,
        }));
    }
}

impl Handler<Offer> for MarketActor {
    type Result = ();

    fn handle(&mut self, msg: Offer, _: &mut Context<Self>) {
        let Some(attestor) = &self.attestor else {
            tracing::warn!("no battery key configured: only a battery can attest energy to offer");
            return;
        };
        let digest = attestation_digest(&self.chain_id, &self.me, msg.interval, msg.energy_wh);
        let attestation = Attestation {
            interval: msg.interval,
            energy_wh: msg.energy_wh,
            signature: Signature::sign(&digest, attestor),
        };
        self.ledger.do_send(SignAndSubmit(TxPayload::Sale {
            energy_wh: msg.energy_wh,
            price: msg.price,
            expiry_height: msg.expiry_height,
            attestation: Some(attestation),
        }));
    }
}

impl Handler<Buy> for MarketActor {
    type Result = ();

    fn handle(&mut self, msg: Buy, _: &mut Context<Self>) {
        self.ledger.do_send(SignAndSubmit(TxPayload::Purchase {
            contract: msg.contract,
            payment: msg.payment,
        }));
    }
}
