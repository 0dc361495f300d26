//! `detector features`: the training data. Captures go through the pcap flow meter
//! and [`flow_meter::features::extract`] (the very code the engine scores with) into
//! a CSV with a header of [`flow_meter::features::NAMES`], one row per flow record.

use std::{io::Write, path::Path};

use flow_meter::features::{self, NAMES};

/// Errors writing features.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    #[error(transparent)]
    Meter(#[from] flow_meter::meter::MeterError),
    #[error("writing features: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the feature rows of every capture to `out`; returns the row count.
pub fn write_csv(pcaps: &[&Path], out: &mut impl Write) -> Result<usize, FeaturesError> {
    writeln!(out, "{}", NAMES.join(","))?;
    let mut n = 0;
    for p in pcaps {
        for t in crate::replay::records(p)? {
            let x = features::extract(&t.record);
            let row: Vec<String> = x.iter().map(|v| format!("{v:e}")).collect();
            writeln!(out, "{}", row.join(","))?;
            n += 1;
        }
    }
    Ok(n)
}
