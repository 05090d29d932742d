//! ONNX Resize (and Upsample), separably: along each resized axis, every output position
//! reads one (nearest), two (linear) or four (cubic) input positions with weights computed
//! once on the host; the reads are gathers on the tensor's device.

use burn::tensor::{Device, TensorData};
use onnx_ir::node::resize::{CoordinateTransformMode, NearestMode, ResizeMode};

use super::{Floats, ResizeOp, binary, shape::take_positions};
use crate::engine::EngineError;
use crate::engine::elementwise::Arithmetic;
use crate::engine::kernels::Dense;
use crate::engine::limits::{Cap, F32};
use crate::engine::value::{Float, Value};

/// The input positions and weights each output position of one axis reads.
struct Taps {
    positions: Vec<Vec<usize>>,
    weights: Vec<Vec<f32>>,
}

/// The input coordinate output position `x` maps to. The resized length is
/// `input · scale`, unrounded (as ONNX's reference computes it).
fn source(r: &ResizeOp, x: f64, input: usize, scale: f64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "tensor sizes")]
    let input = input as f64;
    let output = input * scale;
    match r.transform {
        CoordinateTransformMode::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordinateTransformMode::PytorchHalfPixel => {
            if output > 1.0 {
                (x + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        CoordinateTransformMode::AlignCorners => {
            if output > 1.0 {
                x * (input - 1.0) / (output - 1.0)
            } else {
                0.0
            }
        }
        CoordinateTransformMode::TfHalfPixelForNn => (x + 0.5) / scale,
        CoordinateTransformMode::Asymmetric | CoordinateTransformMode::TfCropAndResize => x / scale,
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap,
    reason = "coordinates within tensor sizes"
)]
fn taps(r: &ResizeOp, input: usize, output: usize, scale: f64) -> Taps {
    let last = input.saturating_sub(1) as i64;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    let mut positions = Vec::new();
    let mut weights = Vec::new();
    let kernel = match r.mode {
        ResizeMode::Nearest => 1,
        ResizeMode::Linear => 2,
        ResizeMode::Cubic => 4,
    };
    for _ in 0..kernel {
        positions.push(Vec::with_capacity(output));
        weights.push(Vec::with_capacity(output));
    }
    for o in 0..output {
        let x = source(r, o as f64, input, scale);
        match r.mode {
            ResizeMode::Nearest => {
                let i = match r.nearest {
                    NearestMode::RoundPreferFloor => {
                        if (x - x.floor() - 0.5).abs() < 1e-9 {
                            x.floor()
                        } else {
                            x.round()
                        }
                    }
                    NearestMode::RoundPreferCeil => {
                        if (x - x.floor() - 0.5).abs() < 1e-9 {
                            x.ceil()
                        } else {
                            x.round()
                        }
                    }
                    NearestMode::Floor => x.floor(),
                    NearestMode::Ceil => x.ceil(),
                };
                positions[0].push(clamp(i as i64));
                weights[0].push(1.0);
            }
            ResizeMode::Linear => {
                let x = x.clamp(0.0, last as f64);
                let x0 = x.floor();
                let t = (x - x0) as f32;
                positions[0].push(clamp(x0 as i64));
                positions[1].push(clamp(x0 as i64 + 1));
                weights[0].push(1.0 - t);
                weights[1].push(t);
            }
            ResizeMode::Cubic => {
                let x0 = x.floor();
                let t = x - x0;
                let a = f64::from(r.cubic_a);
                let far = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
                let near = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
                let coeffs = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
                let mut w = [0f64; 4];
                for k in 0..4 {
                    let i = x0 as i64 - 1 + k as i64;
                    let inside = (0..=last).contains(&i);
                    w[k] = if r.exclude_outside && !inside {
                        0.0
                    } else {
                        coeffs[k]
                    };
                    positions[k].push(clamp(i));
                }
                let total: f64 = w.iter().sum();
                for k in 0..4 {
                    let v = if r.exclude_outside && total != 0.0 {
                        w[k] / total
                    } else {
                        w[k]
                    };
                    weights[k].push(v as f32);
                }
            }
        }
    }
    Taps { positions, weights }
}

pub(super) fn run(
    r: &ResizeOp,
    mut inputs: Vec<Option<Value>>,
    device: &Device,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    let sizes = match &r.sizes {
        Some(s) => s.read_optional(&inputs, "Resize sizes")?,
        None => None,
    };
    let scales: Option<Vec<f32>> = match &r.scales {
        Some(Floats::Static(v)) => Some(v.clone()),
        Some(Floats::Input(i)) => match inputs.get(*i).and_then(Option::as_ref) {
            Some(Value::Float(f)) => {
                let v: Vec<f32> = f
                    .clone()
                    .into_data()
                    .try_to_vec()
                    .map_err(|e| EngineError::Invalid(format!("{e:?}")))?;
                if v.is_empty() { None } else { Some(v) }
            }
            Some(Value::Dense(d)) if !d.data.is_empty() => Some(d.data.to_vec()),
            _ => None,
        },
        None => None,
    };
    let x = super::any_input(&mut inputs, 0)?;
    let dims = x.dims();
    let rank = dims.len();
    // onnx-ir keeps only the spatial entries of constant sizes and scales.
    let full = |v: Vec<f32>| {
        if v.len() + 2 == rank {
            [vec![1.0, 1.0], v].concat()
        } else {
            v
        }
    };
    let scales = scales.map(full);
    let sizes = sizes.map(|v| {
        if v.len() + 2 == rank {
            [
                dims[..2]
                    .iter()
                    .map(|d| i64::try_from(*d).unwrap_or(i64::MAX))
                    .collect(),
                v,
            ]
            .concat()
        } else {
            v
        }
    });
    let (out, factors): (Vec<usize>, Vec<f64>) = match (sizes, scales) {
        (Some(sizes), _) if sizes.len() == rank => {
            let out: Vec<usize> = sizes
                .iter()
                .map(|s| usize::try_from(*s))
                .collect::<Result<_, _>>()
                .map_err(|_| EngineError::Invalid(format!("Resize sizes {sizes:?}")))?;
            #[expect(clippy::cast_precision_loss, reason = "tensor sizes")]
            let factors = out
                .iter()
                .zip(&dims)
                .map(|(o, i)| *o as f64 / (*i).max(1) as f64)
                .collect();
            (out, factors)
        }
        (_, Some(scales)) if scales.len() == rank => {
            if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(EngineError::Invalid(format!("Resize scales {scales:?}")));
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "sizes checked against the cap below"
            )]
            let out = scales
                .iter()
                .zip(&dims)
                .map(|(s, i)| (f64::from(*s) * *i as f64).floor().min(1e15) as usize)
                .collect();
            (out, scales.iter().map(|s| f64::from(*s)).collect())
        }
        (sizes, scales) => {
            return Err(EngineError::Invalid(format!(
                "Resize of rank {rank} needs {rank} sizes or scales, got {sizes:?} / {scales:?}"
            )));
        }
    };
    cap.check(&out, F32)?;
    if matches!(r.mode, ResizeMode::Nearest) && *device == crate::engine::cpu() {
        // On the CPU one index map over every axis beats a gather per axis.
        let picks: Vec<Vec<usize>> = (0..rank)
            .map(|axis| {
                if out[axis] == dims[axis] && (factors[axis] - 1.0).abs() < f64::EPSILON {
                    (0..dims[axis]).collect()
                } else {
                    taps(r, dims[axis], out[axis], factors[axis])
                        .positions
                        .swap_remove(0)
                }
            })
            .collect();
        // A CPU plan's host values stay on the host.
        return Ok(vec![match x {
            Value::Dense(d) => Value::Dense(Dense::new(
                super::host::select_floats(&d.data, &dims, &picks),
                out,
            )?),
            other => {
                let data: Vec<f32> = other
                    .float()?
                    .into_data()
                    .try_to_vec()
                    .map_err(|e| EngineError::Internal(format!("{e:?}")))?;
                let values = super::host::select_axes(&data, &dims, &picks);
                Value::Float(Float::from_data(TensorData::new(values, out), device)?)
            }
        }]);
    }
    let mut y = x.float()?;
    for axis in 0..rank {
        if out[axis] == dims[axis] && (factors[axis] - 1.0).abs() < f64::EPSILON {
            continue;
        }
        let t = taps(r, dims[axis], out[axis], factors[axis]);
        let mut acc: Option<Float> = None;
        for (positions, weights) in t.positions.iter().zip(&t.weights) {
            let picked = take_positions(y.clone(), axis, positions)?;
            let term = if matches!(r.mode, ResizeMode::Nearest) {
                picked
            } else {
                let mut shape = vec![1; rank];
                shape[axis] = out[axis];
                let w = Float::from_data(TensorData::new(weights.clone(), shape), device)?;
                binary(picked, w, Arithmetic::Mul, cap)?
            };
            acc = Some(match acc {
                None => term,
                Some(a) => binary(a, term, Arithmetic::Add, cap)?,
            });
        }
        y = acc.ok_or_else(|| EngineError::Internal("Resize with no taps".into()))?;
    }
    Ok(vec![Value::Float(y)])
}
