//! The autoencoder: an ONNX model (scikit-learn `MLPRegressor` trained to
//! reproduce standardised benign feature vectors, exported with skl2onnx by
//! `detector/train/train.py`) run with tract.
//!
//! Score of a flow = reconstruction error: the mean squared difference between the
//! standardised feature vector `z = (x - mean) / std` ([`flow_meter::features`]) and
//! the model's output for it. A flow is anomalous when its score exceeds the
//! threshold saved with the model (a percentile of the benign training scores,
//! named in the JSON) times `ml.threshold_scale`.
//!
//! Files: `model.onnx` and `model.json` (same stem) holding `feature_names`,
//! `mean`, `std`, `threshold`, `threshold_percentile`, and the training data's
//! names and SHA-256 sums.

use std::path::{Path, PathBuf};

use flow_meter::features::{N_FEATURES, NAMES};
use serde::Deserialize;
use tract_onnx::prelude::*;

/// Errors loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model parameters {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model parameters {path} are invalid: {what}")]
    Params { path: PathBuf, what: String },
    #[error("model {path}: {what}")]
    Onnx { path: PathBuf, what: String },
    #[error("running the model: {0}")]
    Run(String),
}

/// `model.json`, written by `train.py`.
#[derive(Clone, Debug, Deserialize)]
pub struct Params {
    pub feature_names: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub threshold: f32,
    pub threshold_percentile: f64,
    #[serde(default)]
    pub training_data: Vec<serde_json::Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The loaded model with its normalisation parameters.
pub struct Autoencoder {
    plan: std::sync::Arc<TypedSimplePlan>,
    pub params: Params,
}

/// The parameters file beside a model (`x.onnx` -> `x.json`).
pub fn params_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

impl Autoencoder {
    /// Loads `model` and its parameters; checks the feature names match
    /// [`flow_meter::features::NAMES`].
    pub fn load(model: &Path) -> Result<Autoencoder, ModelError> {
        let ppath = params_path(model);
        let text = std::fs::read_to_string(&ppath).map_err(|source| ModelError::Read {
            path: ppath.clone(),
            source,
        })?;
        let params: Params = serde_json::from_str(&text).map_err(|e| ModelError::Params {
            path: ppath.clone(),
            what: e.to_string(),
        })?;
        let bad = |what: String| ModelError::Params {
            path: ppath.clone(),
            what,
        };
        if params.feature_names != NAMES {
            return Err(bad(format!(
                "feature names {:?} differ from this build's {:?}",
                params.feature_names, NAMES
            )));
        }
        if params.mean.len() != N_FEATURES || params.std.len() != N_FEATURES {
            return Err(bad(format!("mean and std need {N_FEATURES} values")));
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !params.std.iter().all(|s| positive(*s)) || !positive(params.threshold) {
            return Err(bad("std values and the threshold must be positive".into()));
        }
        let onnx_err = |e: TractError| ModelError::Onnx {
            path: model.to_owned(),
            what: format!("{e:#}"),
        };
        let mut m = tract_onnx::onnx().model_for_path(model).map_err(onnx_err)?;
        let n = m.sym("N");
        m.set_input_fact(0, f32::fact(&[n.to_dim(), N_FEATURES.to_dim()]).into())
            .map_err(onnx_err)?;
        let plan = m
            .into_optimized()
            .map_err(onnx_err)?
            .into_runnable()
            .map_err(onnx_err)?;
        Ok(Autoencoder { plan, params })
    }

    /// Standardises one feature vector.
    pub fn standardise(&self, x: &[f32; N_FEATURES]) -> [f32; N_FEATURES] {
        let mut z = [0f32; N_FEATURES];
        for i in 0..N_FEATURES {
            z[i] = (x[i] - self.params.mean[i]) / self.params.std[i];
        }
        z
    }

    /// Reconstruction errors of raw feature vectors (one score per row).
    pub fn scores(&self, rows: &[[f32; N_FEATURES]]) -> Result<Vec<f32>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut flat = Vec::with_capacity(rows.len() * N_FEATURES);
        for r in rows {
            flat.extend_from_slice(&self.standardise(r));
        }
        let input = tract_ndarray::Array2::from_shape_vec((rows.len(), N_FEATURES), flat.clone())
            .map_err(|e| ModelError::Run(e.to_string()))?;
        let out = self.plan.run(tvec!(Tensor::from(input).into()));
        clear_upper_simd_state();
        let out = out.map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let y = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        // skl2onnx declares the output [N*F, 1]: read it flat as (N, F).
        let y: Vec<f32> = y.iter().copied().collect();
        if y.len() != flat.len() {
            return Err(ModelError::Run(format!(
                "model returned {} values for {} inputs",
                y.len(),
                flat.len()
            )));
        }
        Ok(flat
            .chunks(N_FEATURES)
            .zip(y.chunks(N_FEATURES))
            .map(|(z, y)| {
                z.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / N_FEATURES as f32
            })
            .collect())
    }

    /// The benign threshold saved with the model.
    pub fn threshold(&self) -> f32 {
        self.params.threshold
    }
}

/// tract's AVX-512/AVX2 kernels return with the upper halves of the vector
/// registers dirty; the SSE code that runs next (libm's `log1p` in the feature
/// extractor, the rules) then pays a state-transition penalty on every vector
/// instruction (Intel optimisation manual, "Mixing AVX code with SSE code"):
/// measured here, feature extraction went from 0.1 µs to 2 µs per record.
/// `vzeroupper` after each run restores full speed.
fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above).
        unsafe { zeroupper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zeroupper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// The committed model, relative to this crate.
pub fn default_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("model/model.onnx")
}
