//! The bid book on disk: `bids.json` in the data dir, written durably (the salts inside are
//! what no peer can give back). The book itself is pure, in `gridlet_core::bids`.

use std::io::Write;
use std::path::{Path, PathBuf};

use gridlet_core::bids::BidBook;

/// Errors of the bid file.
#[derive(Debug, thiserror::Error)]
pub enum BidFileError {
    /// The file could not be read or written.
    #[error("bid file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a bid book.
    #[error("bid file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Loads the book from `dir` (empty if there is none).
pub fn load_bids(dir: &Path) -> Result<BidBook, BidFileError> {
    let path = dir.join("bids.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BidFileError::Corrupt {
            path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BidBook::default()),
        Err(source) => Err(BidFileError::Io { path, source }),
    }
}

/// Writes the book to `dir` durably: a temporary file, fsync, rename, fsync of the directory.
pub fn save_bids(book: &BidBook, dir: &Path) -> Result<(), BidFileError> {
    let path = dir.join("bids.json");
    let io = |source| BidFileError::Io {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(book).map_err(|e| io(std::io::Error::other(e)))?;
    write_durably(dir, "bids.json", &bytes).map_err(io)
}

/// Writes `dir/name` durably: a temporary file, fsync, rename over the old one, fsync of the
/// directory — after a crash the file is either the old or the new one, never half of each.
pub fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridlet_ledger::crypto::deterministic_key;
    use gridlet_ledger::{Hash32, MemberKey, Price, TxPayload, WattHours};

    #[test]
    fn a_second_bid_waits_for_the_next_round_and_the_book_survives_a_restart() {
        let chain = Hash32([9; 32]);
        let me = MemberKey::from_secret(&deterministic_key(1, 1));
        let mut book = BidBook::default();
        book.add(WattHours::new(1_000), Price::new(200_000), Hash32([5; 32]));
        book.add(WattHours::new(500), Price::new(100_000), Hash32([6; 32]));
        assert_eq!(book.step(&chain, &me, 20, 1).len(), 1);
        let dir = tempfile::tempdir().unwrap();
        save_bids(&book, dir.path()).unwrap();
        let mut back = load_bids(dir.path()).unwrap();
        assert_eq!(back, book);
        assert!(matches!(
            back.step(&chain, &me, 20, 21)[..],
            [TxPayload::BidCommit { round: 1, .. }]
        ));
        std::fs::write(dir.path().join("bids.json"), b"{").unwrap();
        assert!(matches!(
            load_bids(dir.path()),
            Err(BidFileError::Corrupt { .. })
        ));
    }
}
