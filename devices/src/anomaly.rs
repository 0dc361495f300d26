//! Per-device telemetry anomaly detection with an Isolation Forest (F. T. Liu,
//! K. M. Ting, Z.-H. Zhou, "Isolation Forest", ICDM 2008), our own small
//! implementation of the paper's Algorithms 1 to 3.
//!
//! * Features of one message ([`features`]): `cpu_usage`, the battery drain since
//!   the device's previous accepted message in percent per minute (0 for the
//!   first), then each enrolled sensor's reading in name order. The battery level
//!   itself is not a feature: it drifts down by design, so a model trained on a
//!   full battery would flag every later reading.
//! * Training ([`IsolationForest::fit`]): `trees` isolation trees (default 100,
//!   the paper's t), each on a subsample of `sample_size` points drawn without
//!   replacement (default 256, the paper's ψ), height limit `ceil(log2 ψ)`; split
//!   attribute and split value drawn uniformly (Algorithm 2). The random numbers
//!   come from SplitMix64 (G. L. Steele, D. Lea, C. H. Flood, "Fast splittable
//!   pseudorandom number generators", OOPSLA 2014) seeded by
//!   [`ForestConfig::seed`]: the same data and seed give the same forest, on any
//!   machine and any version of this crate's dependencies.
//! * Score (§2, eq. 2): `s(x, ψ) = 2^(−E[h(x)] / c(ψ))` with path length `h`
//!   adjusted by `c(size)` at external nodes (Algorithm 3) and
//!   `c(n) = 2H(n−1) − 2(n−1)/n`, `H(i) ≈ ln i + 0.5772156649`. Near 1: anomalous;
//!   well below 0.5: normal. The default threshold 0.62 flags a point whose mean
//!   path is shorter than about 0.69 · c(ψ).
//! * The learned envelope: split values are drawn inside each node's range, so a
//!   point beyond the training data in one feature follows the same path as the
//!   most extreme training point and cannot score higher than it (with
//!   near-uniform training data, about 0.5: a CPU at 98 % after training on
//!   10-20 % is not isolated any faster than one at 20 %). The model therefore also
//!   keeps each feature's training range and flags a point outside
//!   `[min − m, max + m]`, `m = envelope_margin · (max − min) + 1 % · max(|min|,
//!   |max|, 1)`, with score 1.0 ([`Model::score`]); inside the envelope the score
//!   is the forest's.
//! * The threshold of one device's model ([`Model::threshold`]) is the larger of
//!   [`ForestConfig::threshold`] and the highest score among its own training
//!   messages: a message is flagged only when it is more isolated than everything
//!   the device sent while it was learning (so the flag rate on normal data does
//!   not depend on the shape of that device's distribution; the price: an
//!   anomaly inside the training data raises the bar, hence the envelope).
//!
//! Memory: a tree has at most `2ψ − 1` nodes of 24 bytes, so a device's forest
//! takes at most about 1.2 MB with the defaults (t = 100, ψ = 256); for fleets of
//! thousands of devices lower `sample_size` (ψ = 64: about 0.3 MB).
//!
//! [`DeviceModels`] keeps one training buffer and, once it holds `train_after`
//! accepted messages, one forest per device; training happens once (re-training
//! on a schedule is left to the integrator: call [`DeviceModels::retrain`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    batch::AnomalyScore, ids::DeviceId, registry::Enrollment, rng::SplitMix64, telemetry::Telemetry,
};

/// Isolation Forest settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForestConfig {
    /// Number of trees (t).
    pub trees: usize,
    /// Subsample size per tree (ψ).
    pub sample_size: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Score at or above which a message is anomalous.
    pub threshold: f64,
    /// Accepted messages per device before its forest is trained.
    pub train_after: usize,
    /// Envelope margin as a fraction of each feature's training range.
    pub envelope_margin: f64,
}

impl Default for ForestConfig {
    fn default() -> Self {
        ForestConfig {
            trees: 100,
            sample_size: 256,
            seed: 0x7ad_0017,
            threshold: 0.62,
            train_after: 256,
            envelope_margin: 0.25,
        }
    }
}

/// One node of a tree, in the forest's node arena: internal when `attr !=
/// LEAF` (points with `x[attr] < split` go to `left`, the others to `right`),
/// external otherwise (`left` holds the number of training points that ended
/// there). 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Node {
    split: f64,
    attr: u32,
    left: u32,
    right: u32,
}

