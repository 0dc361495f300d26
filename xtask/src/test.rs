//! `cargo xtask test`: setup as needed, then every test of the workspace as root
//! (unit, kernel through BPF_PROG_TEST_RUN, namespaces, broker), then the end-to-end
//! runs on the testbed (`demo --ci`, `eval --check-manifest`), and the Debian
//! packages for amd64 and (cross-built, run under qemu) arm64, checked.
use std::process::Command;

use crate::{build, dist, setup, util};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip `setup` (the machine is known to be ready).
    #[arg(long)]
    no_setup: bool,
    /// Skip the end-to-end runs on the testbed (`demo --ci`, `eval --check-manifest`).
    #[arg(long)]
    no_e2e: bool,
    /// Extra arguments for `cargo test` (after `--`).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

/// Runs the tests, then (unless `--no-e2e`) the testbed runs.
///
/// # Errors
/// Not root, setup failing, or any test or end-to-end run failing.
pub fn run(a: &TestArgs) -> anyhow::Result<()> {
    if !a.no_setup {
        setup::run(&setup::SetupArgs::default())?;
    }
    anyhow::ensure!(
        util::is_root(),
        "the tests load XDP programs and create network namespaces: run them as root"
    );
    let mut args: Vec<&str> = vec!["test"];
    args.extend_from_slice(util::WORKSPACE);
    args.push("--no-fail-fast");
    args.extend(a.cargo_args.iter().map(String::as_str));
    util::cargo(&args)?;
    if a.no_e2e {
        return Ok(());
    }
    // End to end on the testbed (issue 7): the demo's short unattended scenario, then
    // every shared capture through the whole pipeline against its MANIFEST.
    build::run()?;
    // Packages (issue 18): the arm64 cross build runs at nice 19 beside the demo
    // and eval, which mostly wait on real-time traffic; packaging and the checks
    // (emulated arm64 binaries, unit files) follow them.
    let cross = dist::start_cross_build()?;
    let me = std::env::current_exe()?;
    let e2e =
        util::run_cmd(Command::new(&me).args(["demo", "--ci", "--no-build"])).and_then(|()| {
            let out = util::workspace_root().join("target/tad/eval.json");
            util::run_cmd(
                Command::new(&me)
                    .args(["eval", "--check-manifest", "--no-build", "--json"])
                    .arg(&out),
            )
        });
    let packages = dist::finish_test(cross);
    e2e.and(packages)
}
