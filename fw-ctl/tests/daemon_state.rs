//! The daemon without a broker: it loads the program from its config, sweeps
//! expired blocks, keeps the state file, and after a kill -9 and a simulated reboot
//! (every pin removed, so the maps are gone) restores every block with its
//! remaining lifetime. SIGTERM leaves the program pinned and filtering. Needs root.

mod ctl;

use std::time::Duration;

use ctl::*;
use fw_ctl::{daemon::DaemonStatus, state::State};

#[test]
fn blocks_survive_kill_9_and_reboot() {
    let net = Net::new("state");
    let ctl = Ctl::new("state", &net.gw);
    let cfg = gateway_toml(&ctl, None, "");
    let cfg = cfg.to_str().unwrap();
    let [a2, a3, _] = PEER_ADDRS;

    // The daemon loads the program itself (interfaces from the config).
    let mut d = Proc(Some(ctl.spawn(&["--config", cfg, "run"], true)));
    wait_for(Duration::from_secs(20), || {
        DaemonStatus::load(&ctl.status_path()).ok()
    })
    .unwrap_or_else(|| panic!("daemon did not start: {}", ctl.log()));
    assert!(ctl.pin_dir().join("fw").exists());
    let st = ctl.json(&["--config", cfg, "status"]);
    assert_eq!(st["daemon"]["pid"].as_i64(), Some(d.pid() as i64), "{st}");
    assert_eq!(st["daemon"]["bus"], "disabled");

    ctl.json(&[
        "--config",
        cfg,
        "block",
        a2,
        "--ttl",
        "10m",
        "--reason",
        "brute force on ssh",
    ]);
    ctl.json(&["--config", cfg, "block", a3, "--ttl", "1s"]);
    assert!(!net.ping(a2, 1));

    // The 1 s block expires and is swept from the map and the state file.
    let swept = wait_for(Duration::from_secs(10), || {
        let st = State::load(&ctl.state_path()).ok()?;
        (!st.blocks.contains_key(&format!("{a3}/32").parse().unwrap())).then_some(st)
    })
    .expect("expired block swept from the state file");
    assert_eq!(swept.blocks.len(), 1);
    assert!(net.ping(a3, 1), "an expired block no longer drops");

    // kill -9: the program stays pinned and keeps filtering.
    d.signal(libc::SIGKILL);
    assert!(d.wait(Duration::from_secs(5)).is_some());
    assert!(!net.ping(a2, 1), "filtering goes on without the daemon");

    // Reboot: pins (and maps) gone, the monotonic clock would restart too; the
    // state file holds Unix-time expiries.
    std::fs::remove_dir_all(ctl.pin_dir()).unwrap();
    // (The kernel releases a link whose last pin went away shortly after.)
    wait_for(Duration::from_secs(5), || net.ping(a2, 1).then_some(()))
        .expect("nothing filters after the 'reboot'");
    let mut d = Proc(Some(ctl.spawn(&["--config", cfg, "run"], true)));
    let b = wait_for(Duration::from_secs(20), || {
        ctl.pin_dir()
            .join("fw")
            .exists()
            .then(|| ctl.block_of(&format!("{a2}/32")))
            .flatten()
    })
    .unwrap_or_else(|| panic!("block not restored: {}", ctl.log()));
    assert_eq!(b["text"], "brute force on ssh");
    assert_eq!(b["origin"], "manual");
    let left = b["expires_in_s"].as_f64().unwrap();
    assert!(
        left > 500.0 && left < 600.0,
        "remaining lifetime kept: {left}"
    );
    assert!(!net.ping(a2, 1), "the restored block drops again");

    // SIGTERM: clean exit, program left pinned and filtering.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", ctl.log());
    assert!(ctl.pin_dir().join("fw").exists());
    assert!(!net.ping(a2, 1));
}
