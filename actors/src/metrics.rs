//! Metric names of the actors and their descriptions (the `metrics` facade; the gateway
//! installs the one Prometheus exporter). Units are in the names; energy is in Wh, money in
//! micro-credits, as everywhere in gridlet.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use gridlet_core::node::BusMessage;

/// Device polls by device and result.
pub const DEVICE_POLLS: &str = "gridlet_device_polls_total";
/// 1 while the device's values are fresh.
pub const DEVICE_UP: &str = "gridlet_device_up";
/// Unix time of the device's last valid value.
pub const DEVICE_LAST_VALUE: &str = "gridlet_device_last_value_timestamp_seconds";
/// Link (re)connections of devices that are not on Modbus (the meter).
pub const DEVICE_RECONNECTS: &str = "gridlet_device_reconnects_total";
/// Meter telegrams or messages by result.
pub const METER_MESSAGES: &str = "gridlet_meter_messages_total";
/// PV AC power.
pub const PV_POWER: &str = "gridlet_pv_power_watts";
/// PV lifetime energy.
pub const PV_ENERGY: &str = "gridlet_pv_energy_wh";
/// Battery state of charge.
pub const BATTERY_SOC: &str = "gridlet_battery_soc_percent";
/// Battery power (positive = discharge).
pub const BATTERY_POWER: &str = "gridlet_battery_power_watts";
/// Battery available energy.
pub const BATTERY_ENERGY: &str = "gridlet_battery_available_energy_wh";
/// 1 while the battery is held in its safe state.
pub const BATTERY_SAFE_STATE: &str = "gridlet_battery_safe_state";
/// Grid power at the meter (positive = import).
pub const GRID_POWER: &str = "gridlet_grid_power_watts";
/// Grid import counter.
pub const GRID_IMPORT: &str = "gridlet_grid_import_energy_wh";
/// Grid export counter.
pub const GRID_EXPORT: &str = "gridlet_grid_export_energy_wh";

/// Head height.
pub const LEDGER_HEIGHT: &str = "gridlet_ledger_height";
/// Finalized height.
pub const LEDGER_FINALIZED: &str = "gridlet_ledger_finalized_height";
/// Blocks that became quorum-final.
pub const LEDGER_FINALIZED_BLOCKS: &str = "gridlet_ledger_blocks_finalized_total";
/// The checkpoint the finality gadget decides.
pub const FINALITY_CHECKPOINT: &str = "gridlet_finality_checkpoint";
/// The round of the current checkpoint (above 0: a proposer or quorum was missing).
pub const FINALITY_ROUND: &str = "gridlet_finality_round";
/// Current slot.
pub const LEDGER_SLOT: &str = "gridlet_ledger_slot";
/// Blocks this node produced.
pub const LEDGER_PRODUCED: &str = "gridlet_ledger_blocks_produced_total";
/// Blocks received from peers and committed.
pub const LEDGER_RECEIVED: &str = "gridlet_ledger_blocks_received_total";
/// Blocks, transactions and messages refused, by what and reason class.
pub const LEDGER_REJECTED: &str = "gridlet_ledger_rejected_total";
/// Failed block-store operations (a full disk, I/O errors, a damaged store): nothing they
/// carried was acknowledged.
pub const LEDGER_STORE_ERRORS: &str = "gridlet_ledger_store_errors_total";
/// 1 while this node does not vote because its record of what it signed was lost (by what).
pub const SIGNER_HELD: &str = "gridlet_signer_held";
/// Transactions waiting.
pub const LEDGER_MEMPOOL: &str = "gridlet_ledger_mempool_transactions";
/// Time to validate and commit a received block.
pub const LEDGER_VALIDATION_SECONDS: &str = "gridlet_ledger_block_validation_seconds";
/// Highest height seen from peers minus this node's head.
pub const LEDGER_SYNC_LAG: &str = "gridlet_ledger_sync_lag_blocks";

