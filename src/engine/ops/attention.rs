//! ONNX Attention (opset 23): scaled dot-product attention over 4-D `[batch, heads, seq,
//! head]` or 3-D `[batch, seq, hidden]` inputs, with grouped-query heads, a boolean or
//! additive mask, causal masking, softcap and the optional outputs (present key and
//! value, the QK product at the chosen stage). The products run on the tensors' device;
//! the mask is composed on the host once per run.

use burn::tensor::activation;
use burn::tensor::{Tensor, TensorData};

use super::float_input;
use crate::engine::EngineError;
use crate::engine::elementwise::broadcast_shape;
use crate::engine::limits::{Cap, F32};
use crate::engine::value::{Float, Value};

/// Attention's settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionOp {
    pub q_heads: Option<usize>,
    pub kv_heads: Option<usize>,
    pub scale: Option<f32>,
    pub softcap: f32,
    pub causal: bool,
    /// Which QK product the fourth output holds: 0–1 after softcap, 2 with the mask
    /// added, 3 after softmax.
    pub qk_mode: u8,
    pub outputs: usize,
}

/// A 3-D `[b, s, heads·d]` input as `[b, heads, s, d]`; 4-D inputs as they are.
fn heads_first(x: Float, heads: Option<usize>, what: &str) -> Result<Tensor<4>, EngineError> {
    match x {
        Float::R4(t) => Ok(t),
        Float::R3(t) => {
            let [b, s, hidden] = t.dims();
            let heads = heads.filter(|h| *h > 0 && hidden % h == 0).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "Attention: 3-D {what} of hidden size {hidden} needs a head count that \
                     divides it"
                ))
            })?;
            Ok(t.reshape([b, s, heads, hidden / heads]).swap_dims(1, 2))
        }
        other => Err(EngineError::Invalid(format!(
            "Attention: {what} must be rank 3 or 4, got {:?}",
            other.dims()
        ))),
    }
}

/// Host values of an additive bias and its `[mb, mh, q, kv]` shape.
type Bias = (Vec<f32>, [usize; 4]);

/// The additive bias `[mb, mh, q, kv]` from the mask, causality and the unpadded lengths,
/// or `None` when nothing masks.
fn bias(
    mask: Option<Value>,
    nonpad: Option<Value>,
    causal: bool,
    past: usize,
    (batch, heads): (usize, usize),
    (q, kv): (usize, usize),
) -> Result<Option<Bias>, EngineError> {
    let (mut data, mut shape): (Vec<f32>, Vec<usize>) = match mask {
        None => (vec![0.0; q * kv], vec![1, 1, q, kv]),
        Some(m) => {
            let dims = m.dims();
            if dims.is_empty() || dims.len() > 4 {
                return Err(EngineError::Invalid(format!(
                    "Attention: a mask of shape {dims:?}"
                )));
            }
            let values: Vec<f32> = match m {
                Value::Int { data, .. } => data
                    .iter()
                    .map(|v| if *v != 0 { 0.0 } else { f32::NEG_INFINITY })
                    .collect(),
                other => other
                    .float()?
                    .into_data()
                    .try_to_vec()
                    .map_err(|e| EngineError::Invalid(format!("{e:?}")))?,
            };
            let mut shape = vec![1; 4 - dims.len()];
            shape.extend(&dims);
            // It broadcasts to the scores `[batch, heads, q, kv]` (which the cap bounds),
            // so the padded copy below is no larger than they are.
            if shape[..3]
                .iter()
                .zip([batch, heads, q])
                .any(|(m, s)| *m != 1 && *m != s)
            {
                return Err(EngineError::Invalid(format!(
                    "Attention: a mask of shape {dims:?} for scores [{batch}, {heads}, {q}, {kv}]"
                )));
            }
            // A mask shorter than the keys is padded with "masked".
            let width = shape[3];
            if width > kv {
                return Err(EngineError::Invalid(format!(
                    "Attention: mask width {width} for {kv} keys"
                )));
            }
            let rows = values.len() / width.max(1);
            let mut padded = Vec::with_capacity(rows * kv);
            for row in values.chunks(width.max(1)).take(rows) {
                padded.extend_from_slice(row);
                padded.extend(std::iter::repeat_n(f32::NEG_INFINITY, kv - width));
            }
            shape[3] = kv;
            (padded, shape)
        }
    };
    let masked =
        |data: &mut Vec<f32>, shape: &[usize], keep: &dyn Fn(usize, usize, usize) -> bool| {
            let (rows, cols) = (shape[2], shape[3]);
            for (i, v) in data.iter_mut().enumerate() {
                let (plane, r, c) = (i / (rows * cols), (i / cols) % rows, i % cols);
                if !keep(plane, r, c) {
                    *v = f32::NEG_INFINITY;
                }
            }
        };
    if causal {
        // Upper-left aligned after the cache, as ONNX defines it: row i sees keys
        // 0..=past + i.
        if shape[2] != q {
            let out = broadcast_shape(&[&shape, &[shape[0], shape[1], q, kv]])?;
            data = expand(&data, &shape, &out);
            shape = out;
        }
        masked(&mut data, &shape.clone(), &|_, r, c| c <= r + past);
    }
    if let Some(lengths) = nonpad {
        let lengths = lengths.ints()?.to_vec();
        if lengths.len() != batch {
            return Err(EngineError::Invalid(format!(
                "Attention: {} key lengths for batch {batch}",
                lengths.len()
            )));
        }
        let out = broadcast_shape(&[&shape, &[batch, 1, q, kv]])?;
        data = expand(&data, &shape, &out);
        shape = out;
        let heads = shape[1];
        masked(&mut data, &shape.clone(), &|plane, _, c| {
            i64::try_from(c).unwrap_or(i64::MAX) < lengths[plane / heads]
        });
    }
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    if data.iter().all(|v| *v == 0.0) {
        return Ok(None);
    }
    Ok(Some((data, shape)))
}

