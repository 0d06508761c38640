//! Pseudo-terminal pairs from socat, for serial tests (DSMR P1, Modbus RTU) without hardware.

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
