//! DSMR framing and parsing on arbitrary bytes: never panics; whatever `check` frames, `parse`
//! either accepts with a matching CRC or rejects with an error.
#![no_main]

use gridlet_drivers::dsmr::{check, crc16_arc, parse, CrcKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((start, end))) = check(data) {
        assert!(start < end && end <= data.len());
        if let Ok(t) = parse(&data[start..end], CrcKind::Arc) {
            if t.crc_ok == Some(true) {
                let frame = &data[start..end];
                let bang = frame.iter().rposition(|b| *b == b'!').unwrap();
                let field = std::str::from_utf8(&frame[bang + 1..]).unwrap().trim_end();
                assert_eq!(
                    u16::from_str_radix(field, 16).unwrap(),
                    crc16_arc(&frame[..=bang])
                );
            }
        }
    }
    let _ = parse(data, CrcKind::X25);
});
