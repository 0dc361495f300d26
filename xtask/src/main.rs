//! `cargo xtask`: the project's tasks, so that a fresh machine needs only Cargo.
//!
//! - `setup`: Debian packages, the nightly's rust-src, bpf-linker built against the
//!   nightly's own LLVM, bpffs mounted, the dashboard's browser-test packages.
//! - `build`: release build of every binary (the XDP object is built by fw-ctl's
//!   build script).
//! - `run --iface IF`: build, load the XDP program, start the gateway daemon.
//! - `test`: setup as needed, then every test, the privileged ones included.
//! - `bench [NAME]`: benchmarks (never part of the tests).
//! - `certs`: a development PKI for the MQTT/TLS bus.
//! - `testbed up|down|status`, `demo [--ci]`, `eval FILE...`: the whole system on
//!   network namespaces.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod certs;
mod demo;
mod eval;
mod footprint;
mod replay;
mod setup;
mod testbed;
mod util;

/// Project tasks for TuringAnamolyDetection.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make this machine ready: packages, toolchain parts, bpf-linker, bpffs.
    Setup(setup::SetupArgs),
    /// Release build of fw-ctl (with the XDP object), detector and dashboard.
    Build,
    /// Build, load the XDP program on IFACE and run the gateway daemon.
    Run(RunArgs),
    /// Run every test (as root): unit, kernel (BPF_PROG_TEST_RUN), namespaces, broker,
    /// then `demo --ci` and `eval --check-manifest` on the testbed.
    Test(TestArgs),
    /// Benchmarks: xdp, detector, ... (writes bench/results/<name>.json).
    Bench(bench::BenchArgs),
    /// Generate the development PKI (CA, node and broker certificates).
    Certs(certs::CertsArgs),
    /// Network-namespace testbed of the Turing Pi cluster.
    Testbed(testbed::TestbedArgs),
    /// The whole system on the testbed against real attack tools and captures.
    Demo(demo::DemoArgs),
    /// Replay captures through the whole pipeline and report blocks and alerts.
    Eval(eval::EvalArgs),
    /// Rewrite a capture into testbed addresses and inject it on an interface.
    Replay(replay::ReplayArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// LAN-facing interface to attach the XDP program to.
    #[arg(long)]
    iface: Vec<String>,
    /// Gateway configuration file.
    #[arg(long, default_value = "fw-ctl/gateway.toml.example")]
    config: String,
    /// XDP attach mode.
    #[arg(long, default_value = "native")]
    mode: String,
}

#[derive(clap::Args)]
struct TestArgs {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Build => build(),
        Cmd::Run(a) => run(&a),
        Cmd::Test(a) => test(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Certs(a) => certs::run(&a),
        Cmd::Testbed(a) => testbed::run(&a),
        Cmd::Demo(a) => demo::run(&a),
        Cmd::Eval(a) => eval::run(&a),
        Cmd::Replay(a) => replay::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> anyhow::Result<()> {
    setup::ensure_ebpf_toolchain()?;
    util::cargo(&[
        "build",
        "--release",
        "-p",
        "fw-ctl",
        "-p",
        "detector",
        "-p",
        "dashboard",
    ])
}

fn run(a: &RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !a.iface.is_empty(),
        "give the LAN interface with --iface IF"
    );
    build()?;
    setup::ensure_bpffs()?;
    let fw_ctl = util::workspace_root().join("target/release/fw-ctl");
    // Reload the freshly built program; `--keep-maps` keeps blocks and flows in force.
    let _ = std::process::Command::new(&fw_ctl)
        .args(["unload", "--keep-maps"])
        .status();
    let mut load = vec!["load".to_string(), "--mode".into(), a.mode.clone()];
    for i in &a.iface {
        load.push("--iface".into());
        load.push(i.clone());
    }
    util::run_cmd(std::process::Command::new(&fw_ctl).args(&load))?;
    util::run_cmd(std::process::Command::new(&fw_ctl).args(["--config", &a.config, "run"]))
}

fn test(a: &TestArgs) -> anyhow::Result<()> {
    if !a.no_setup {
        setup::run(&setup::SetupArgs::default())?;
    }
    anyhow::ensure!(
        util::is_root(),
        "the tests load XDP programs and create network namespaces: run them as root"
    );
    let mut args: Vec<&str> = vec![
        "test",
        "--workspace",
        "--exclude",
        "fw-ebpf",
        "--no-fail-fast",
    ];
    args.extend(a.cargo_args.iter().map(String::as_str));
    util::cargo(&args)?;
    if a.no_e2e {
        return Ok(());
    }
    // End to end on the testbed (issue 7): the demo's short unattended scenario, then
    // every shared capture through the whole pipeline against its MANIFEST.
    build()?;
    let me = std::env::current_exe()?;
    util::run_cmd(std::process::Command::new(&me).args(["demo", "--ci", "--no-build"]))?;
    let out = util::workspace_root().join("target/tad/eval.json");
    util::run_cmd(
        std::process::Command::new(&me)
            .args(["eval", "--check-manifest", "--no-build", "--json"])
            .arg(&out),
    )
}
