#!/usr/bin/env python3
"""Train the detector's autoencoder on the benign captures and export it to ONNX.

Steps (all deterministic: fixed seed, sorted inputs):
1. Read ../shared/pcaps/MANIFEST.tsv (relative to the workspace root) and take every
   capture whose role is `benign`; check each file's SHA-256 against the manifest.
2. Turn them into feature vectors with the project's own code path:
   `detector features --pcap ... --out features.csv` (pcap flow meter +
   fw_common::features::extract, the same code the detector scores with).
3. Standardise each column with the benign mean and standard deviation (a constant
   column gets std 1 so a value never seen in training stays finite).
4. Fit scikit-learn's MLPRegressor as an autoencoder (input = target), hidden
   layers 16-8-16, ReLU, seed 7.
5. Score = mean squared reconstruction error of the standardised vector; the
   threshold is the THRESHOLD_PERCENTILE-th percentile of the benign training
   scores times THRESHOLD_MARGIN.
6. Export with skl2onnx (float32 input [N, 24]; the output is declared [N*24, 1]),
   and write beside it model.json (feature names, mean, std, threshold, percentile,
   training files with SHA-256) and fixture.json (fixed input vectors with the
   scores of onnxruntime and of scikit-learn) for the Rust test that proves tract
   computes the same scores without Python.

Usage: python3 detector/train/train.py [--detector-bin PATH] [--out-dir DIR]
"""

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
import sklearn
import skl2onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.neural_network import MLPRegressor

SEED = 7
HIDDEN = (16, 8, 16)
THRESHOLD_PERCENTILE = 99.5
THRESHOLD_MARGIN = 1.5

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PCAPS = os.path.abspath(os.path.join(ROOT, "..", "shared", "pcaps"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def benign_captures():
    rows = []
    with open(os.path.join(PCAPS, "MANIFEST.tsv"), newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["role"] == "benign":
                path = os.path.join(PCAPS, row["file"])
                got = sha256(path)
                if got != row["sha256"]:
                    sys.exit(f"{row['file']}: sha256 {got} differs from the manifest's {row['sha256']}")
                rows.append({"file": row["file"], "sha256": got})
    return sorted(rows, key=lambda r: r["file"])


def features(captures, detector_bin):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "features.csv")
        paths = [os.path.join(PCAPS, c["file"]) for c in captures]
        if detector_bin:
            cmd = [detector_bin]
        else:
            cmd = ["cargo", "run", "-q", "-p", "detector", "--"]
        subprocess.run(cmd + ["features", "--pcap", *paths, "--out", out], check=True, cwd=ROOT)
        with open(out, newline="") as f:
            reader = csv.reader(f)
            names = next(reader)
            x = np.array([[float(v) for v in row] for row in reader], dtype=np.float32)
    return names, x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector-bin", help="prebuilt detector binary (default: cargo run -p detector)")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "detector", "model"))
    args = ap.parse_args()

    captures = benign_captures()
    names, x = features(captures, args.detector_bin)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-6] = 1.0
    z = ((x - mean) / std).astype(np.float32)

    model = MLPRegressor(
        hidden_layer_sizes=HIDDEN,
        activation="relu",
        solver="adam",
        alpha=1e-4,
        learning_rate_init=1e-3,
        max_iter=3000,
        tol=1e-6,
        random_state=SEED,
    )
    model.fit(z, z)
    recon = model.predict(z)
    scores = ((z - recon) ** 2).mean(axis=1)
    threshold = float(np.percentile(scores, THRESHOLD_PERCENTILE) * THRESHOLD_MARGIN)

    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, z.shape[1]]))],
        target_opset=17,
    )
    # skl2onnx names the graph with a random UUID; a fixed name keeps the file
    # byte-for-byte reproducible.
    onx.graph.name = "tad_flow_autoencoder"
    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, "model.onnx")
    with open(onnx_path, "wb") as f:
        f.write(onx.SerializeToString())

    params = {
        "feature_names": names,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "threshold": threshold,
        "threshold_percentile": THRESHOLD_PERCENTILE,
        "threshold_margin": THRESHOLD_MARGIN,
        "score": "mean squared error between standardised features and their reconstruction",
        "training_rows": int(x.shape[0]),
        "training_data": captures,
        "model": {
            "type": "sklearn.neural_network.MLPRegressor (autoencoder)",
            "hidden_layer_sizes": list(HIDDEN),
            "activation": "relu",
            "random_state": SEED,
            "n_iter": int(model.n_iter_),
            "final_loss": float(model.loss_),
        },
        "versions": {
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
        "onnx_sha256": sha256(onnx_path),
    }
    with open(os.path.join(args.out_dir, "model.json"), "w") as f:
        json.dump(params, f, indent=2)
        f.write("\n")

    # Fixture: the first training rows plus a few hand-made out-of-distribution rows.
    rng = np.random.default_rng(SEED)
    extra = np.clip(x[:4] + rng.normal(0, 2.0, size=(4, x.shape[1])).astype(np.float32), 0, None)
    probe = np.zeros((1, x.shape[1]), dtype=np.float32)
    probe[0, names.index("ln_fwd_packets")] = np.log1p(1)
    probe[0, names.index("ln_bwd_packets")] = np.log1p(1)
    probe[0, names.index("syn_ratio")] = 0.5
    probe[0, names.index("rst_ratio")] = 0.5
    probe[0, names.index("is_tcp")] = 1.0
    fixed = np.vstack([x[:8], extra, probe]).astype(np.float32)
    fz = ((fixed - mean) / std).astype(np.float32)
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": fz})[0].reshape(fz.shape[0], fz.shape[1])
    ort_scores = ((fz - out) ** 2).mean(axis=1)
    sk_scores = ((fz - model.predict(fz)) ** 2).mean(axis=1)
    fixture = {
        "rows": fixed.tolist(),
        "scores_onnxruntime": [float(v) for v in ort_scores],
        "scores_sklearn": [float(v) for v in sk_scores],
    }
    with open(os.path.join(args.out_dir, "fixture.json"), "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print(
        f"trained on {x.shape[0]} flows from {len(captures)} captures; "
        f"{model.n_iter_} iterations; threshold {threshold:.4f} "
        f"(p{THRESHOLD_PERCENTILE} x {THRESHOLD_MARGIN}); max benign score {scores.max():.4f}"
    )


if __name__ == "__main__":
    main()
