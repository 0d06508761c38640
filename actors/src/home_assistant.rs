//! Home Assistant MQTT discovery: the gateway announces its sensors with retained config
//! messages under `<discovery_prefix>/sensor/<node_id>/<object_id>/config`, publishes their
//! values as one JSON state message, and its availability through the MQTT last will. The
//! payload builders are pure; [`spawn`] is the thin publisher.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

/// Where and as whom to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Discovery prefix (Home Assistant's default: `homeassistant`).
    pub discovery_prefix: String,
    /// Node id: letters, digits, `_` and `-` only.
    pub node_id: String,
    /// Device name shown in Home Assistant.
    pub name: String,
}

impl HaConfig {
    /// Topic of the state JSON.
    pub fn state_topic(&self) -> String {
        format!("gridlet/{}/state", self.node_id)
    }

    /// Topic of `online` / `offline`.
    pub fn availability_topic(&self) -> String {
        format!("gridlet/{}/availability", self.node_id)
    }
}

/// One sensor: object id, name, unit, device class, state class, JSON key of the state.
struct Sensor {
    object_id: &'static str,
    name: &'static str,
    unit: &'static str,
    device_class: Option<&'static str>,
    state_class: &'static str,
}

const SENSORS: [Sensor; 11] = [
    Sensor {
        object_id: "pv_power",
        name: "PV power",
        unit: "W",
        device_class: Some("power"),
        state_class: "measurement",
    },
    Sensor {
        object_id: "battery_soc",
        name: "Battery state of charge",
        unit: "%",
        device_class: Some("battery"),
        state_class: "measurement",
    },
    Sensor {
        object_id: "battery_power",
        name: "Battery power",
        unit: "W",
        device_class: Some("power"),
        state_class: "measurement",
    },
    Sensor {
        object_id: "grid_power",
        name: "Grid power",
        unit: "W",
        device_class: Some("power"),
        state_class: "measurement",
    },
    // The three counters Home Assistant's Energy dashboard asks for: solar production, grid
    // consumption and return to grid (Wh, never decreasing).
    Sensor {
        object_id: "pv_energy",
        name: "PV energy",
        unit: "Wh",
        device_class: Some("energy"),
        state_class: "total_increasing",
    },
    Sensor {
        object_id: "grid_import_energy",
        name: "Grid import",
        unit: "Wh",
        device_class: Some("energy"),
        state_class: "total_increasing",
    },
    Sensor {
        object_id: "grid_export_energy",
        name: "Grid export",
        unit: "Wh",
        device_class: Some("energy"),
        state_class: "total_increasing",
    },
    // The battery's two counters for the dashboard's home battery storage.
    Sensor {
        object_id: "battery_charge_energy",
        name: "Battery charge energy",
        unit: "Wh",
        device_class: Some("energy"),
        state_class: "total_increasing",
    },
    Sensor {
        object_id: "battery_discharge_energy",
        name: "Battery discharge energy",
        unit: "Wh",
        device_class: Some("energy"),
        state_class: "total_increasing",
    },
    Sensor {
        object_id: "energy_traded",
        name: "Energy traded",
        unit: "Wh",
        device_class: Some("energy"),
        state_class: "total_increasing",
    },
    Sensor {
        object_id: "credit_balance",
        name: "Credit balance",
        unit: "credits",
        device_class: None,
        state_class: "measurement",
    },
];

