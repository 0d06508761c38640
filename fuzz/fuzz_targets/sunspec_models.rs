//! A device's register answers decoded as every SunSpec model the drivers know, then read and
//! serialised as the gateway does (`/api/devices`): never panics; text never holds more
//! characters than the bytes of the registers it came from (an invalid byte reads as one
//! U+FFFD).
#![no_main]

use gridlet_drivers::sunspec::model::model_ids;
use gridlet_drivers::sunspec::{decode_model, Value, WordOrder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let ids: Vec<u16> = model_ids().collect();
    let Some(id) = ids.get(usize::from(pick) % ids.len().max(1)).copied() else {
        return;
    };
    let order = if pick & 0x80 != 0 {
        WordOrder::LittleEndian
    } else {
        WordOrder::BigEndian
    };
    let mut regs = vec![id, u16::try_from(rest.len() / 2).unwrap_or(u16::MAX)];
    regs.extend(
        rest.chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])),
    );
    if let Some(m) = decode_model(40_002, &regs, order) {
        for v in m.points.points.values() {
            let _ = (v.as_f64(), v.as_i64());
            if let Value::Text(t) = v {
                assert!(t.chars().count() <= 2 * rest.len(), "{t:?}");
            }
        }
        let _ = serde_json::to_string(&m.points.points);
    }
});