/// Offers made.
pub const MARKET_OFFERS: &str = "gridlet_market_offers_total";
/// Purchases made.
pub const MARKET_PURCHASES: &str = "gridlet_market_purchases_total";
/// Bid transactions by phase.
pub const MARKET_BIDS: &str = "gridlet_market_bids_total";
/// Trades on the chain (all homes).
pub const MARKET_TRADES: &str = "gridlet_market_trades_total";
/// Energy traded on the chain (all homes).
pub const MARKET_TRADED_WH: &str = "gridlet_market_traded_energy_wh_total";
/// Price of the latest trade.
pub const MARKET_LAST_PRICE: &str = "gridlet_market_last_price_microcredits_per_kwh";
/// Credits held in escrow (all homes).
pub const MARKET_ESCROW: &str = "gridlet_market_escrow_microcredits";
/// This home's balance.
pub const MARKET_BALANCE: &str = "gridlet_market_balance_microcredits";
/// Release orders passed to this home's battery.
pub const MARKET_RELEASES: &str = "gridlet_market_releases_total";
/// Deliveries receipted.
pub const MARKET_DELIVERIES: &str = "gridlet_market_deliveries_total";
/// Deliveries of less than the traded energy.
pub const MARKET_FAILED_DELIVERIES: &str = "gridlet_market_failed_deliveries_total";

/// Net power messages of buyers sent by this home while a trade delivers to it.
pub const NET_POWER_SENT: &str = "gridlet_net_power_sent_total";
/// Net power messages refused by this home's battery (bad signature, replay).
pub const NET_POWER_REFUSED: &str = "gridlet_net_power_refused_total";
/// Claims (attestations, receipts) the home's signer would not sign, by kind.
pub const CLAIMS_UNSIGNED: &str = "gridlet_claims_unsigned_total";

/// Bus messages by direction and kind.
pub const BUS_MESSAGES: &str = "gridlet_bus_messages_total";
/// Bus (re)connections.
pub const BUS_CONNECTS: &str = "gridlet_bus_connects_total";
/// Bus payloads that did not decode.
pub const BUS_MALFORMED: &str = "gridlet_bus_malformed_total";
/// Duplicate messages dropped.
pub const BUS_DUPLICATES: &str = "gridlet_bus_duplicates_total";

/// Day-ahead sessions ended, by result (finished, failed).
pub const DAYAHEAD_SESSIONS: &str = "gridlet_dayahead_sessions_total";
/// Iterations of the last finished day-ahead session.
pub const DAYAHEAD_ITERATIONS: &str = "gridlet_dayahead_iterations";
/// Final primal residual of the last finished session, W.
pub const DAYAHEAD_PRIMAL: &str = "gridlet_dayahead_primal_residual_watts";
/// Proposals from the bus refused, by reason.
pub const DAYAHEAD_PROPOSALS_REJECTED: &str = "gridlet_dayahead_proposals_rejected_total";
/// Signed interval readings made by the meter.
pub const DAYAHEAD_READINGS: &str = "gridlet_dayahead_readings_total";
/// The battery set-point the day's plan asks for now, W (positive = discharge).
pub const DAYAHEAD_SETPOINT: &str = "gridlet_dayahead_setpoint_watts";
/// The home's exchange the day's plan schedules now, which the battery holds, W (positive =
/// import).
pub const DAYAHEAD_SCHEDULED_NET: &str = "gridlet_dayahead_scheduled_net_watts";

/// The kind label of a bus message.
pub fn bus_kind(m: &BusMessage) -> &'static str {
    match m {
        BusMessage::Tx { .. } => "tx",
        BusMessage::Block { .. } => "block",
        BusMessage::SyncRequest { .. } => "sync_request",
        BusMessage::SyncResponse { .. } => "sync_response",
        BusMessage::Proposal(_) => "proposal",
        BusMessage::Consensus { .. } => "consensus",
        BusMessage::NetPower(_) => "net_power",
    }
}

