//! Running host steps: cairn's kernels on host values, with sizes checked against the
//! cap before anything is allocated.

use burn::tensor::{DType, Device, TensorData};

use super::{Gemm, HostOp};
use crate::engine::EngineError;
use crate::engine::kernels::{self, Dense, panels};
use crate::engine::limits::{Cap, F32, product};
use crate::engine::ops::Op;
use crate::engine::shapes::resolve_reshape;
use crate::engine::value::{Float, Value};

/// A host value from whatever a step received.
fn dense(value: Value) -> Result<Dense, EngineError> {
    match value {
        Value::Dense(d) => Ok(d),
        Value::Float(f) => {
            let shape = f.dims();
            let data = f
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| EngineError::Internal(format!("{e:?}")))?;
            Dense::new(data, shape)
        }
        Value::Int { shape, .. } => Err(EngineError::Invalid(format!(
            "expected a float tensor, got an int64 tensor of shape {shape:?}"
        ))),
    }
}

/// Host data as `TensorData`, without a copy unless another value shares it.
#[must_use]
pub fn dense_data(d: Dense) -> TensorData {
    let shape = d.shape.clone();
    TensorData::new(d.into_values(), shape)
}

/// Host f32 input data as a host value (a copy only when the bytes are not f32).
///
/// # Errors
/// The data cannot be read as f32.
pub fn dense_from_data(data: TensorData) -> Result<Value, EngineError> {
    let shape = data.shape().to_vec();
    let data = if data.dtype() == DType::F32 {
        data
    } else {
        data.convert::<f32>()
    };
    // Bytes from a request body need not be 4-aligned; those are read value by value.
    let aligned = data
        .as_bytes()
        .as_ptr()
        .align_offset(std::mem::align_of::<f32>())
        == 0;
    let values = if aligned {
        data.try_into_vec::<f32>()
            .map_err(|e| EngineError::Internal(format!("{e:?}")))?
    } else {
        data.iter::<f32>().collect()
    };
    let shape = if shape.is_empty() { vec![1] } else { shape };
    Ok(Value::Dense(Dense::new(values, shape)?))
}

/// Converts host values to burn tensors for a step on the general path.
///
/// # Errors
/// A rank burn cannot hold.
pub fn to_burn(
    args: Vec<Option<Value>>,
    device: &Device,
) -> Result<Vec<Option<Value>>, EngineError> {
    args.into_iter()
        .map(|arg| match arg {
            Some(Value::Dense(d)) => {
                Ok(Some(Value::Float(Float::from_data(dense_data(d), device)?)))
            }
            other => Ok(other),
        })
        .collect()
}

