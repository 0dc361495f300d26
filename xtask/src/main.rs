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
//! - `dist [--target aarch64-unknown-linux-gnu]`: Debian packages per role.
//!
//! This file only parses the command line and dispatches: one module per verb.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod build;
mod certs;
mod corpus;
mod demo;
mod dist;
mod eval;
mod replay;
mod run;
mod setup;
mod test;
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
    /// Release build of every binary: fw-ctl (with the XDP object), detector, dashboard.
    Build,
    /// Build, load the XDP program on IFACE and run the gateway daemon.
    Run(run::RunArgs),
    /// Run every test (as root): unit, kernel (BPF_PROG_TEST_RUN), namespaces, broker,
    /// then `demo --ci` and `eval --check-manifest` on the testbed.
    Test(test::TestArgs),
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
    /// Record the generated evaluation captures (eval/corpus) with real tools.
    Corpus(corpus::CorpusArgs),
    /// Rewrite a capture into testbed addresses and inject it on an interface.
    Replay(replay::ReplayArgs),
    /// Debian packages per role (router, detector, monitor), for the host or
    /// `--target aarch64-unknown-linux-gnu` (docs/deploy.md).
    Dist(dist::DistArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup(a) => setup::run(&a),
        Cmd::Build => build::run(),
        Cmd::Run(a) => run::run(&a),
        Cmd::Test(a) => test::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Certs(a) => certs::run(&a),
        Cmd::Testbed(a) => testbed::run(&a),
        Cmd::Demo(a) => demo::run(&a),
        Cmd::Eval(a) => eval::run(&a),
        Cmd::Corpus(a) => corpus::run(&a),
        Cmd::Replay(a) => replay::run(&a),
        Cmd::Dist(a) => dist::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
