//! Device drivers: SunSpec Modbus decoding, the DSMR P1 telegram parser and the MQTT meter.
//!
//! Owns pure decoders and thin async transports; must not depend on the ledger or make
//! business decisions. Filled by the drivers issue; empty until then.
