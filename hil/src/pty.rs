//! Pseudo-terminals for serial links without hardware (DSMR P1, Modbus RTU): [`PtyPair`] from
//! socat (the real peer the interop tests use), and [`NativePty`], opened directly (what
//! `gridlet sim` uses, so the main command needs nothing but the Rust toolchain).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `socat -d -d pty,raw,echo=0 pty,raw,echo=0`; killed when dropped.
#[derive(Debug)]
pub struct PtyPair {
    child: Child,
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
}

impl PtyPair {
    /// Starts socat and reads the two pty paths it prints on stderr.
    pub fn start() -> std::io::Result<PtyPair> {
        let mut child = Command::new("socat")
            .args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("socat has no stderr"))?;
        let mut paths = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            if let Some(i) = line.find("PTY is ") {
                paths.push(line[i + 7..].trim().to_owned());
                if paths.len() == 2 {
                    break;
                }
            }
        }
        match paths.as_slice() {
            [a, b] => Ok(PtyPair {
                a: a.clone(),
                b: b.clone(),
                child,
            }),
            _ => {
                let _ = child.kill();
                Err(std::io::Error::other("socat did not report two ptys"))
            }
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pseudo-terminal opened here: the simulator writes to its master side, a gateway opens
/// [`NativePty::path`] as its serial port. The terminal is raw (no echo, no CR/LF translation),
/// like socat's `raw,echo=0`.
#[derive(Debug)]
pub struct NativePty {
    master: std::fs::File,
    /// Kept open so the master never reads end-of-file between gateway (re)connects.
    _slave: std::fs::File,
    /// The terminal's path (`/dev/pts/N`).
    pub path: String,
}

impl NativePty {
    /// Opens a pseudo-terminal pair in raw mode.
    pub fn open() -> std::io::Result<NativePty> {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let path = name.to_string_lossy().into_owned();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let mut termios = tcgetattr(&slave)?;
        termios.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &termios)?;
        Ok(NativePty {
            master: std::fs::File::from(master),
            _slave: slave,
            path,
        })
    }

    /// The master side, for the simulator to write to.
    pub fn master(&self) -> std::io::Result<std::fs::File> {
        self.master.try_clone()
    }
}
