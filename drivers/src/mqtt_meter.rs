//! The MQTT meter: payload decoders for Tasmota `tele/<topic>/SENSOR` (ENERGY) and Shelly Gen2
//! EM status (`em:0` / `emdata:0`, plain or inside a `NotifyStatus`), and a subscriber that
//! keeps the latest values with their age.
//!
//! Every value has a max age: MQTT brokers keep retained values forever, and Victron dropped
//! retained state deliberately, so a value's age — not its presence — says whether it counts.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::BackoffPolicy;
use crate::quality::Reading;

/// The payload format of a meter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// Tasmota telemetry: `{"ENERGY": {"Total": kWh, "Power": W | [W…], "TotalExport"?: kWh}}`.
    Tasmota,
    /// Shelly Gen2 EM status: `total_act_power` (W), `total_act` / `total_act_ret` (Wh).
    Shelly,
}

/// What one message said. Absent fields were not in this message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeterUpdate {
    /// Grid power, W (positive = import).
    pub power_w: Option<f64>,
    /// Imported energy, Wh.
    pub import_wh: Option<f64>,
    /// Exported energy, Wh.
    pub export_wh: Option<f64>,
}

/// A payload that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// JSON without any field this format knows.
    #[error("payload has no {format} meter fields")]
    NoFields {
        /// The expected format.
        format: &'static str,
    },
    /// A field with a value that is not a finite number.
    #[error("field {field} is not a finite number")]
    BadNumber {
        /// The field.
        field: &'static str,
    },
}

fn number(v: &Json, field: &'static str) -> Result<Option<f64>, PayloadError> {
    match v {
        Json::Null => Ok(None),
        Json::Number(n) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or(PayloadError::BadNumber { field }),
        // Multi-channel Tasmota devices report arrays: the meter's total is their sum.
        Json::Array(items) => {
            let mut sum = 0.0;
            for item in items {
                sum += number(item, field)?.ok_or(PayloadError::BadNumber { field })?;
            }
            Ok(Some(sum))
        }
        _ => Err(PayloadError::BadNumber { field }),
    }
}

/// Decodes one payload.
pub fn decode(format: PayloadFormat, payload: &[u8]) -> Result<MeterUpdate, PayloadError> {
    let json: Json =
        serde_json::from_slice(payload).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let update = match format {
        PayloadFormat::Tasmota => {
            let energy = json
                .get("ENERGY")
                .ok_or(PayloadError::NoFields { format: "tasmota" })?;
            let get = |k: &str| energy.get(k).unwrap_or(&Json::Null);
            let export = if energy.get("TotalExport").is_some() {
                number(get("TotalExport"), "TotalExport")?
            } else {
                number(get("Export"), "Export")?
            };
            MeterUpdate {
                power_w: number(get("Power"), "Power")?,
                import_wh: number(get("Total"), "Total")?.map(|kwh| kwh * 1000.0),
                export_wh: export.map(|kwh| kwh * 1000.0),
            }
        }
        PayloadFormat::Shelly => {
            // Plain status, or an RPC notification carrying it in params.
            let mut objects = vec![&json];
            if let Some(params) = json.get("params").and_then(Json::as_object) {
                objects.extend(params.values());
            }
            let mut u = MeterUpdate::default();
            for o in objects {
                if let Some(v) = o.get("total_act_power") {
                    u.power_w = number(v, "total_act_power")?;
                }
                if let Some(v) = o.get("total_act") {
                    u.import_wh = number(v, "total_act")?;
                }
                if let Some(v) = o.get("total_act_ret") {
                    u.export_wh = number(v, "total_act_ret")?;
                }
            }
            u
        }
    };
    // A sum of channels or a kWh → Wh conversion can leave f64's range.
    for (value, field) in [
        (update.power_w, "power"),
        (update.import_wh, "import"),
        (update.export_wh, "export"),
    ] {
        if value.is_some_and(|x| !x.is_finite()) {
            return Err(PayloadError::BadNumber { field });
        }
    }
    if update == MeterUpdate::default() {
        return Err(PayloadError::NoFields {
            format: match format {
                PayloadFormat::Tasmota => "tasmota",
                PayloadFormat::Shelly => "shelly",
            },
        });
    }
    Ok(update)
}

/// Settings of an MQTT meter subscription.
#[derive(Debug, Clone)]
pub struct MqttMeterConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Stable client id.
    pub client_id: String,
    /// Topic (e.g. `tele/meter/SENSOR` or `shellypro3em/status/em:0`).
    pub topic: String,
    /// Payload format.
    pub format: PayloadFormat,
    /// A value older than this is stale.
    pub max_age: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffPolicy,
}

/// The latest state of the meter, as the subscriber publishes it.
#[derive(Debug, Clone, Default)]
pub struct MeterState {
    /// Latest power and when it came.
    pub power_w: Option<(f64, Instant)>,
    /// Latest import counter.
    pub import_wh: Option<(f64, Instant)>,
    /// Latest export counter.
    pub export_wh: Option<(f64, Instant)>,
    /// Messages decoded.
    pub messages: u64,
    /// Messages rejected (malformed).
    pub rejected: u64,
    /// The last rejection.
    pub last_error: Option<String>,
    /// Connection (re)establishments.
    pub connects: u64,
    /// Whether the broker connection is up.
    pub connected: bool,
}

