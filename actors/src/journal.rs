//! The battery release journal: what no peer can give back, so it is written with a real fsync
//! before the battery is commanded (and again after it finished).
//!
//! Rule: a trade's energy is released at most once, ever. `begin` is durable before the command
//! goes to the battery; after a restart, a trade with a `begin` and no `end` is *not* commanded
//! again — its delivery is reported from what the battery metered instead. Only trades the
//! ledger released in quorum-final blocks are ever begun.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use gridlet_ledger::Hash32;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A journal record (one JSON line each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The battery is about to be commanded to release `energy_wh` for `trade`.
    Begin {
        /// Trade id.
        trade: Hash32,
        /// Energy to release, Wh.
        energy_wh: u64,
        /// Battery's discharged-energy counter when the command went out, Wh.
        meter_start_wh: u64,
        /// Delivery is measured at the grid meters; `progress` records follow.
        #[serde(default)]
        metered: bool,
        /// The battery charges for the trade (this home bought a neighbour's surplus).
        #[serde(default)]
        charge: bool,
    },
    /// A metered release has delivered `delivered_wh` so far.
    Progress {
        /// Trade id.
        trade: Hash32,
        /// Energy delivered so far, Wh.
        delivered_wh: u64,
    },
    /// The release finished; `delivered_wh` was metered.
    End {
        /// Trade id.
        trade: Hash32,
        /// Energy delivered, Wh.
        delivered_wh: u64,
    },
}

/// The state of one trade in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseState {
    /// Commanded (or about to be) and not known to have finished.
    InFlight {
        /// Energy to release.
        energy_wh: u64,
        /// Meter reading at the start.
        meter_start_wh: u64,
        /// Measured at the grid meters.
        metered: bool,
        /// A charge: the battery's energy rises by what was delivered.
        charge: bool,
        /// The last measured delivery journaled, Wh.
        progress_wh: u64,
    },
    /// Finished.
    Done {
        /// Energy delivered.
        delivered_wh: u64,
    },
}

/// Why the journal failed. Any failure stops the releasing: nothing is commanded without a
/// durable record.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JournalError {
    /// File I/O failed.
    #[error("release journal {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A record is unreadable.
    #[error("release journal {path} line {line}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The trade was already begun: releasing again could discharge twice.
    #[error("trade {trade} was already released")]
    AlreadyReleased {
        /// The trade.
        trade: Hash32,
    },
}

/// The journal file and its replayed state.
#[derive(Debug)]
pub struct ReleaseJournal {
    path: PathBuf,
    file: File,
    trades: BTreeMap<Hash32, ReleaseState>,
}