/// A reduction over `axes` of `dims` as `[outer, reduced, inner]` and its output shape,
/// when the kernel takes it: the axes (after sorting) form one run, nothing reduced is
/// empty, and there is something to reduce. Other cases (and every error) are the general
/// operator's.
fn reduction_plan(
    dims: &[usize],
    axes: &[i64],
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Option<([usize; 3], Vec<usize>)> {
    let rank = dims.len();
    if rank == 0 || (axes.is_empty() && noop_with_empty_axes) {
        return None;
    }
    let mut axes: Vec<usize> = if axes.is_empty() {
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| {
                let a = if a < 0 {
                    a.checked_add(i64::try_from(rank).ok()?)?
                } else {
                    a
                };
                usize::try_from(a).ok().filter(|&a| a < rank)
            })
            .collect::<Option<_>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    let (first, last) = (*axes.first()?, *axes.last()?);
    if last - first + 1 != axes.len() || dims[first..=last].contains(&0) {
        return None;
    }
    let sizes = [
        dims[..first].iter().product(),
        dims[first..=last].iter().product(),
        dims[last + 1..].iter().product(),
    ];
    let shape: Vec<usize> = dims
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    // As the general operator shapes a reduction to a scalar.
    let shape = if shape.is_empty() { vec![1] } else { shape };
    Some((sizes, shape))
}

fn take(args: &mut [Option<Value>], i: usize, op: &str) -> Result<Value, EngineError> {
    args.get_mut(i)
        .and_then(Option::take)
        .ok_or_else(|| EngineError::Invalid(format!("{op}: input {i} is missing")))
}

impl HostOp {
    /// Runs the step; cases outside the kernel's reach go to burn ops unchanged.
    ///
    /// # Errors
    /// Bad shapes, as the operator would report them.
    pub fn run(
        &self,
        general_op: &Op,
        mut args: Vec<Option<Value>>,
        device: &Device,
        cap: Cap,
    ) -> Result<Vec<Value>, EngineError> {
        let op = "the operator";
        let general =
            |args: Vec<Option<Value>>| general_op.run(to_burn(args, device)?, device, cap);
        let out = match self {
            Self::Layout => return general_op.run(args, device, cap),
            Self::Pass => take(&mut args, 0, op)?,
            Self::Relu => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                kernels::relu(x.values_mut());
                Value::Dense(x)
            }
            Self::Sigmoid => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                kernels::sigmoid(x.values_mut());
                Value::Dense(x)
            }
            Self::Erf | Self::Gelu { .. } => {
                let x = take(&mut args, 0, op)?;
                if matches!(x, Value::Int { .. }) {
                    return general(vec![Some(x)]);
                }
                let mut x = dense(x)?;
                match self {
                    Self::Gelu { tanh } => kernels::gelu(x.values_mut(), *tanh),
                    _ => kernels::erf(x.values_mut()),
                }
                Value::Dense(x)
            }
            Self::LayerNorm {
                epsilon,
                scale,
                bias,
            } => {
                let x = take(&mut args, 0, op)?;
                let Some(&last) = x.dims().last() else {
                    return general(std::iter::once(Some(x)).chain(args.drain(1..)).collect());
                };
                // The kernel's case: rows along the last axis, scale and bias of that
                // length; anything else (other axes, broadcast scales) goes to burn.
                let axis_is_last = matches!(general_op, Op::LayerNorm { axis, .. }
                    if *axis == -1 || usize::try_from(*axis).ok() == x.dims().len().checked_sub(1));
                if matches!(x, Value::Int { .. }) || !axis_is_last || last != scale.len() {
                    return general(std::iter::once(Some(x)).chain(args.drain(1..)).collect());
                }
                let mut x = dense(x)?;
                kernels::layer_norm_rows(x.values_mut(), scale, bias.as_deref(), *epsilon);
                Value::Dense(x)
            }
            Self::Silu => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                kernels::silu(x.values_mut());
                Value::Dense(x)
            }
            Self::Hard { swish, alpha, beta } => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                // HardSwish is x · HardSigmoid(x) with α = 1/6, β = 1/2.
                kernels::hard(x.values_mut(), *swish, *alpha, *beta);
                Value::Dense(x)
            }
            Self::Softmax { axis } => {
                let x = take(&mut args, 0, op)?;
                let axis = *axis;
                let dims = x.dims();
                if axis.checked_add(1) != Some(dims.len()) {
                    return general(vec![Some(x)]);
                }
                let mut x = dense(x)?;
                kernels::softmax_rows(x.values_mut(), dims[axis]);
                Value::Dense(x)
            }
            Self::Flatten { axis } => {
                let x = take(&mut args, 0, op)?;
                if matches!(x, Value::Int { .. }) {
                    return general(vec![Some(x)]);
                }
                let mut x = dense(x)?;
                let axis = (*axis).min(x.shape.len());
                let outer = x.shape[..axis].iter().product();
                let inner = x.shape[axis..].iter().product();
                x.shape = vec![outer, inner];
                Value::Dense(x)
            }
            Self::Reshape(target) => {
                let target = target.read(&args, "Reshape")?;
                let x = take(&mut args, 0, op)?;
                if matches!(x, Value::Int { .. }) {
                    args[0] = Some(x);
                    return general(args);
                }
                let mut x = dense(x)?;
                let shape = resolve_reshape(&x.shape, &target)?;
                if shape.is_empty() || product(&shape) != Some(x.data.len()) {
                    return general(vec![
                        Some(Value::Dense(x)),
                        args.get_mut(1).and_then(Option::take),
                    ]);
                }
                x.shape = shape;
                Value::Dense(x)
            }
            Self::Shuffle(shuffle) => {
                let parts: Vec<Dense> = args
                    .into_iter()
                    .flatten()
                    .map(dense)
                    .collect::<Result<_, _>>()?;
                return shuffle.run(parts, cap);
            }
            Self::Concat { axis } => {
                if args
                    .iter()
                    .flatten()
                    .any(|v| matches!(v, Value::Int { .. }))
                {
                    return general(args);
                }
                let parts: Vec<Dense> = args
                    .into_iter()
                    .flatten()
                    .map(dense)
                    .collect::<Result<_, _>>()?;
                Value::Dense(concat(parts, *axis, cap)?)
            }
            Self::Binary {
                op: arithmetic,
                relu,
                constant,
            } => {
                let a = take(&mut args, 0, op)?;
                // The held constant is borrowed, not copied, on the host path.
                let b = match constant {
                    Some(_) => None,
                    None => Some(take(&mut args, 1, op)?),
                };
                let host = |v: &Value| !matches!(v, Value::Int { .. });
                if !host(&a) || !b.as_ref().is_none_or(host) {
                    let b = b.or_else(|| constant.clone().map(Value::Dense));
                    let mut out = general(vec![Some(a), b])?;
                    if *relu && let Some(first) = out.first_mut() {
                        let mut d = dense(first.clone())?;
                        kernels::relu(d.values_mut());
                        *first = Value::Dense(d);
                    }
                    return Ok(out);
                }
                let a = dense(a)?;
                let b = match (b, constant) {
                    (Some(b), _) => std::borrow::Cow::Owned(dense(b)?),
                    (None, Some(c)) => std::borrow::Cow::Borrowed(c),
                    (None, None) => {
                        return Err(EngineError::Invalid(format!("{op}: input 1 is missing")));
                    }
                };
                Value::Dense(kernels::broadcast::binary(*arithmetic, a, &b, *relu, cap)?)
            }
            Self::Where => {
                let condition = take(&mut args, 0, op)?;
                let x = take(&mut args, 1, op)?;
                let y = take(&mut args, 2, op)?;
                let host = |v: &Value| !matches!(v, Value::Int { .. });
                match condition {
                    Value::Int { data, shape } if host(&x) && host(&y) => Value::Dense(
                        kernels::broadcast::select((&data, &shape), &dense(x)?, &dense(y)?, cap)?,
                    ),
                    condition => return general(vec![Some(condition), Some(x), Some(y)]),
                }
            }
            Self::Reduce {
                kind,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                let axes = axes
                    .read_optional(&args, "Reduce axes")?
                    .unwrap_or_default();
                let x = take(&mut args, 0, op)?;
                let plan = match x {
                    Value::Int { .. } => None,
                    _ => reduction_plan(&x.dims(), &axes, *keepdims, *noop_with_empty_axes),
                };
                let Some((sizes, shape)) = plan else {
                    args[0] = Some(x);
                    return general(args);
                };
                let x = dense(x)?;
                Value::Dense(Dense::new(kernels::reduce(&x.data, sizes, *kind), shape)?)
            }
            Self::GlobalAveragePool => {
                let x = take(&mut args, 0, op)?;
                if x.dims().len() != 4 {
                    return general(vec![Some(x)]);
                }
                Value::Dense(kernels::global_average_pool(&dense(x)?)?)
            }
            Self::BatchNorm { scale, shift, relu } => {
                let mut x = dense(take(&mut args, 0, op)?)?;
                if x.shape.len() < 2 || x.shape[1] != scale.len() {
                    return Err(EngineError::Invalid(format!(
                        "BatchNormalization: input {:?} for {} channels",
                        x.shape,
                        scale.len()
                    )));
                }
                let plane: usize = x.shape[2..].iter().product();
                kernels::scale_shift(x.values_mut(), plane, scale, shift, *relu);
                Value::Dense(x)
            }
            Self::Conv { conv, padding } => {
                let x = dense(take(&mut args, 0, op)?)?;
                let pads = padding.resolve(&x, conv.kernel, conv.stride, conv.dilation)?;
                Value::Dense(conv.run(&x, pads, cap)?)
            }
            Self::ResidualConv {
                conv,
                padding,
                relu,
            } => {
                let x = dense(take(&mut args, 0, op)?)?;
                let residual = dense(take(&mut args, 1, op)?)?;
                let pads = padding.resolve(&x, conv.kernel, conv.stride, conv.dilation)?;
                Value::Dense(conv.run_residual(&x, pads, cap, residual, *relu)?)
            }
            Self::GatedConv { conv, padding } => {
                let a = dense(take(&mut args, 0, op)?)?;
                let b = dense(take(&mut args, 1, op)?)?;
                Value::Dense(super::gate::run(conv, padding, a, b, cap)?)
            }
            Self::Pool { pool, padding } => {
                let x = dense(take(&mut args, 0, op)?)?;
                let pads = padding.resolve(&x, pool.kernel, pool.stride, pool.dilation)?;
                Value::Dense(pool.run(&x, pads, cap)?)
            }
            Self::Gemm(g) => Value::Dense(g.run(dense(take(&mut args, 0, op)?)?, cap)?),
            Self::MatMul => {
                let host = |v: &Option<Value>| {
                    v.as_ref()
                        .is_some_and(|v| !matches!(v, Value::Int { .. }) && v.dims().len() >= 2)
                };
                if args.len() != 2 || !args.iter().all(host) {
                    return general(args);
                }
                let b = dense(take(&mut args, 1, op)?)?;
                let a = dense(take(&mut args, 0, op)?)?;
                Value::Dense(kernels::batched_matmul(&a, &b, cap)?)
            }
        };
        Ok(vec![out])
    }
}

