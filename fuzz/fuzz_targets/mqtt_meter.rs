//! MQTT meter payloads (Tasmota and Shelly): never panics, and what decodes is finite — a
//! reading the strategy could act on is never infinite or NaN.
#![no_main]

use gridlet_drivers::mqtt_meter::{decode, PayloadFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [PayloadFormat::Tasmota, PayloadFormat::Shelly] {
        if let Ok(u) = decode(format, data) {
            for x in [u.power_w, u.import_wh, u.export_wh].into_iter().flatten() {
                assert!(x.is_finite(), "{format:?} decoded {x} from {data:?}");
            }
        }
    }
});
