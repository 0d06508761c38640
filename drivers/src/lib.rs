//! Device drivers: SunSpec Modbus decoding and discovery, the DSMR P1 telegram parser, the MQTT
//! meter, and thin async transports over tokio-modbus, tokio-serial and rumqttc.
//!
//! Owns pure decoders (no I/O: [`sunspec`], [`dsmr`], [`mqtt_meter`] payloads, [`backoff`]) and
//! the transports that feed them ([`modbus`]). Must not depend on the ledger or make business
//! decisions; readings carry their quality ([`quality`]) and units in their names.

pub mod backoff;
pub mod device;
pub mod dsmr;
pub mod metrics;
pub mod modbus;
pub mod mqtt_meter;
pub mod quality;
pub mod signer;
pub mod sunspec;
