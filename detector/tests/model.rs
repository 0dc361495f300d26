//! The committed ONNX model run by tract gives the scores the Python reference
//! (onnxruntime and scikit-learn, recorded by detector/train/train.py in
//! model/fixture.json) computed for the same fixed input vectors. No Python needed.

use detector::model::{Autoencoder, default_model_path};
use flow_meter::features::N_FEATURES;

#[derive(serde::Deserialize)]
struct Fixture {
    rows: Vec<Vec<f32>>,
    scores_onnxruntime: Vec<f32>,
    scores_sklearn: Vec<f32>,
}

#[test]
fn tract_scores_equal_the_python_reference() {
    let model = Autoencoder::load(&default_model_path()).unwrap();
    let path = default_model_path().with_file_name("fixture.json");
    let fx: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rows: Vec<[f32; N_FEATURES]> = fx
        .rows
        .iter()
        .map(|r| r.as_slice().try_into().unwrap())
        .collect();
    assert!(rows.len() >= 8);
    let got = model.scores(&rows).unwrap();
    for (i, g) in got.iter().enumerate() {
        for (what, want) in [
            ("onnxruntime", fx.scores_onnxruntime[i]),
            ("sklearn", fx.scores_sklearn[i]),
        ] {
            let tol = 1e-4 + 1e-4 * want.abs();
            assert!(
                (g - want).abs() <= tol,
                "row {i}: tract {g} vs {what} {want}"
            );
        }
    }
    // One row at a time gives the same as the batch.
    let single = model.scores(&rows[..1]).unwrap();
    assert!((single[0] - got[0]).abs() < 1e-6);
    // The fixture holds benign rows below the threshold and an outlier above it.
    assert!(got[0] < model.threshold());
    assert!(got.iter().any(|s| *s > model.threshold()));
}

#[test]
fn params_name_the_training_data() {
    let model = Autoencoder::load(&default_model_path()).unwrap();
    assert!(!model.params.training_data.is_empty());
    for d in &model.params.training_data {
        assert_eq!(d["sha256"].as_str().unwrap().len(), 64);
    }
    assert!(model.params.threshold_percentile > 50.0);
    // The parameters belong to the committed model file.
    use sha2::Digest;
    let bytes = std::fs::read(default_model_path()).unwrap();
    let sum: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(model.params.extra["onnx_sha256"].as_str().unwrap(), sum);
}
