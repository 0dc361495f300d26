//! The `tad-device` command line (clap derive): `keygen`, `enroll`, `list`. The
//! binary only parses arguments and calls [`run`]; exit code 0 ok, 1 failure, 2
//! usage (clap).

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding},
};

use crate::{
    command::CommandKind,
    fsutil::write_atomic,
    ids::DeviceId,
    registry::{
        DEFAULT_BURST, DEFAULT_RATE_PER_MIN, Enrollment, Registry, encode_public_key,
        parse_sensor_spec, read_public_key_file,
    },
};

/// Device keys and the enrollment registry of the telemetry guard.
#[derive(Debug, Parser)]
#[command(name = "tad-device", version)]
pub struct Cli {
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Make a device's Ed25519 key pair: DIR/ID.key (PKCS#8 PEM, mode 0600, for the
    /// device) and DIR/ID.pub (SubjectPublicKeyInfo PEM, for `enroll`).
    Keygen {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Device id (a-z, 0-9, '-', '_', '.').
        #[arg(long)]
        id: String,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Enroll a device: its public key, expected sensors with allowed ranges, rate.
    Enroll {
        /// Registry file (TOML; created if missing, replaced atomically).
        #[arg(long)]
        registry: PathBuf,
        /// Device id.
        #[arg(long)]
        id: String,
        /// The device's public key (SubjectPublicKeyInfo PEM, from `keygen`).
        #[arg(long)]
        public_key: PathBuf,
        /// An expected sensor and its allowed range, `name=min..max` (repeatable).
        #[arg(long = "sensor", value_name = "NAME=MIN..MAX")]
        sensors: Vec<String>,
        /// Telemetry rate limit, messages per minute (0 = none).
        #[arg(long, default_value_t = DEFAULT_RATE_PER_MIN)]
        rate_per_min: u32,
        /// Telemetry burst, messages.
        #[arg(long, default_value_t = DEFAULT_BURST)]
        burst: u32,
        /// A command kind expected for this device: set, reboot, firmware (repeatable).
        #[arg(long = "command", value_name = "KIND")]
        commands: Vec<CommandKind>,
    },
    /// List enrolled devices.
    List {
        /// Registry file.
        #[arg(long)]
        registry: PathBuf,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one verb; what it prints goes to `out`.
pub fn run(cli: Cli, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    match cli.verb {
        Verb::Keygen {
            out: dir,
            id,
            force,
        } => keygen(&dir, &id, force, out),
        Verb::Enroll {
            registry,
            id,
            public_key,
            sensors,
            rate_per_min,
            burst,
            commands,
        } => enroll(
            &registry,
            &id,
            &public_key,
            &sensors,
            rate_per_min,
            burst,
            commands,
            out,
        ),
        Verb::List { registry, json } => list(&registry, json, out),
    }
}

fn keygen(dir: &Path, id: &str, force: bool, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let id = DeviceId::parse(id)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let key_path = dir.join(format!("{id}.key"));
    let pub_path = dir.join(format!("{id}.pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() && !force {
            bail!("{} exists (use --force to replace it)", p.display());
        }
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encode the private key as PKCS#8")?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .context("encode the public key")?;
    write_atomic(&key_path, private.as_bytes(), 0o600)?;
    write_atomic(&pub_path, public.as_bytes(), 0o644)?;
    writeln!(
        out,
        "{}\n{}\npublic key {}",
        key_path.display(),
        pub_path.display(),
        encode_public_key(&key.verifying_key())
    )?;
    Ok(())
}

/// What [`provision`] did for one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisioned {
    /// A new key pair was written (false: the existing `DIR/ID.key` was kept).
    pub key_created: bool,
    /// The registry entry was written (false: it was enrolled with this key already).
    pub enrolled: bool,
}

/// Makes device `id` ready for a testbed: its Ed25519 key pair in `dir`
/// (`ID.key`, PKCS#8 PEM mode 0600; `ID.pub`) unless present, and its enrollment
/// in `registry` with `sensors` (`name=min..max`), the default rate and burst and
/// `commands`, unless it is enrolled with that key already. Idempotent.
///
/// # Errors
/// An invalid id or sensor spec, unreadable key files, an unwritable registry.
pub fn provision(
    dir: &Path,
    registry: &Path,
    id: &str,
    sensors: &[String],
    commands: &[CommandKind],
) -> anyhow::Result<Provisioned> {
    let did = DeviceId::parse(id)?;
    let pub_path = dir.join(format!("{did}.pub"));
    let key_created = !dir.join(format!("{did}.key")).exists();
    if key_created {
        keygen(dir, id, true, &mut std::io::sink())?;
    }
    let key = read_public_key_file(&pub_path)?;
    let reg = Registry::load_or_empty(registry)?;
    if reg
        .get(did.as_str())
        .is_some_and(|e| e.public_key == encode_public_key(&key))
    {
        return Ok(Provisioned {
            key_created,
            enrolled: false,
        });
    }
    enroll(
        registry,
        id,
        &pub_path,
        sensors,
        DEFAULT_RATE_PER_MIN,
        DEFAULT_BURST,
        commands.to_vec(),
        &mut std::io::sink(),
    )?;
    Ok(Provisioned {
        key_created,
        enrolled: true,
    })
}

/// Reads a device's private key written by `keygen` (PKCS#8 PEM).
///
/// # Errors
/// The file is unreadable or not an Ed25519 PKCS#8 key (the error names the file).
pub fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 private key: {e}", path.display()))
}

#[allow(clippy::too_many_arguments)]
fn enroll(
    registry: &Path,
    id: &str,
    public_key: &Path,
    sensors: &[String],
    rate_per_min: u32,
    burst: u32,
    commands: Vec<CommandKind>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let id = DeviceId::parse(id)?;
    let key = read_public_key_file(public_key)?;
    let mut ranges = std::collections::BTreeMap::new();
    for s in sensors {
        let (name, r) = parse_sensor_spec(s).map_err(anyhow::Error::msg)?;
        if ranges.insert(name.clone(), r).is_some() {
            bail!("sensor {name:?} given twice");
        }
    }
    if burst == 0 {
        bail!("--burst must be at least 1");
    }
    let mut reg = Registry::load_or_empty(registry)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut commands = commands;
    commands.sort();
    commands.dedup();
    reg.enroll(
        id.clone(),
        Enrollment {
            public_key: encode_public_key(&key),
            sensors: ranges,
            rate_per_min,
            burst,
            commands,
            enrolled_at_ms: now_ms,
        },
    )?;
    reg.save(registry)?;
    writeln!(out, "enrolled {id} in {}", registry.display())?;
    Ok(())
}

fn list(registry: &Path, json: bool, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let reg = Registry::load(registry)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &reg.devices)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<12} {:>8} {:>6}  sensors",
        "device", "key", "rate/min", "burst"
    )?;
    for (id, e) in &reg.devices {
        let sensors: Vec<String> = e
            .sensors
            .iter()
            .map(|(n, r)| format!("{n}={}..{}", r.min, r.max))
            .collect();
        writeln!(
            out,
            "{:<24} {:<12} {:>8} {:>6}  {}",
            id.as_str(),
            format!("{}…", &e.public_key[..10]),
            e.rate_per_min,
            e.burst,
            sensors.join(" ")
        )?;
    }
    Ok(())
}