const LEAF: u32 = u32::MAX;

/// Average path length of an unsuccessful BST search among `n` points (paper §2).
pub fn c(n: usize) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    2.0 * ((n - 1.0).ln() + 0.577_215_664_9) - 2.0 * (n - 1.0) / n
}

/// Grows a tree under `points` into `nodes` (Algorithm 2) and returns its root's
/// index.
fn grow(
    nodes: &mut Vec<Node>,
    points: &mut [&[f64]],
    height: usize,
    limit: usize,
    rng: &mut SplitMix64,
) -> u32 {
    let me = nodes.len() as u32;
    let leaf = Node {
        split: 0.0,
        attr: LEAF,
        left: points.len() as u32,
        right: 0,
    };
    nodes.push(leaf);
    if height >= limit || points.len() <= 1 {
        return me;
    }
    let dims = points[0].len();
    // Pick an attribute that is not constant here (Algorithm 2 picks uniformly; a
    // constant attribute cannot split, so try the others in random order).
    let start = rng.below(dims);
    for k in 0..dims {
        let attr = (start + k) % dims;
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p[attr]), hi.max(p[attr]))
        });
        if hi > lo {
            let split = lo + rng.next_f64() * (hi - lo);
            let mut i = 0;
            for j in 0..points.len() {
                if points[j][attr] < split {
                    points.swap(i, j);
                    i += 1;
                }
            }
            let (l, r) = points.split_at_mut(i);
            let left = grow(nodes, l, height + 1, limit, rng);
            let right = grow(nodes, r, height + 1, limit, rng);
            nodes[me as usize] = Node {
                split,
                attr: attr as u32,
                left,
                right,
            };
            return me;
        }
    }
    me
}

/// Path length of `x` in the tree rooted at `root` (Algorithm 3).
fn path_length(nodes: &[Node], root: u32, x: &[f64]) -> f64 {
    let mut n = nodes[root as usize];
    let mut h = 0.0;
    while n.attr != LEAF {
        let next = if x[n.attr as usize] < n.split {
            n.left
        } else {
            n.right
        };
        n = nodes[next as usize];
        h += 1.0;
    }
    h + c(n.left as usize)
}

/// A trained forest.
#[derive(Clone, Debug)]
pub struct IsolationForest {
    /// Every tree's nodes (one arena).
    nodes: Vec<Node>,
    /// Root index of each tree.
    roots: Vec<u32>,
    dims: usize,
    c_psi: f64,
}

/// Why a forest cannot be trained.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForestError {
    #[error("need at least 2 training points, got {0}")]
    TooFew(usize),
    #[error("training point {index} has {got} features, expected {expected}")]
    Dims {
        index: usize,
        got: usize,
        expected: usize,
    },
    #[error("training point {0} holds a non-finite value")]
    NotFinite(usize),
}

impl IsolationForest {
    /// Trains on `data` (rows of equal length, finite values).
    pub fn fit(data: &[Vec<f64>], cfg: &ForestConfig) -> Result<IsolationForest, ForestError> {
        if data.len() < 2 {
            return Err(ForestError::TooFew(data.len()));
        }
        let dims = data[0].len();
        for (i, p) in data.iter().enumerate() {
            if p.len() != dims {
                return Err(ForestError::Dims {
                    index: i,
                    got: p.len(),
                    expected: dims,
                });
            }
            if p.iter().any(|x| !x.is_finite()) {
                return Err(ForestError::NotFinite(i));
            }
        }
        let psi = cfg.sample_size.clamp(2, data.len());
        let limit = (psi as f64).log2().ceil() as usize;
        let mut rng = SplitMix64(cfg.seed);
        let mut idx: Vec<usize> = (0..data.len()).collect();
        let mut nodes = Vec::new();
        let roots = (0..cfg.trees.max(1))
            .map(|_| {
                // Partial Fisher-Yates: the first psi entries are the subsample.
                for i in 0..psi {
                    let j = i + rng.below(idx.len() - i);
                    idx.swap(i, j);
                }
                let mut pts: Vec<&[f64]> = idx[..psi].iter().map(|&i| data[i].as_slice()).collect();
                grow(&mut nodes, &mut pts, 0, limit, &mut rng)
            })
            .collect();
        nodes.shrink_to_fit();
        Ok(IsolationForest {
            nodes,
            roots,
            dims,
            c_psi: c(psi),
        })
    }

