//! `tad-device`: device keys and the enrollment registry (see `tad_devices::cli`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = tad_devices::cli::Cli::parse();
    match tad_devices::cli::run(cli, &mut std::io::stdout()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tad-device: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
