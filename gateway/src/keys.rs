//! Key files: `gridlet keygen` writes a secret key readable only by its owner (0600) and a
//! public `.pub` beside it; loading refuses a secret key file others can read.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gridlet_ledger::codec::{from_hex, to_hex};
use gridlet_ledger::MemberKey;
use secp256k1::SecretKey;
use serde::{Deserialize, Serialize};

const KEY_KIND: &str = "gridlet-secp256k1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kind: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_key: Option<String>,
}

/// The path of the public key file written beside a secret key file.
pub fn public_path(secret: &Path) -> PathBuf {
    let mut p = secret.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Writes a new secret key (0600, never overwriting) and its `.pub`.
pub fn write_new(path: &Path, sk: &SecretKey) -> Result<MemberKey> {
    let key = MemberKey::from_secret(sk);
    let secret = KeyFile {
        kind: KEY_KIND.into(),
        public_key: key.to_hex(),
        secret_key: Some(to_hex(&sk.to_secret_bytes())),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create key file {} (it is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(serde_json::to_string_pretty(&secret)?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    let public = KeyFile {
        kind: KEY_KIND.into(),
        public_key: key.to_hex(),
        secret_key: None,
    };
    let pub_path = public_path(path);
    fs::write(&pub_path, serde_json::to_string_pretty(&public)? + "\n")
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok(key)
}

fn read(path: &Path) -> Result<KeyFile> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a gridlet key file", path.display()))?;
    if file.kind != KEY_KIND {
        bail!("{}: unknown key kind {:?}", path.display(), file.kind);
    }
    Ok(file)
}

/// The public key in a key file (secret or `.pub`).
pub fn load_public(path: &Path) -> Result<MemberKey> {
    let file = read(path)?;
    MemberKey::from_hex(&file.public_key)
        .with_context(|| format!("{}: bad public_key", path.display()))
}

/// The secret key in a key file; refuses files readable by group or others.
pub fn load_secret(path: &Path) -> Result<SecretKey> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "key file {} is accessible by others (mode {:o}); run chmod 600 on it",
            path.display(),
            mode & 0o777
        );
    }
    let file = read(path)?;
    let hex = file
        .secret_key
        .with_context(|| format!("{} holds no secret key", path.display()))?;
    let bytes: [u8; 32] = from_hex(&hex)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{}: secret_key is not 64 hex characters", path.display()))?;
    let sk = SecretKey::from_secret_bytes(bytes).with_context(|| {
        format!(
            "{}: secret_key is not a valid secp256k1 key",
            path.display()
        )
    })?;
    if MemberKey::from_secret(&sk).to_hex() != file.public_key {
        bail!("{}: public_key does not match secret_key", path.display());
    }
    Ok(sk)
}