    /// Anomaly score of `x` in (0, 1] (module docs). `x` must have the training
    /// dimension (panics otherwise: a programming error).
    pub fn score(&self, x: &[f64]) -> f64 {
        assert_eq!(x.len(), self.dims, "feature vector length");
        let mean = self
            .roots
            .iter()
            .map(|r| path_length(&self.nodes, *r, x))
            .sum::<f64>()
            / self.roots.len() as f64;
        2f64.powf(-mean / self.c_psi)
    }
}

/// The feature vector of `t` for a device enrolled as `e` (module docs);
/// `previous` is the device's previous accepted message.
pub fn features(t: &Telemetry, previous: Option<&Telemetry>, e: &Enrollment) -> Vec<f64> {
    let drain = previous
        .filter(|p| t.timestamp > p.timestamp)
        .map_or(0.0, |p| {
            (p.battery_level - t.battery_level) / ((t.timestamp - p.timestamp) as f64 / 60_000.0)
        });
    let mut v = Vec::with_capacity(2 + e.sensors.len());
    v.extend([t.cpu_usage, drain]);
    v.extend(
        e.sensors
            .keys()
            .map(|k| t.sensors.get(k).copied().unwrap_or(0.0)),
    );
    v
}

/// A trained device model: the forest and the learned envelope.
#[derive(Clone, Debug)]
pub struct Model {
    forest: IsolationForest,
    /// Per feature: (low, high) of the envelope.
    envelope: Vec<(f64, f64)>,
    threshold: f64,
}

impl Model {
    /// Trains the forest and the envelope on `data` (module docs).
    pub fn fit(data: &[Vec<f64>], cfg: &ForestConfig) -> Result<Model, ForestError> {
        let forest = IsolationForest::fit(data, cfg)?;
        let envelope = (0..forest.dims)
            .map(|k| {
                let (lo, hi) = data.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
                    (lo.min(p[k]), hi.max(p[k]))
                });
                let m = cfg.envelope_margin * (hi - lo) + 0.01 * lo.abs().max(hi.abs()).max(1.0);
                (lo - m, hi + m)
            })
            .collect();
        let max_train = data
            .iter()
            .map(|x| forest.score(x))
            .fold(f64::MIN, f64::max);
        Ok(Model {
            threshold: cfg.threshold.max(max_train),
            forest,
            envelope,
        })
    }

    /// This model's threshold (module docs).
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// 1.0 outside the envelope, else the forest's score.
    pub fn score(&self, x: &[f64]) -> f64 {
        let outside = x
            .iter()
            .zip(&self.envelope)
            .any(|(v, (lo, hi))| v < lo || v > hi);
        if outside { 1.0 } else { self.forest.score(x) }
    }

    /// Feature vector length.
    pub fn dims(&self) -> usize {
        self.forest.dims
    }
}

#[derive(Debug, Default)]
struct DeviceModel {
    training: Vec<Vec<f64>>,
    forest: Option<Model>,
    previous: Option<Telemetry>,
}

/// One model per device (module docs).
#[derive(Debug)]
pub struct DeviceModels {
    cfg: ForestConfig,
    devices: HashMap<DeviceId, DeviceModel>,
}

impl DeviceModels {
    pub fn new(cfg: ForestConfig) -> DeviceModels {
        DeviceModels {
            cfg,
            devices: HashMap::new(),
        }
    }

    /// Scores an accepted message, with its device's threshold (`None` while the
    /// device's model is still learning; the message then joins the training data).
    pub fn observe(&mut self, t: &Telemetry, e: &Enrollment) -> Option<AnomalyScore> {
        let m = self.devices.entry(t.device_id.clone()).or_default();
        let x = features(t, m.previous.as_ref(), e);
        m.previous = Some(t.clone());
        if let Some(f) = &m.forest {
            if f.dims() == x.len() {
                return Some(AnomalyScore {
                    score: f.score(&x),
                    threshold: f.threshold(),
                });
            }
            // The enrollment changed its sensors: learn again.
            m.forest = None;
            m.training.clear();
        }
        m.training.push(x);
        if m.training.len() >= self.cfg.train_after.max(2) {
            let seed = self.cfg.seed ^ fnv1a(t.device_id.as_str());
            let cfg = ForestConfig { seed, ..self.cfg };
            m.forest = Model::fit(&m.training, &cfg).ok();
            m.training = Vec::new();
        }
        None
    }