impl Gemm {
    fn run(&self, a: Dense, cap: Cap) -> Result<Dense, EngineError> {
        let (m, k, a_strides, mut shape) = if self.matmul {
            let rank = a.shape.len();
            if rank == 0 {
                return Err(EngineError::Invalid("MatMul of a scalar".into()));
            }
            // A vector A is one row, and its dimension leaves the result (NumPy rules).
            let k = a.shape[rank - 1];
            let m = product(&a.shape[..rank - 1]).ok_or_else(|| {
                EngineError::Invalid(format!("MatMul: A {:?} is too large", a.shape))
            })?;
            (m, k, (k, 1), a.shape[..rank - 1].to_vec())
        } else {
            let [rows, cols] = <[usize; 2]>::try_from(a.shape.as_slice()).map_err(|_| {
                EngineError::Invalid(format!("Gemm: A must be rank 2, got {:?}", a.shape))
            })?;
            if self.trans_a {
                (cols, rows, (1, cols), vec![cols])
            } else {
                (rows, cols, (cols, 1), vec![rows])
            }
        };
        if k != self.k {
            return Err(EngineError::Invalid(format!(
                "{}: A {:?} has inner dimension {k}, B has {}",
                if self.matmul { "MatMul" } else { "Gemm" },
                a.shape,
                self.k
            )));
        }
        // The element count the GEMM writes, checked before allocating.
        let count = cap.check(&[m, self.n], F32)?;
        let mut out = vec![0f32; count];
        if self.panels {
            // The panel kernel reads A's rows contiguously: a transposed A is laid out
            // once (m·k values, against m·k·n multiply-adds).
            let transposed;
            let a_rows: &[f32] = if a_strides == (k, 1) {
                &a.data
            } else {
                transposed = (0..m * k)
                    .map(|i| a.data[(i / k) * a_strides.0 + (i % k) * a_strides.1])
                    .collect::<Vec<f32>>();
                &transposed
            };
            let start = match &self.bias {
                Some(bias) => panels::Start::ColumnBias(bias),
                None => panels::Start::Zero,
            };
            panels::multiply(
                m,
                self.n,
                k,
                (a_rows, k),
                &self.b,
                (&mut out, self.n),
                start,
                self.relu,
            );
        } else {
            if let Some(bias) = &self.bias
                && self.n > 0
            {
                for row in out.chunks_exact_mut(self.n) {
                    row.copy_from_slice(bias);
                }
            }
            kernels::matmul(
                m,
                self.n,
                k,
                &mut out,
                (&a.data, a_strides.0, a_strides.1),
                (&self.b, self.n, 1),
                self.bias.is_some(),
                self.scale,
            );
            if self.relu {
                kernels::relu(&mut out);
            }
        }
        shape.push(self.n);
        Dense::new(out, shape)
    }
}