impl ReleaseJournal {
    /// Opens (creating) `DIR/release.journal` and replays it. A torn last line (a crash in the
    /// middle of a write, before its fsync returned) is ignored: it was never acknowledged, so
    /// the battery was never commanded for it.
    pub fn open(dir: &Path) -> Result<ReleaseJournal, JournalError> {
        let path = dir.join("release.journal");
        let io = |source| JournalError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut trades = BTreeMap::new();
        let mut valid_len = 0u64;
        if let Ok(f) = File::open(&path) {
            let lines: Vec<String> = BufReader::new(f)
                .lines()
                .collect::<Result<_, _>>()
                .map_err(io)?;
            let count = lines.len();
            for (i, line) in lines.iter().enumerate() {
                match serde_json::from_str::<Record>(line) {
                    Ok(r) => {
                        apply(&mut trades, &r);
                        valid_len += line.len() as u64 + 1;
                    }
                    Err(_) if i + 1 == count => break,
                    Err(e) => {
                        return Err(JournalError::Corrupt {
                            path: path.display().to_string(),
                            line: i + 1,
                            reason: e.to_string(),
                        })
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        // Drop a torn tail so the next record starts on a fresh line.
        file.set_len(valid_len).map_err(io)?;
        file.sync_all().map_err(io)?;
        if let Some(parent) = path.parent() {
            File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(ReleaseJournal { path, file, trades })
    }

    fn append(&mut self, r: &Record) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(r).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        apply(&mut self.trades, r);
        Ok(())
    }

    /// Durably records that `trade` is about to be released. Refuses a trade already begun.
    pub fn begin(
        &mut self,
        trade: Hash32,
        energy_wh: u64,
        meter_start_wh: u64,
        metered: bool,
        charge: bool,
    ) -> Result<(), JournalError> {
        if self.trades.contains_key(&trade) {
            return Err(JournalError::AlreadyReleased { trade });
        }
        self.append(&Record::Begin {
            trade,
            energy_wh,
            meter_start_wh,
            metered,
            charge,
        })
    }

    /// Durably records a metered release's delivery so far.
    pub fn progress(&mut self, trade: Hash32, delivered_wh: u64) -> Result<(), JournalError> {
        self.append(&Record::Progress {
            trade,
            delivered_wh,
        })
    }

    /// Durably records that `trade`'s release finished.
    pub fn end(&mut self, trade: Hash32, delivered_wh: u64) -> Result<(), JournalError> {
        self.append(&Record::End {
            trade,
            delivered_wh,
        })
    }

    /// A trade's state, if it was ever begun.
    pub fn state(&self, trade: &Hash32) -> Option<ReleaseState> {
        self.trades.get(trade).copied()
    }

    /// Trades begun and not finished (after a restart: never command these again), with what
    /// each delivered given the battery's available energy now: the last journaled measurement
    /// of a metered release, the battery's drop for an unmetered one.
    pub fn in_flight(&self, available_wh: u64) -> Vec<(Hash32, u64)> {
        self.trades
            .iter()
            .filter_map(|(t, s)| match s {
                ReleaseState::InFlight {
                    energy_wh,
                    meter_start_wh,
                    metered,
                    charge,
                    progress_wh,
                } => Some((
                    *t,
                    if *metered {
                        (*progress_wh).min(*energy_wh)
                    } else {
                        gridlet_core::release::delivered_since(
                            *meter_start_wh,
                            available_wh,
                            *energy_wh,
                            *charge,
                        )
                    },
                )),
                ReleaseState::Done { .. } => None,
            })
            .collect()
    }

    /// Every trade ever begun, with its state.
    pub fn entries(&self) -> Vec<(Hash32, ReleaseState)> {
        self.trades.iter().map(|(t, s)| (*t, *s)).collect()
    }

    /// How many trades were ever begun.
    pub fn len(&self) -> usize {
        self.trades.len()
    }

    /// Whether nothing was ever begun.
    pub fn is_empty(&self) -> bool {
        self.trades.is_empty()
    }
}

fn apply(trades: &mut BTreeMap<Hash32, ReleaseState>, r: &Record) {
    match r {
        Record::Begin {
            trade,
            energy_wh,
            meter_start_wh,
            metered,
            charge,
        } => {
            trades.entry(*trade).or_insert(ReleaseState::InFlight {
                energy_wh: *energy_wh,
                meter_start_wh: *meter_start_wh,
                metered: *metered,
                charge: *charge,
                progress_wh: 0,
            });
        }
        Record::Progress {
            trade,
            delivered_wh,
        } => {
            if let Some(ReleaseState::InFlight { progress_wh, .. }) = trades.get_mut(trade) {
                *progress_wh = (*progress_wh).max(*delivered_wh);
            }
        }
        Record::End {
            trade,
            delivered_wh,
        } => {
            trades.insert(
                *trade,
                ReleaseState::Done {
                    delivered_wh: *delivered_wh,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trade_is_begun_once_across_restarts_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Hash32::sha256(b"a"), Hash32::sha256(b"b"));
        {
            let mut j = ReleaseJournal::open(dir.path()).unwrap();
            j.begin(a, 500, 10, false, false).unwrap();
            j.end(a, 498).unwrap();
            j.begin(b, 700, 510, false, false).unwrap();
            assert!(matches!(
                j.begin(a, 500, 0, false, false),
                Err(JournalError::AlreadyReleased { .. })
            ));
        }
        // A crash half-way through the next record.
        let path = dir.path().join("release.journal");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"record\":\"begin\",\"tra").unwrap();
        drop(f);
        let mut j = ReleaseJournal::open(dir.path()).unwrap();
        assert_eq!(j.state(&a), Some(ReleaseState::Done { delivered_wh: 498 }));
        assert_eq!(j.in_flight(400), vec![(b, 110)]);
        assert!(
            j.begin(b, 700, 0, false, false).is_err(),
            "an in-flight trade must never be commanded again"
        );
        // A metered release reports its last journaled measurement, not the battery's drop.
        let c = Hash32::sha256(b"c");
        j.begin(c, 100, 2_000, true, false).unwrap();
        j.progress(c, 20).unwrap();
        j.progress(c, 30).unwrap();
        drop(j);
        let j = ReleaseJournal::open(dir.path()).unwrap();
        assert_eq!(j.len(), 3);
        assert_eq!(j.in_flight(0), vec![(c, 30), (b, 510)], "by trade id");
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("release.journal"),
            "garbage\n{\"record\":\"end\",\"trade\":\"00\",\"delivered_wh\":1}\n",
        )
        .unwrap();
        assert!(matches!(
            ReleaseJournal::open(dir.path()),
            Err(JournalError::Corrupt { line: 1, .. })
        ));
    }
}