/// The retained discovery messages: `(topic, payload)`.
pub fn discovery(cfg: &HaConfig) -> Vec<(String, Value)> {
    let device = json!({
        "identifiers": [format!("gridlet_{}", cfg.node_id)],
        "name": cfg.name,
        "manufacturer": "gridlet",
        "model": "home-energy gateway",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    SENSORS
        .iter()
        .map(|s| {
            let mut payload = json!({
                "name": s.name,
                "unique_id": format!("gridlet_{}_{}", cfg.node_id, s.object_id),
                "object_id": format!("gridlet_{}_{}", cfg.node_id, s.object_id),
                "state_topic": cfg.state_topic(),
                "value_template": format!("{{{{ value_json.{} }}}}", s.object_id),
                "unit_of_measurement": s.unit,
                "state_class": s.state_class,
                // Unavailable when the gateway is offline, and also when this value is left out
                // of the state (never read, or stale): never a frozen or undefined value.
                "availability": [
                    {"topic": cfg.availability_topic()},
                    {
                        "topic": cfg.state_topic(),
                        "value_template": format!(
                            "{{{{ 'online' if value_json.{} is defined else 'offline' }}}}",
                            s.object_id
                        ),
                    },
                ],
                "availability_mode": "all",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
            });
            if let (Some(dc), Some(map)) = (s.device_class, payload.as_object_mut()) {
                map.insert("device_class".into(), json!(dc));
            }
            (
                format!(
                    "{}/sensor/{}/{}/config",
                    cfg.discovery_prefix, cfg.node_id, s.object_id
                ),
                payload,
            )
        })
        .collect()
}

/// The values of the sensors (missing or stale values are left out: Home Assistant then shows
/// that entity as unavailable, rather than an invented 0 or a frozen value).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HaState {
    /// PV power, W.
    pub pv_power: Option<f64>,
    /// Battery state of charge, %.
    pub battery_soc: Option<f64>,
    /// Battery power, W (positive = discharge).
    pub battery_power: Option<f64>,
    /// Grid power, W (positive = import).
    pub grid_power: Option<f64>,
    /// The inverter's lifetime PV energy, Wh.
    pub pv_energy: Option<f64>,
    /// The meter's import counter, Wh.
    pub grid_import: Option<f64>,
    /// The meter's export counter, Wh.
    pub grid_export: Option<f64>,
    /// Energy into the battery since the gateway started, Wh.
    pub battery_charge: Option<f64>,
    /// Energy out of the battery since the gateway started, Wh.
    pub battery_discharge: Option<f64>,
    /// Energy this home sold and bought, Wh.
    pub energy_traded: Option<u64>,
    /// Balance, micro-credits.
    pub balance: Option<u64>,
}

/// The state JSON.
pub fn state_payload(s: &HaState) -> Value {
    let mut v = serde_json::Map::new();
    let mut put = |k: &str, x: Option<Value>| {
        if let Some(x) = x {
            v.insert(k.into(), x);
        }
    };
    put("pv_power", s.pv_power.map(|x| json!(x.round())));
    put(
        "battery_soc",
        s.battery_soc.map(|x| json!((x * 10.0).round() / 10.0)),
    );
    put("battery_power", s.battery_power.map(|x| json!(x.round())));
    put("grid_power", s.grid_power.map(|x| json!(x.round())));
    put("pv_energy", s.pv_energy.map(|x| json!(x.round())));
    put(
        "grid_import_energy",
        s.grid_import.map(|x| json!(x.round())),
    );
    put(
        "grid_export_energy",
        s.grid_export.map(|x| json!(x.round())),
    );
    put(
        "battery_charge_energy",
        s.battery_charge.map(|x| json!(x.round())),
    );
    put(
        "battery_discharge_energy",
        s.battery_discharge.map(|x| json!(x.round())),
    );
    put("energy_traded", s.energy_traded.map(|x| json!(x)));
    put(
        "credit_balance",
        s.balance.map(|x| json!(x as f64 / 1_000_000.0)),
    );
    Value::Object(v)
}

/// Publishes discovery (on every connection: a broker restart loses non-persisted retained
/// messages), availability, and the state from `read` every `every`, forever.
pub fn spawn(
    cfg: HaConfig,
    every: Duration,
    read: impl Fn() -> HaState + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut options =
            MqttOptions::new(format!("gridlet-ha-{}", cfg.node_id), &cfg.host, cfg.port);
        options.set_keep_alive(Duration::from_secs(15));
        options.set_last_will(LastWill::new(
            cfg.availability_topic(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut tick = tokio::time::interval(every);
        let mut reconnect = gridlet_drivers::backoff::BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(32),
        }
        .schedule();
        loop {
            tokio::select! {
                polled = eventloop.poll() => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        reconnect.connected();
                        for (topic, payload) in discovery(&cfg) {
                            let _ = client.try_publish(topic, QoS::AtLeastOnce, true, payload.to_string());
                        }
                        let _ = client.try_publish(cfg.availability_topic(), QoS::AtLeastOnce, true, "online");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let delay = reconnect.failed().max(Duration::from_millis(500));
                        tracing::debug!(%e, "Home Assistant broker unreachable");
                        tokio::time::sleep(delay).await;
                    }
                },
                _ = tick.tick() => {
                    let body = state_payload(&read()).to_string();
                    let _ = client.try_publish(cfg.state_topic(), QoS::AtMostOnce, false, body);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HaConfig {
        HaConfig {
            host: "localhost".into(),
            port: 1883,
            discovery_prefix: "homeassistant".into(),
            node_id: "home-12".into(),
            name: "gridlet home-12".into(),
        }
    }

    #[test]
    fn discovery_payloads_carry_the_fields_home_assistant_documents() {
        let msgs = discovery(&cfg());
        assert_eq!(msgs.len(), 11);
        let mut ids = std::collections::BTreeSet::new();
        for (topic, p) in &msgs {
            // <discovery_prefix>/<component>/<node_id>/<object_id>/config
            let parts: Vec<&str> = topic.split('/').collect();
            assert_eq!(parts.len(), 5, "{topic}");
            assert_eq!(
                (parts[0], parts[1], parts[2], parts[4]),
                ("homeassistant", "sensor", "home-12", "config")
            );
            assert!(ids.insert(p["unique_id"].as_str().unwrap().to_owned()));
            assert_eq!(p["state_topic"], "gridlet/home-12/state");
            assert!(p["value_template"]
                .as_str()
                .unwrap()
                .contains(&format!("value_json.{}", parts[3])));
            assert!(p["unit_of_measurement"].is_string());
            assert_eq!(
                p["availability"][0]["topic"],
                "gridlet/home-12/availability"
            );
            // A value missing from the state (stale) makes its entity unavailable.
            assert_eq!(p["availability_mode"], "all");
            assert_eq!(p["availability"][1]["topic"], "gridlet/home-12/state");
            assert!(p["availability"][1]["value_template"]
                .as_str()
                .unwrap()
                .contains(&format!("value_json.{} is defined", parts[3])));
            assert_eq!(p["device"]["identifiers"][0], "gridlet_home-12");
            assert!(p["device"]["name"].is_string());
        }
        let by = |id: &str| &msgs.iter().find(|(t, _)| t.contains(id)).unwrap().1;
        assert_eq!(by("/pv_power/")["device_class"], "power");
        assert_eq!(by("/pv_power/")["unit_of_measurement"], "W");
        assert_eq!(by("/battery_soc/")["device_class"], "battery");
        assert_eq!(by("/battery_soc/")["unit_of_measurement"], "%");
        assert_eq!(by("/energy_traded/")["device_class"], "energy");
        assert_eq!(by("/energy_traded/")["state_class"], "total_increasing");
        assert!(by("/credit_balance/").get("device_class").is_none());
        // What the Energy dashboard needs: energy counters that only grow.
        for id in [
            "/pv_energy/",
            "/grid_import_energy/",
            "/grid_export_energy/",
            "/battery_charge_energy/",
            "/battery_discharge_energy/",
        ] {
            assert_eq!(by(id)["device_class"], "energy", "{id}");
            assert_eq!(by(id)["state_class"], "total_increasing", "{id}");
            assert_eq!(by(id)["unit_of_measurement"], "Wh", "{id}");
        }
    }

    #[test]
    fn the_state_leaves_out_what_is_not_known() {
        let v = state_payload(&HaState {
            pv_power: Some(1234.4),
            battery_soc: Some(55.55),
            grid_import: Some(12_345.6),
            balance: Some(2_500_000),
            battery_discharge: Some(700.4),
            ..HaState::default()
        });
        assert_eq!(v["battery_discharge_energy"], 700.0);
        assert!(v.get("battery_charge_energy").is_none());
        assert_eq!(v["pv_power"], 1234.0);
        assert_eq!(v["battery_soc"], 55.6);
        assert_eq!(v["credit_balance"], 2.5);
        assert_eq!(v["grid_import_energy"], 12_346.0);
        assert!(v.get("grid_power").is_none());
    }
}
