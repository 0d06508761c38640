//! Metric names of the drivers (the `metrics` facade; the gateway installs the exporter) and
//! their descriptions, so every metric served has HELP and TYPE lines.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Modbus requests by link and result (`ok`, `exception`, `timeout`, `transport_error`).
pub const MODBUS_REQUESTS: &str = "gridlet_modbus_requests_total";
/// Modbus request round trips.
pub const MODBUS_REQUEST_SECONDS: &str = "gridlet_modbus_request_duration_seconds";
/// Connections opened.
pub const MODBUS_CONNECTS: &str = "gridlet_modbus_connects_total";
/// Connection attempts that failed.
pub const MODBUS_CONNECT_FAILURES: &str = "gridlet_modbus_connect_failures_total";
/// 1 while the last request succeeded.
pub const MODBUS_UP: &str = "gridlet_modbus_up";
/// Current reconnect backoff.
pub const MODBUS_BACKOFF_SECONDS: &str = "gridlet_modbus_backoff_seconds";

/// Describes the drivers' metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        MODBUS_REQUESTS,
        "Modbus requests by link and result (ok, exception, timeout, transport_error)."
    );
    describe_histogram!(
        MODBUS_REQUEST_SECONDS,
        Unit::Seconds,
        "Modbus request round-trip time by link."
    );
    describe_counter!(MODBUS_CONNECTS, "Modbus connections opened by link.");
    describe_counter!(
        MODBUS_CONNECT_FAILURES,
        "Modbus connection attempts that failed, by link."
    );
    describe_gauge!(
        MODBUS_UP,
        "1 while the link's last request succeeded, 0 after a failure."
    );
    describe_gauge!(
        MODBUS_BACKOFF_SECONDS,
        Unit::Seconds,
        "Current reconnect backoff of the link (0 when healthy)."
    );
}
