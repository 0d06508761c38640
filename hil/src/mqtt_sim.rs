//! An MQTT meter: publishes Tasmota or Shelly Gen2 payloads to a broker at an interval, with a
//! share of malformed payloads when asked.

use std::time::Duration;

use gridlet_drivers::mqtt_meter::PayloadFormat;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde::Deserialize;

use crate::faults::Dice;

/// An MQTT meter in a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttMeterSpec {
    /// Broker `host:port`.
    pub broker: String,
    /// Topic to publish on.
    pub topic: String,
    /// Payload format.
    pub format: PayloadFormat,
    /// Time between messages, ms.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Grid power to report, W (positive = import).
    #[serde(default)]
    pub power_w: i32,
    /// Percent of messages sent malformed.
    #[serde(default)]
    pub malformed_percent: u32,
}

fn default_interval() -> u64 {
    1000
}

/// The payload of one message.
pub fn payload(format: PayloadFormat, power_w: i32, import_wh: u64, export_wh: u64) -> String {
    match format {
        PayloadFormat::Tasmota => format!(
            r#"{{"Time":"2026-01-01T12:00:00","ENERGY":{{"TotalStartTime":"2025-01-01T00:00:00","Total":{:.3},"TotalExport":{:.3},"Yesterday":1.0,"Today":0.5,"Power":{},"Voltage":230,"Current":{:.3}}}}}"#,
            import_wh as f64 / 1000.0,
            export_wh as f64 / 1000.0,
            power_w,
            f64::from(power_w.abs()) / 230.0
        ),
        PayloadFormat::Shelly => format!(
            r#"{{"src":"shellypro3em-gridlet","method":"NotifyStatus","params":{{"ts":1.0,"em:0":{{"id":0,"a_act_power":{:.1},"total_act_power":{:.1}}},"emdata:0":{{"id":0,"total_act":{:.2},"total_act_ret":{:.2}}}}}}}"#,
            f64::from(power_w) / 3.0,
            f64::from(power_w),
            import_wh as f64,
            export_wh as f64
        ),
    }
}

/// Publishes until the task is dropped.
pub async fn run_meter(
    spec: MqttMeterSpec,
    seed: u64,
) -> Result<(), crate::scenario::ScenarioError> {
    let (host, port) = spec
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_owned(), p)))
        .ok_or_else(|| {
            crate::scenario::ScenarioError::Invalid(format!(
                "broker {:?} is not host:port",
                spec.broker
            ))
        })?;
    let mut options = MqttOptions::new(format!("gridlet-hil-meter-{seed}"), host, port);
    options.set_keep_alive(Duration::from_secs(15));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let dice = Dice::new(seed);
    // Counted in mWh: a second at 1 kW is 0.28 Wh, which whole-Wh steps would drop every time.
    let (mut import_mwh, mut export_mwh) = (1_000_000_000u64, 50_000_000u64);
    let interval = Duration::from_millis(spec.interval_ms.max(10));
    let mut tick = tokio::time::interval(interval);
    loop {
        // The event loop must be polled continuously; it lives in this task so that stopping
        // the meter stops its connection too.
        tokio::select! {
            polled = eventloop.poll() => {
                if polled.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let mwh = u64::from(spec.power_w.unsigned_abs()) * interval.as_millis() as u64 / 3_600;
        if spec.power_w >= 0 {
            import_mwh += mwh;
        } else {
            export_mwh += mwh;
        }
        let body = if dice.percent() < spec.malformed_percent {
            match dice.next() % 3 {
                0 => "{\"ENERGY\": {\"Power\": \"n/a\"".to_owned(),
                1 => "\u{0}\u{1}garbage".to_owned(),
                _ => "{\"POWER\":\"ON\"}".to_owned(),
            }
        } else {
            payload(
                spec.format,
                spec.power_w,
                import_mwh / 1000,
                export_mwh / 1000,
            )
        };
        // A full request queue means the broker is away; skip this sample rather than block.
        let _ = client.try_publish(spec.topic.clone(), QoS::AtMostOnce, false, body);
    }
}