    /// True once `id`'s forest is trained.
    pub fn trained(&self, id: &str) -> bool {
        self.devices.get(id).is_some_and(|m| m.forest.is_some())
    }

    /// Forgets `id`'s forest; it learns again from the next messages.
    pub fn retrain(&mut self, id: &str) {
        if let Some(m) = self.devices.get_mut(id) {
            m.forest = None;
            m.training.clear();
        }
    }
}

/// FNV-1a 64 of `s` (per-device seed derivation; stable, not a security hash).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A standard normal deviate (Box-Muller).
    fn gauss(rng: &mut SplitMix64) -> f64 {
        let u = rng.next_f64().max(1e-12);
        let v = rng.next_f64();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Normal readings of a healthy sensor node: CPU 15 ± 2 %, drain 0.06 ± 0.01
    /// %/min, temperature 21.5 ± 0.5 °C, humidity 45 ± 3 %.
    fn normal(rng: &mut SplitMix64, n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                vec![
                    15.0 + 2.0 * gauss(rng),
                    0.06 + 0.01 * gauss(rng),
                    21.5 + 0.5 * gauss(rng),
                    45.0 + 3.0 * gauss(rng),
                ]
            })
            .collect()
    }

    #[test]
    fn c_matches_the_paper() {
        assert_eq!(c(1), 0.0);
        assert!((c(2) - 0.15443).abs() < 1e-4);
        assert!((c(256) - 10.2448).abs() < 1e-3);
    }

    #[test]
    fn anomalies_score_above_the_threshold_and_normal_points_below() {
        let mut rng = SplitMix64(42);
        let train = normal(&mut rng, 512);
        let cfg = ForestConfig::default();
        let m = Model::fit(&train, &cfg).unwrap();
        let fresh = normal(&mut rng, 500);
        let flagged = fresh.iter().filter(|x| m.score(x) >= m.threshold()).count();
        assert!(flagged <= 5, "{flagged} of 500 normal points flagged");
        for (what, x) in [
            ("CPU spike", vec![98.0, 0.06, 21.5, 45.0]),
            ("temperature far out", vec![15.0, 0.06, 45.0, 45.0]),
            ("battery drain", vec![15.0, 5.0, 21.5, 45.0]),
            // Inside every feature's envelope but an unusual combination: found by
            // the forest itself, not the envelope.
            (
                "all features at once off-centre",
                vec![20.5, 0.085, 23.0, 53.5],
            ),
        ] {
            let s = m.score(&x);
            assert!(s >= m.threshold(), "{what}: score {s}");
        }
        let s = m.forest.score(&[20.5, 0.085, 23.0, 53.5]);
        assert!(s >= m.threshold(), "forest alone: {s}");
    }

    #[test]
    fn same_data_and_seed_give_the_same_scores() {
        let mut rng = SplitMix64(7);
        let train = normal(&mut rng, 300);
        let cfg = ForestConfig::default();
        let a = IsolationForest::fit(&train, &cfg).unwrap();
        let b = IsolationForest::fit(&train, &cfg).unwrap();
        let other = IsolationForest::fit(&train, &ForestConfig { seed: 1, ..cfg }).unwrap();
        let x = [17.0, 0.07, 22.0, 44.0];
        assert_eq!(a.score(&x), b.score(&x));
        assert_ne!(a.score(&x), other.score(&x));
    }

    #[test]
    fn bad_training_data_is_refused() {
        let cfg = ForestConfig::default();
        assert_eq!(
            IsolationForest::fit(&[vec![1.0]], &cfg).unwrap_err(),
            ForestError::TooFew(1)
        );
        assert!(matches!(
            IsolationForest::fit(&[vec![1.0], vec![1.0, 2.0]], &cfg),
            Err(ForestError::Dims { index: 1, .. })
        ));
        assert_eq!(
            IsolationForest::fit(&[vec![1.0], vec![f64::NAN]], &cfg).unwrap_err(),
            ForestError::NotFinite(1)
        );
    }
}