/// Unix time now, s.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Registers the counters of events that may not have happened yet at 0, so that a dashboard
/// or an alert on them has a series from the start (`rate()` of an absent series is no data).
pub fn register_zeros() {
    metrics::gauge!(SIGNER_HELD, "what" => "votes").set(0.0);
    for what in ["block", "tx"] {
        metrics::counter!(LEDGER_REJECTED, "what" => what, "reason" => "none").absolute(0);
    }
    for c in [
        LEDGER_PRODUCED,
        LEDGER_RECEIVED,
        LEDGER_STORE_ERRORS,
        BUS_CONNECTS,
        BUS_MALFORMED,
        BUS_DUPLICATES,
        MARKET_OFFERS,
        MARKET_PURCHASES,
        MARKET_TRADES,
        MARKET_TRADED_WH,
        MARKET_RELEASES,
        MARKET_DELIVERIES,
        MARKET_FAILED_DELIVERIES,
        NET_POWER_SENT,
        NET_POWER_REFUSED,
        CLAIMS_UNSIGNED,
    ] {
        metrics::counter!(c).absolute(0);
    }
    for phase in ["commit", "reveal"] {
        metrics::counter!(MARKET_BIDS, "phase" => phase).absolute(0);
    }
    for result in ["accepted", "rejected"] {
        metrics::counter!(METER_MESSAGES, "result" => result).absolute(0);
    }
    metrics::gauge!(MARKET_LAST_PRICE).set(0.0);
}

