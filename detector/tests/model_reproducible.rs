//! The committed model is what the committed training script makes (issue 15):
//! `detector/train/train.py`, run in the pinned environment of
//! `detector/train/requirements.txt` (`cargo xtask setup` creates it in
//! `target/train-venv`) with this build's `detector features`, writes
//! `model.onnx`, `model.json` and `fixture.json` byte for byte equal to the ones in
//! `detector/model/`. A change to the feature code, the training captures, the
//! script or a pinned version that changes the model fails here until the model
//! is retrained and committed.

use std::{path::PathBuf, process::Command};

/// The training environment's Python: `TAD_TRAIN_PYTHON`, else
/// `<workspace>/target/train-venv/bin/python`.
fn python() -> PathBuf {
    let p = std::env::var_os("TAD_TRAIN_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/train-venv/bin/python"),
        PathBuf::from,
    );
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask setup` creates the pinned training environment \
         (target/train-venv from detector/train/requirements.txt), or set TAD_TRAIN_PYTHON",
        p.display()
    );
    p
}

#[test]
fn the_committed_model_is_what_the_training_script_makes() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(python())
        .arg(here.join("train/train.py"))
        .arg("--detector-bin")
        .arg(env!("CARGO_BIN_EXE_detector"))
        .arg("--out-dir")
        .arg(out.path())
        // One thread: BLAS reductions in another order would change the last bits.
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("PYTHONHASHSEED", "0")
        .output()
        .expect("running train.py");
    assert!(
        run.status.success(),
        "train.py failed ({}):\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    for f in ["model.onnx", "model.json", "fixture.json"] {
        let made = std::fs::read(out.path().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let committed = std::fs::read(here.join("model").join(f)).expect("committed file");
        assert!(
            made == committed,
            "detector/model/{f} differs from what train.py makes now ({} vs {} bytes): \
             retrain with `python3 detector/train/train.py` in the pinned environment and \
             commit the result{}",
            committed.len(),
            made.len(),
            if f == "model.json" {
                format!("\nmade:\n{}", String::from_utf8_lossy(&made))
            } else {
                String::new()
            }
        );
    }
}