fn expand(data: &[f32], from: &[usize], to: &[usize]) -> Vec<f32> {
    crate::engine::elementwise::broadcast_index(from, to)
        .into_iter()
        .map(|i| data[i])
        .collect()
}

/// Repeats each of `kv` heads `times` times, interleaved (`h0, h0, h1, h1, …`).
fn repeat_heads(t: Tensor<4>, times: usize) -> Tensor<4> {
    if times == 1 {
        return t;
    }
    let [b, h, s, d] = t.dims();
    t.reshape([b, h, 1, s, d])
        .expand([b, h, times, s, d])
        .reshape([b, h * times, s, d])
}

pub(super) fn run(
    a: &AttentionOp,
    mut inputs: Vec<Option<Value>>,
    cap: Cap,
) -> Result<Vec<Value>, EngineError> {
    let q = float_input(&mut inputs, 0)?;
    let three_d = q.rank() == 3;
    let q = heads_first(q, a.q_heads, "Q")?;
    let mut k = heads_first(float_input(&mut inputs, 1)?, a.kv_heads, "K")?;
    let mut v = heads_first(float_input(&mut inputs, 2)?, a.kv_heads, "V")?;
    // A key/value cache: the past comes first along the sequence, and causality is
    // offset by its length.
    let mut past = 0;
    for (i, current) in [(4, &mut k), (5, &mut v)] {
        if let Some(cache) = inputs.get_mut(i).and_then(Option::take) {
            let cache = cache.float()?.rank4()?;
            let ([cb, ch, cs, cd], [b, h, _, d]) = (cache.dims(), current.dims());
            if (cb, ch, cd) != (b, h, d) {
                return Err(EngineError::Invalid(format!(
                    "Attention: a cache of shape {:?} for {:?}",
                    cache.dims(),
                    current.dims()
                )));
            }
            past = cs;
            *current = Tensor::cat(vec![cache, current.clone()], 2);
        }
    }
    let mask = inputs.get_mut(3).and_then(Option::take);
    let nonpad = inputs.get_mut(6).and_then(Option::take);
    let ([b, hq, sq, d], [kb, hk, skv, dk], [vb, hv, svk, dv]) = (q.dims(), k.dims(), v.dims());
    if kb != b || vb != b || dk != d || svk != skv || hv != hk || hk == 0 || hq % hk != 0 {
        return Err(EngineError::Invalid(format!(
            "Attention: Q {:?}, K {:?} and V {:?} do not fit",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    cap.check(&[b, hq, sq, skv], F32)?;
    cap.check(&[b, hq, sq, dv], F32)?;
    // Grouped-query heads repeat the keys and values up to the query heads.
    cap.check(&[b, hq, skv, d.max(dv)], F32)?;
    #[expect(clippy::cast_precision_loss, reason = "a head size")]
    let scale = a.scale.unwrap_or_else(|| 1.0 / (d as f32).sqrt());
    let (present_k, present_v) = (k.clone(), v.clone());
    let k = repeat_heads(k, hq / hk);
    let v = repeat_heads(v, hq / hk);
    let mut qk = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if a.softcap > 0.0 {
        qk = qk
            .div_scalar(a.softcap)
            .clamp(-20.0, 20.0)
            .tanh()
            .mul_scalar(a.softcap);
    }
    let device = qk.device();
    let qk_capped = qk.clone();
    if let Some((data, shape)) = bias(mask, nonpad, a.causal, past, (b, hq), (sq, skv))? {
        let bias: Tensor<4> = Tensor::from_data(TensorData::new(data, shape), &device);
        qk = qk.add(bias);
    }
    let qk_masked = qk.clone();
    let weights = activation::softmax(qk, 3);
    let mut y = weights.clone().matmul(v);
    if three_d {
        y = y.swap_dims(1, 2);
    }
    let y = if three_d {
        Float::R3(y.reshape([b, sq, hq * dv]))
    } else {
        Float::R4(y)
    };
    let qk_out = match a.qk_mode {
        2 => qk_masked,
        3 => weights,
        _ => qk_capped,
    };
    let mut out = vec![
        Value::Float(y),
        Value::Float(Float::R4(present_k)),
        Value::Float(Float::R4(present_v)),
        Value::Float(Float::R4(qk_out)),
    ];
    out.truncate(a.outputs.clamp(1, 4));
    Ok(out)
}
