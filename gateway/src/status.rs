//! What the running gateway exposes to the API and metrics: the device and market statuses,
//! and the one Prometheus recorder.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use gridlet_actors::devices::{MeterStatus, PvStatus};
use gridlet_actors::market_actor::MarketStatus;

/// What the API and metrics read from the running gateway.
#[derive(Clone, Default)]
pub struct Statuses {
    /// Battery.
    pub battery: Option<Arc<Mutex<gridlet_actors::battery::BatteryStatus>>>,
    /// PV inverter.
    pub pv: Option<Arc<Mutex<PvStatus>>>,
    /// Grid meter.
    pub meter: Option<Arc<Mutex<MeterStatus>>>,
    /// Market counters.
    pub market: Arc<Mutex<MarketStatus>>,
}

/// Installs the one Prometheus recorder of this process and describes every metric.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(gridlet_drivers::metrics::MODBUS_REQUEST_SECONDS.into()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(gridlet_actors::metrics::LEDGER_VALIDATION_SECONDS.into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
        )?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    gridlet_drivers::metrics::describe();
    gridlet_actors::metrics::describe();
    gridlet_actors::metrics::register_zeros();
    Ok(handle)
}
