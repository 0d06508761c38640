//! The Debian package: `cargo deb` builds gridlet_<version>_<arch>.deb (from the binary the
//! tests run, so no second build) with the binary, the unit, the config and the maintainer
//! scripts. As root (CI), it is installed on this machine with `dpkg -i`: the user, data dir
//! and 0600 keys exist, `systemd-analyze verify` passes on the installed unit, `gridlet check`
//! passes on the installed config, an upgrade keeps the keys, and removing the package leaves
//! keys and data in place; then it is purged and the machine put back.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn sh(cmd: &mut Command) -> String {
    let (ok, out, err) = run(cmd);
    assert!(ok, "{cmd:?} failed:\n{out}\n{err}");
    out
}

/// Builds the package from the test binary's profile; its path.
fn build_deb(out_dir: &Path) -> PathBuf {
    let bin = PathBuf::from(BIN);
    let profile_dir = bin.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let (ok, out, err) = run(Command::new("cargo")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "deb",
            "-p",
            "gridlet-gateway",
            "--no-build",
            "--fast",
            "--output",
        ])
        .arg(out_dir)
        .args([
            "--profile",
            if profile == "debug" { "dev" } else { profile },
        ]));
    assert!(
        ok,
        "cargo deb failed (scripts/test installs cargo-deb):\n{out}\n{err}"
    );
    let deb = std::fs::read_dir(out_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb was written");
    let name = deb.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("gridlet_") && name.ends_with(".deb"),
        "{name}"
    );
    deb
}

#[test]
fn the_package_installs_the_service_verifies_and_removal_keeps_keys_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let contents = sh(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in [
        "./usr/bin/gridlet",
        "./etc/gridlet/gateway.toml",
        "/systemd/system/gridlet.service",
    ] {
        assert!(contents.contains(f), "{f} not in the package:\n{contents}");
    }
    let info = sh(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert!(
        info.contains("Package: gridlet") && info.contains("adduser"),
        "{info}"
    );
    assert!(
        info.contains("postinst") && info.contains("conffiles"),
        "{info}"
    );

    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: the package was built and inspected, not installed");
        return;
    }
    assert!(
        !Path::new("/etc/gridlet").exists(),
        "/etc/gridlet exists already: this test installs and purges the package, not on a machine that has one"
    );
    let installed = Installed;
    sh(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(sh(Command::new("getent").args(["passwd", "gridlet"])).contains("/var/lib/gridlet"));
    let uid = rustix::process::Uid::from_raw(
        sh(Command::new("id").args(["-u", "gridlet"]))
            .trim()
            .parse()
            .unwrap(),
    );
    let data = std::fs::metadata("/var/lib/gridlet").unwrap();
    assert_eq!(
        data.uid(),
        uid.as_raw(),
        "/var/lib/gridlet is the gateway user's"
    );
    for key in ["/etc/gridlet/home.key", "/etc/gridlet/battery.key"] {
        let m = std::fs::metadata(key).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{key}");
        assert_eq!(m.uid(), uid.as_raw(), "{key}");
    }
    let home_key = std::fs::read("/etc/gridlet/home.key").unwrap();
    let verify =
        sh(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/gridlet.service"]));
    eprintln!("systemd-analyze verify: {verify}");
    // The installed config passes `gridlet check` once the community's genesis is in place.
    sh(Command::new("/usr/bin/gridlet").args([
        "genesis",
        "--member",
        "home,/etc/gridlet/home.key.pub,/etc/gridlet/battery.key.pub",
        "--out",
        "/etc/gridlet/genesis.json",
    ]));
    let check = sh(Command::new("/usr/bin/gridlet").args([
        "check",
        "--offline",
        "--config",
        "/etc/gridlet/gateway.toml",
    ]));
    assert!(check.lines().all(|l| l.starts_with("ok ")), "{check}");
    // An upgrade (the same package again) keeps the keys.
    sh(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(std::fs::read("/etc/gridlet/home.key").unwrap(), home_key);
    // Removing the package removes the program and keeps keys, config and data.
    sh(Command::new("dpkg").args(["-r", "gridlet"]));
    assert!(!Path::new("/usr/bin/gridlet").exists());
    assert_eq!(std::fs::read("/etc/gridlet/home.key").unwrap(), home_key);
    assert!(Path::new("/etc/gridlet/gateway.toml").exists());
    assert!(Path::new("/var/lib/gridlet").is_dir());
    // Purging removes the config it shipped; the keys (the home's identity) are still kept.
    sh(Command::new("dpkg").args(["--purge", "gridlet"]));
    assert!(!Path::new("/etc/gridlet/gateway.toml").exists());
    assert_eq!(std::fs::read("/etc/gridlet/home.key").unwrap(), home_key);
    drop(installed);
}

/// Puts the machine back: purges the package, its user and what it left.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "gridlet"]).output();
        let _ = Command::new("deluser")
            .args(["--system", "gridlet"])
            .output();
        let _ = Command::new("delgroup")
            .args(["--system", "gridlet"])
            .output();
        let _ = std::fs::remove_dir_all("/etc/gridlet");
        let _ = std::fs::remove_dir_all("/var/lib/gridlet");
    }
}
