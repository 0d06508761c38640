//! Hardware-in-the-loop tooling: device simulators, fault injection and community scenarios.
//!
//! Development tooling only; real actors never depend on it. The simulators reuse the drivers'
//! codecs (the SunSpec model tables, the DSMR telegram writer) so that what they serve is
//! exactly what the drivers parse — and the interop tests check both against foreign peers.

pub mod community;
pub mod device_rows;
pub mod devices;
pub mod dsmr_sim;
pub mod faults;
pub mod home;
pub mod lockstep;
pub mod modbus_sim;
pub mod mqtt_sim;
pub mod pty;
pub mod reference;
pub mod relay;
pub mod scenario;
pub mod signing_device;

pub use devices::SimDevice;
pub use faults::FaultPlan;
pub use modbus_sim::ModbusSim;
pub use scenario::Scenario;
