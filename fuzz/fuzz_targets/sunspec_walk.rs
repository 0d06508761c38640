//! The SunSpec discovery walk fed arbitrary device answers: never panics, never asks for more
//! than 125 registers, always terminates.
#![no_main]

use gridlet_drivers::sunspec::{Scanner, Step, WordOrder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let words: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    let mut stream = words.iter().copied();
    let order = if data.first().is_some_and(|b| b & 1 == 1) {
        WordOrder::LittleEndian
    } else {
        WordOrder::BigEndian
    };
    let mut s = Scanner::new(order);
    let mut steps = 0;
    loop {
        match s.step() {
            Step::Done => break,
            Step::Read { count, .. } => {
                assert!(count <= 125);
                steps += 1;
                assert!(steps < 10_000, "walk does not terminate");
                // The first answer word chooses success (odd) or failure (even): the device's
                // answers are the remaining words, as many as asked, while they last.
                match stream.next() {
                    Some(w) if w & 1 == 1 => {
                        let answer: Vec<u16> = stream.by_ref().take(usize::from(count)).collect();
                        s.feed(Some(&answer));
                    }
                    _ => s.feed(None),
                }
            }
        }
    }
    if let Some(result) = s.finish() {
        for m in &result.models {
            let _ = serde_json_len(m);
        }
    }
});

fn serde_json_len<T: std::fmt::Debug>(v: &T) -> usize {
    format!("{v:?}").len()
}