pub(super) fn concat(parts: Vec<Dense>, axis: usize, cap: Cap) -> Result<Dense, EngineError> {
    let first = parts
        .first()
        .ok_or_else(|| EngineError::Invalid("Concat of nothing".into()))?;
    let rank = first.shape.len();
    if axis >= rank {
        return Err(EngineError::Invalid(format!(
            "Concat axis {axis} on rank {rank}"
        )));
    }
    for p in &parts {
        if p.shape.len() != rank
            || p.shape
                .iter()
                .enumerate()
                .any(|(i, d)| i != axis && *d != first.shape[i])
        {
            return Err(EngineError::Invalid(format!(
                "Concat of shapes {:?} and {:?} on axis {axis}",
                first.shape, p.shape
            )));
        }
    }
    let mut shape = first.shape.clone();
    shape[axis] = parts
        .iter()
        .try_fold(0usize, |acc, p| acc.checked_add(p.shape[axis]))
        .ok_or_else(|| EngineError::Limit(format!("Concat along axis {axis}: too large")))?;
    let total = cap.check(&shape, F32)?;
    let chunks: Vec<usize> = parts
        .iter()
        .map(|p| p.shape[axis..].iter().product())
        .collect();
    // The output is `outer` rows of every part's chunk in turn; each thread fills a
    // contiguous range of it (YOLO's 3.7 MB neck Concat is a copy worth splitting).
    let row: usize = chunks.iter().sum();
    // The parts' chunks cover every output element.
    let mut out = kernels::reuse::for_overwrite(total);
    kernels::spread_chunks(&mut out, 1, |start, dst| {
        let mut at = start;
        let end = start + dst.len();
        while at < end {
            let (o, mut within) = (at / row.max(1), at % row.max(1));
            for (p, chunk) in parts.iter().zip(&chunks) {
                if within >= *chunk {
                    within -= chunk;
                    continue;
                }
                let n = (chunk - within).min(end - at);
                dst[at - start..][..n].copy_from_slice(&p.data[o * chunk + within..][..n]);
                at += n;
                break;
            }
        }
    });
    Dense::new(out, shape)
}