impl MeterState {
    /// A value's quality at `now`, given the max age.
    pub fn reading(value: Option<(f64, Instant)>, now: Instant, max_age: Duration) -> Reading<f64> {
        match value {
            None => Reading::CommError {
                reason: "no value received yet".into(),
            },
            Some((v, at)) if now.duration_since(at) > max_age => Reading::Stale {
                value: v,
                age: now.duration_since(at),
            },
            Some((v, _)) => Reading::Valid { value: v },
        }
    }
}

/// Runs the subscription forever, publishing state changes on the returned channel.
pub fn spawn(cfg: MqttMeterConfig) -> (watch::Receiver<MeterState>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(MeterState::default());
    let task = tokio::spawn(async move { run(cfg, tx).await });
    (rx, task)
}

async fn run(cfg: MqttMeterConfig, tx: watch::Sender<MeterState>) {
    let mut options = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    options.set_keep_alive(Duration::from_secs(15));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut reconnect = cfg.backoff.schedule();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                reconnect.connected();
                tx.send_modify(|s| {
                    s.connects += 1;
                    s.connected = true;
                });
                // Subscribing on every (re)connection: clean sessions forget subscriptions.
                if let Err(e) = client.try_subscribe(cfg.topic.clone(), QoS::AtMostOnce) {
                    tracing::warn!(%e, topic = %cfg.topic, "cannot subscribe");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now = Instant::now();
                match decode(cfg.format, &p.payload) {
                    Ok(u) => tx.send_modify(|s| {
                        s.messages += 1;
                        if let Some(v) = u.power_w {
                            s.power_w = Some((v, now));
                        }
                        if let Some(v) = u.import_wh {
                            s.import_wh = Some((v, now));
                        }
                        if let Some(v) = u.export_wh {
                            s.export_wh = Some((v, now));
                        }
                    }),
                    Err(e) => {
                        tracing::debug!(%e, topic = %p.topic, "meter payload rejected");
                        tx.send_modify(|s| {
                            s.rejected += 1;
                            s.last_error = Some(e.to_string());
                        });
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                // rumqttc has no backoff of its own: polling errors in a tight loop saturate a core.
                tx.send_modify(|s| s.connected = false);
                let delay = reconnect.failed().max(Duration::from_millis(100));
                tracing::warn!(%e, retry_in_ms = delay.as_millis() as u64, "MQTT meter connection failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasmota_energy_with_scalar_and_array_power() {
        let p = br#"{"Time":"2024-05-01T12:00:00","ENERGY":{"TotalStartTime":"2023-01-01T00:00:00","Total":1234.567,"Yesterday":3.2,"Today":1.1,"Power":[400,350,-50],"Voltage":230}}"#;
        let u = decode(PayloadFormat::Tasmota, p).unwrap();
        assert_eq!(u.power_w, Some(700.0));
        assert_eq!(u.import_wh, Some(1_234_567.0));
        assert_eq!(u.export_wh, None);
        let p = br#"{"ENERGY":{"Total":1.5,"Power":12,"TotalExport":0.25}}"#;
        assert_eq!(
            decode(PayloadFormat::Tasmota, p).unwrap().export_wh,
            Some(250.0)
        );
    }

    #[test]
    fn shelly_status_and_notification() {
        let p = br#"{"id":0,"a_act_power":100.5,"total_act_power":-812.25}"#;
        assert_eq!(
            decode(PayloadFormat::Shelly, p).unwrap().power_w,
            Some(-812.25)
        );
        let p = br#"{"src":"shellypro3em","method":"NotifyStatus","params":{"ts":1.0,"emdata:0":{"id":0,"total_act":5000.5,"total_act_ret":120.0}}}"#;
        let u = decode(PayloadFormat::Shelly, p).unwrap();
        assert_eq!(u.import_wh, Some(5000.5));
        assert_eq!(u.export_wh, Some(120.0));
    }

    #[test]
    fn numbers_beyond_f64_after_summing_or_converting_are_refused() {
        let p = br#"{"ENERGY":{"Total":1.0,"Power":[1e308,1e308]}}"#;
        assert!(matches!(
            decode(PayloadFormat::Tasmota, p),
            Err(PayloadError::BadNumber { field: "power" })
        ));
        let p = br#"{"ENERGY":{"Total":1e306,"Power":5}}"#;
        assert!(matches!(
            decode(PayloadFormat::Tasmota, p),
            Err(PayloadError::BadNumber { field: "import" })
        ));
    }

    #[test]
    fn malformed_payloads_are_errors_not_zeros() {
        assert!(matches!(
            decode(PayloadFormat::Tasmota, b"{nope"),
            Err(PayloadError::NotJson(_))
        ));
        assert!(matches!(
            decode(PayloadFormat::Tasmota, br#"{"POWER":"ON"}"#),
            Err(PayloadError::NoFields { .. })
        ));
        assert!(matches!(
            decode(PayloadFormat::Tasmota, br#"{"ENERGY":{"Power":"lots"}}"#),
            Err(PayloadError::BadNumber { field: "Power" })
        ));
        assert!(matches!(
            decode(PayloadFormat::Shelly, br#"{"id":0}"#),
            Err(PayloadError::NoFields { .. })
        ));
    }

    #[test]
    fn values_go_stale_after_their_max_age() {
        let t0 = Instant::now();
        let max = Duration::from_secs(5);
        assert!(MeterState::reading(Some((1.0, t0)), t0 + Duration::from_secs(4), max).is_valid());
        assert!(matches!(
            MeterState::reading(Some((1.0, t0)), t0 + Duration::from_secs(6), max),
            Reading::Stale { .. }
        ));
        assert!(matches!(
            MeterState::reading(None, t0, max),
            Reading::CommError { .. }
        ));
    }
}
