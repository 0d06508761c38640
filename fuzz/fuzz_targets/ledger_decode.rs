//! Ledger decoding on arbitrary bytes: never panics, and whatever decodes re-encodes to the
//! same bytes (one encoding per value, so no malleable re-encodings).
#![no_main]

use gridlet_ledger::{Block, SignedTransaction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTransaction::decode(data) {
        assert_eq!(tx.bytes(), data);
    }
    if let Ok(block) = Block::decode(data) {
        assert_eq!(block.encode(), data);
    }
});
