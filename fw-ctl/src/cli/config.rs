//! `fw-ctl config check FILE`.

use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;

use crate::{
    config::GatewayFile,
    error::{CtlError, Result},
};

#[derive(Debug, Subcommand)]
pub enum ConfigVerb {
    /// Validate a gateway.toml: syntax, unknown keys, prefixes, ranges.
    Check { file: PathBuf },
}

#[derive(Serialize)]
struct CheckOut {
    file: String,
    valid: bool,
    problems: Vec<String>,
}

pub fn run(v: &ConfigVerb, json: bool) -> Result<()> {
    let ConfigVerb::Check { file } = v;
    let text = std::fs::read_to_string(file).map_err(|e| CtlError::file(file, e))?;
    let problems = match GatewayFile::parse(&text) {
        Ok(c) => c.check(),
        Err(e) => vec![e],
    };
    let out = CheckOut {
        file: file.display().to_string(),
        valid: problems.is_empty(),
        problems,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serialises")
        );
    } else if out.valid {
        println!("{}: ok", out.file);
    } else {
        for p in &out.problems {
            println!("{}: {}", out.file, p.trim_end());
        }
    }
    if out.valid {
        Ok(())
    } else {
        Err(CtlError::Config {
            path: file.clone(),
            why: format!("{} problem(s)", out.problems.len()),
        })
    }
}