/// Describes the actors' metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        DAYAHEAD_SESSIONS,
        "Day-ahead ADMM sessions ended, by result (finished, failed)."
    );
    describe_gauge!(
        DAYAHEAD_ITERATIONS,
        "Iterations of the last finished day-ahead ADMM session."
    );
    describe_gauge!(
        DAYAHEAD_PRIMAL,
        "Final primal residual of the last finished day-ahead session, W."
    );
    describe_counter!(
        DAYAHEAD_PROPOSALS_REJECTED,
        "Day-ahead proposals from the bus refused, by reason."
    );
    describe_counter!(
        DAYAHEAD_READINGS,
        "Signed interval meter readings made for billing."
    );
    describe_gauge!(
        DAYAHEAD_SETPOINT,
        "Battery set-point the day-ahead plan asks for now, W (positive = discharge)."
    );
    describe_gauge!(
        DAYAHEAD_SCHEDULED_NET,
        "Grid exchange the day-ahead plan schedules now, held by the battery, W (positive = import)."
    );
    describe_counter!(
        DEVICE_POLLS,
        "Device polls by device and result (ok, error)."
    );
    describe_gauge!(DEVICE_UP, "1 while the device's values are fresh, else 0.");
    describe_gauge!(
        DEVICE_LAST_VALUE,
        Unit::Seconds,
        "Unix time of the device's last valid value (age = time() - this)."
    );
    describe_counter!(
        DEVICE_RECONNECTS,
        "Link (re)connections of the meter (Modbus links: gridlet_modbus_connects_total)."
    );
    describe_counter!(
        METER_MESSAGES,
        "Meter telegrams or MQTT messages by result (accepted, rejected)."
    );
    describe_gauge!(PV_POWER, "PV AC power, W.");
    describe_gauge!(PV_ENERGY, "PV lifetime energy, Wh.");
    describe_gauge!(BATTERY_SOC, "Battery state of charge, %.");
    describe_gauge!(BATTERY_POWER, "Battery power, W (positive = discharge).");
    describe_gauge!(BATTERY_ENERGY, "Energy the battery holds, Wh.");
    describe_gauge!(
        BATTERY_SAFE_STATE,
        "1 while the battery is held from discharging for lack of fresh data."
    );
    describe_gauge!(
        GRID_POWER,
        "Grid power at the meter, W (positive = import)."
    );
    describe_gauge!(
        GRID_IMPORT,
        "Energy imported from the grid (meter counter), Wh."
    );
    describe_gauge!(
        GRID_EXPORT,
        "Energy exported to the grid (meter counter), Wh."
    );
    describe_gauge!(LEDGER_HEIGHT, "Height of this node's head block.");
    describe_gauge!(LEDGER_FINALIZED, "Height of the last quorum-final block.");
    describe_counter!(LEDGER_FINALIZED_BLOCKS, "Blocks that became quorum-final.");
    describe_gauge!(
        FINALITY_CHECKPOINT,
        "The checkpoint the finality gadget is deciding."
    );
    describe_gauge!(
        FINALITY_ROUND,
        "The round of the checkpoint being decided (0 when all is well)."
    );
    describe_gauge!(LEDGER_SLOT, "Current slot on the community clock.");
    describe_counter!(LEDGER_PRODUCED, "Blocks this node produced.");
    describe_counter!(LEDGER_RECEIVED, "Blocks received from peers and committed.");
    describe_gauge!(
        SIGNER_HELD,
        "1 while this node holds back its signatures (what: votes) because its record of what it signed was missing or damaged."
    );
    describe_counter!(
        LEDGER_REJECTED,
        "Blocks and transactions refused, by what (block, tx) and reason (the error kind)."
    );
    describe_counter!(
        LEDGER_STORE_ERRORS,
        "Block-store operations that failed (full disk, I/O error, damaged store); nothing they carried was acknowledged."
    );
    describe_gauge!(LEDGER_MEMPOOL, "Transactions waiting in the mempool.");
    describe_histogram!(
        LEDGER_VALIDATION_SECONDS,
        Unit::Seconds,
        "Time to validate and commit a received block."
    );
    describe_gauge!(
        LEDGER_SYNC_LAG,
        "Highest block height seen from peers minus this node's head height."
    );
    describe_counter!(MARKET_OFFERS, "Sale offers this home made.");
    describe_counter!(MARKET_PURCHASES, "Purchases this home made.");
    describe_counter!(
        MARKET_BIDS,
        "Sealed-bid transactions this home sent, by phase."
    );
    describe_counter!(MARKET_TRADES, "Trades on the community chain.");
    describe_counter!(
        MARKET_TRADED_WH,
        "Energy traded on the community chain, Wh."
    );
    describe_gauge!(
        MARKET_LAST_PRICE,
        "Price of the latest trade, micro-credits per kWh."
    );
    describe_gauge!(MARKET_ESCROW, "Micro-credits held in escrow on the chain.");
    describe_gauge!(MARKET_BALANCE, "This home's balance, micro-credits.");
    describe_counter!(
        MARKET_RELEASES,
        "Release orders passed to this home's battery."
    );
    describe_counter!(
        MARKET_DELIVERIES,
        "Deliveries this home's battery receipted."
    );
    describe_counter!(
        MARKET_FAILED_DELIVERIES,
        "Deliveries of less than the traded energy."
    );
    describe_counter!(
        NET_POWER_SENT,
        "Signed net power readings this home sent while a neighbour delivered to it."
    );
    describe_counter!(
        CLAIMS_UNSIGNED,
        "Attestations and receipts this home's signer (its battery, or the gateway's key) did \
         not sign: beyond what the battery measured, a trade it never saw begin, or no signer."
    );
    describe_counter!(
        NET_POWER_REFUSED,
        "Net power messages this home's battery refused (bad signature or replayed)."
    );
    describe_counter!(
        BUS_MESSAGES,
        "Community bus messages by direction (in, out) and kind."
    );
    describe_counter!(BUS_CONNECTS, "Community bus (re)connections.");
    describe_counter!(BUS_MALFORMED, "Community bus payloads that did not decode.");
    describe_counter!(BUS_DUPLICATES, "Duplicate bus messages dropped.");
}
