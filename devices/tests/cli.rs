//! `tad-device keygen | enroll | list` as a user runs them: the files they write,
//! the errors they give, and that a failed enroll loses nothing.

use std::{
    path::Path,
    process::{Command, Output},
};

use ed25519_dalek::{SigningKey, pkcs8::DecodePrivateKey};
use tad_devices::{Registry, registry::encode_public_key};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tad-device"))
        .args(args)
        .output()
        .expect("run tad-device")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str], code: i32, needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_enroll_list_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    let reg = d.path().join("registry.toml");
    ok(&["keygen", "--out", s(&keys), "--id", "esp32-1"]);
    // The private key is PKCS#8, owner-only; the public key matches it.
    use std::os::unix::fs::PermissionsExt;
    let key_file = keys.join("esp32-1.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
    // Not overwritten without --force.
    fails(
        &["keygen", "--out", s(&keys), "--id", "esp32-1"],
        1,
        "exists",
    );
    let pubf = keys.join("esp32-1.pub");
    ok(&[
        "enroll",
        "--registry",
        s(&reg),
        "--id",
        "esp32-1",
        "--public-key",
        s(&pubf),
        "--sensor",
        "temperature=-20..60",
        "--sensor",
        "humidity=0..100",
        "--rate-per-min",
        "120",
        "--command",
        "reboot",
    ]);
    let r = Registry::load(&reg).unwrap();
    let e = r.get("esp32-1").unwrap();
    assert_eq!(e.public_key, encode_public_key(&key.verifying_key()));
    assert_eq!(e.sensors.len(), 2);
    assert_eq!(e.sensors["temperature"].min, -20.0);
    assert_eq!(e.rate_per_min, 120);
    let table = ok(&["list", "--registry", s(&reg)]);
    assert!(
        table.contains("esp32-1") && table.contains("temperature=-20..60"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["list", "--registry", s(&reg), "--json"])).unwrap();
    assert_eq!(json["esp32-1"]["rate_per_min"], 120);
    assert_eq!(json["esp32-1"]["commands"][0], "reboot");
}

#[test]
fn bad_input_names_what_is_wrong_and_loses_no_enrollment() {
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    let reg = d.path().join("registry.toml");
    ok(&["keygen", "--out", s(&keys), "--id", "a1"]);
    ok(&["keygen", "--out", s(&keys), "--id", "a2"]);
    let pub1 = keys.join("a1.pub");
    let pub2 = keys.join("a2.pub");
    ok(&[
        "enroll",
        "--registry",
        s(&reg),
        "--id",
        "a1",
        "--public-key",
        s(&pub1),
        "--sensor",
        "t=0..1",
    ]);
    let before = std::fs::read(&reg).unwrap();
    let enroll2 = |extra: &[&str]| {
        let mut a = vec!["enroll", "--registry", s(&reg)];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            enroll2(&["--id", "a1", "--public-key", s(&pub2)]),
            1,
            "already enrolled",
        ),
        (
            enroll2(&["--id", "a2", "--public-key", s(&pub2), "--sensor", "t=0-1"]),
            1,
            "is not min..max",
        ),
        (
            enroll2(&["--id", "a2", "--public-key", s(&pub2), "--sensor", "t"]),
            1,
            "expected name=min..max",
        ),
        (
            enroll2(&[
                "--id",
                "a2",
                "--public-key",
                s(&pub2),
                "--sensor",
                "t=0..1",
                "--sensor",
                "t=2..3",
            ]),
            1,
            "given twice",
        ),
        (
            enroll2(&["--id", "a2", "--public-key", s(&keys.join("missing.pub"))]),
            1,
            "missing.pub",
        ),
        // A private key is not a public key file.
        (
            enroll2(&["--id", "a2", "--public-key", s(&keys.join("a2.key"))]),
            1,
            "SubjectPublicKeyInfo",
        ),
        (
            enroll2(&["--id", "A/2", "--public-key", s(&pub2)]),
            1,
            "not allowed",
        ),
        (
            enroll2(&[
                "--id",
                "a2",
                "--public-key",
                s(&pub2),
                "--command",
                "format",
            ]),
            2,
            "format",
        ),
    ];
    for (args, code, needle) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&a, code, needle);
        assert_eq!(
            std::fs::read(&reg).unwrap(),
            before,
            "{a:?} changed the registry"
        );
    }
    // A corrupt registry is reported, not replaced.
    std::fs::write(&reg, "v = 1\n[devices.a1]\n").unwrap();
    fails(
        &[
            "enroll",
            "--registry",
            s(&reg),
            "--id",
            "a2",
            "--public-key",
            s(&pub2),
        ],
        1,
        "public_key",
    );
    assert_eq!(
        std::fs::read_to_string(&reg).unwrap(),
        "v = 1\n[devices.a1]\n"
    );
    fails(
        &["list", "--registry", s(&d.path().join("none.toml"))],
        1,
        "none.toml",
    );
}

/// `provision` (what `cargo xtask certs` runs per testbed device): a key pair and
/// an enrollment the first time, nothing new the second; the private key read
/// back signs what the enrolled key verifies.
#[test]
fn provision_is_idempotent_and_enrolls_the_written_key() {
    use tad_devices::cli::{provision, read_signing_key};
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registry.toml");
    let sensors = vec!["temperature=-20..60".to_string()];
    let p = provision(dir.path(), &reg, "esp32-1", &sensors, &[]).unwrap();
    assert!(p.key_created && p.enrolled, "{p:?}");
    let p = provision(dir.path(), &reg, "esp32-1", &sensors, &[]).unwrap();
    assert!(!p.key_created && !p.enrolled, "{p:?}");
    let key = read_signing_key(&dir.path().join("esp32-1.key")).unwrap();
    let r = tad_devices::Registry::load(&reg).unwrap();
    let e = r.get("esp32-1").unwrap();
    assert_eq!(e.verifying_key().unwrap(), key.verifying_key());
    assert!(e.sensors.contains_key("temperature"));
    let e = read_signing_key(&dir.path().join("esp32-1.pub")).unwrap_err();
    assert!(e.to_string().contains("esp32-1.pub"), "{e}");
    assert!(provision(dir.path(), &reg, "Bad/Id", &sensors, &[]).is_err());
}
