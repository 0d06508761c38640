//! A simulated disk for the storage fault suite (`ledger/tests/power_cut.rs`, rows S3, S5 and
//! S6 of the fault matrix): a redb
//! storage backend in memory that keeps what was synced apart from what was only written, so
//! a power cut can drop every unsynced write (or keep a chosen part of them, as a disk that
//! wrote some sectors before the power went does), and that can run out of space.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

/// What the disk was asked to do since the last sync.
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Disk {
    /// What reads see (the page cache).
    visible: Vec<u8>,
    /// What survives a power cut.
    synced: Vec<u8>,
    pending: Vec<Pending>,
    syncs: u64,
    /// The power goes off when this sync begins (1-based): that sync never completes.
    cut_at_sync: Option<u64>,
    off: bool,
    /// Bytes the disk can hold; writes beyond fail with "no space left on device".
    capacity: Option<u64>,
}

/// The simulated disk; clones share it, so a test keeps a handle while redb owns the backend.
#[derive(Debug, Clone, Default)]
pub struct PowerCutDisk {
    disk: Arc<Mutex<Disk>>,
}

impl PowerCutDisk {
    /// A disk holding `image`, all of it synced.
    pub fn new(image: Vec<u8>) -> PowerCutDisk {
        let disk = Disk {
            visible: image.clone(),
            synced: image,
            ..Disk::default()
        };
        PowerCutDisk {
            disk: Arc::new(Mutex::new(disk)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic elsewhere while holding the lock leaves plain bytes behind: still usable.
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power goes off as sync number `n` (counted from this disk's creation) begins.
    pub fn cut_at_sync(&self, n: u64) {
        self.lock().cut_at_sync = Some(n);
    }

    /// Limits the disk to `bytes` (`None`: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Syncs completed so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Whether the power went off.
    pub fn is_off(&self) -> bool {
        self.lock().off
    }

    /// The bytes as the running system saw them (what a restart without a power cut reads).
    pub fn visible_image(&self) -> Vec<u8> {
        self.lock().visible.clone()
    }

    /// What the disk holds after the power cut: everything synced, plus each unsynced
    /// operation for which `keep(index)` says so, in order. `|_| false` drops them all.
    pub fn image_after_cut(&self, mut keep: impl FnMut(usize) -> bool) -> Vec<u8> {
        let disk = self.lock();
        let mut image = disk.synced.clone();
        for (i, op) in disk.pending.iter().enumerate() {
            if keep(i) {
                apply(&mut image, op);
            }
        }
        image
    }
}

fn apply(image: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::SetLen(len) => image.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
        Pending::Write { offset, data } => {
            let start = usize::try_from(*offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(data.len());
            if image.len() < end {
                image.resize(end, 0);
            }
            if let Some(dst) = image.get_mut(start..end) {
                dst.copy_from_slice(data);
            }
        }
    }
}

fn power_off() -> io::Error {
    io::Error::other("the power is off")
}

fn no_space() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "no space left on device")
}

impl Disk {
    fn usable(&self) -> io::Result<()> {
        if self.off {
            return Err(power_off());
        }
        Ok(())
    }

    fn fits(&self, len: u64) -> io::Result<()> {
        match self.capacity {
            Some(cap) if len > cap => Err(no_space()),
            _ => Ok(()),
        }
    }
}

impl StorageBackend for PowerCutDisk {
    fn len(&self) -> io::Result<u64> {
        let disk = self.lock();
        disk.usable()?;
        Ok(u64::try_from(disk.visible.len()).unwrap_or(u64::MAX))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let disk = self.lock();
        disk.usable()?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = disk
            .visible
            .get(start..start.saturating_add(out.len()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.lock();
        disk.usable()?;
        disk.fits(len)?;
        let op = Pending::SetLen(len);
        apply(&mut disk.visible, &op);
        disk.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.lock();
        disk.usable()?;
        if disk.cut_at_sync == Some(disk.syncs.saturating_add(1)) {
            disk.off = true;
            return Err(power_off());
        }
        let pending = std::mem::take(&mut disk.pending);
        for op in &pending {
            apply(&mut disk.synced, op);
        }
        disk.syncs = disk.syncs.saturating_add(1);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut disk = self.lock();
        disk.usable()?;
        let end = offset.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        disk.fits(end)?;
        let op = Pending::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut disk.visible, &op);
        disk.pending.push(op);
        Ok(())
    }
}
