//! ONNX Einsum: an equation over labelled axes (`"bhid,bhjd->bhij"`), parsed once at load
//! into labels per operand, run as what it is made of: sums over the labels only one
//! operand has, then, two operands at a time, one batched MatMul (labels of both operands
//! and the output are the batch; of both operands only, the contracted depth; of one
//! operand, its rows or columns), then a permutation into the output's order. MaxViT's
//! attention, and many exported `torch.einsum` calls, are exactly this.
//!
//! Left out, refused with an error that says so: a label repeated inside one operand (a
//! diagonal, `"ii->i"`), and labels whose sizes differ between operands (no broadcasting
//! of 1s inside an Einsum). A scalar output is rank 1 of length 1, as scalars are here.

use crate::engine::EngineError;
use crate::engine::limits::{Cap, F32};
use crate::engine::value::{Float, to_array, with_rank};

use super::lift_to;

/// Labels are bytes; an ellipsis's axes get labels from here up, one per axis.
const ELLIPSIS_LABELS: u8 = 0x80;

/// A parsed equation: each operand's labels (`None`: the ellipsis), and the output's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equation {
    operands: Vec<Vec<Option<u8>>>,
    /// `None`: implicit (the ellipsis, then the labels used once, in alphabetical order).
    output: Option<Vec<Option<u8>>>,
}

/// Parses one side's term: letters and at most one `...`; spaces are ignored.
fn term(text: &str, equation: &str) -> Result<Vec<Option<u8>>, EngineError> {
    let bad = |why: &str| EngineError::Invalid(format!("Einsum equation '{equation}': {why}"));
    let mut labels = Vec::new();
    let mut rest = text.trim();
    while let Some(c) = rest.chars().next() {
        if c == '.' {
            rest = rest
                .strip_prefix("...")
                .ok_or_else(|| bad("a '.' that is not '...'"))?;
            if labels.contains(&None) {
                return Err(bad("two ellipses in one term"));
            }
            labels.push(None);
            continue;
        }
        rest = &rest[c.len_utf8()..];
        if c.is_whitespace() {
            continue;
        }
        if !c.is_ascii_alphabetic() {
            return Err(bad(&format!("'{c}' is not a letter")));
        }
        labels.push(Some(c as u8));
    }
    Ok(labels)
}

impl Equation {
    /// Parses `equation` for `inputs` operands.
    pub fn parse(equation: &str, inputs: usize) -> Result<Self, EngineError> {
        let bad = |why: &str| EngineError::Invalid(format!("Einsum equation '{equation}': {why}"));
        let (left, output) = match equation.split_once("->") {
            Some((l, o)) => (l, Some(term(o, equation)?)),
            None => (equation, None),
        };
        let operands = left
            .split(',')
            .map(|t| term(t, equation))
            .collect::<Result<Vec<_>, _>>()?;
        if operands.len() != inputs {
            return Err(bad(&format!(
                "{} terms for {inputs} inputs",
                operands.len()
            )));
        }
        for labels in operands.iter().chain(&output) {
            let named: Vec<u8> = labels.iter().flatten().copied().collect();
            if (1..named.len()).any(|i| named[..i].contains(&named[i])) {
                return Err(EngineError::Unsupported(format!(
                    "Einsum equation '{equation}': a label repeated in one term (a diagonal)"
                )));
            }
        }
        if let Some(out) = &output {
            let used = |l: &Option<u8>| operands.iter().any(|o| o.contains(l));
            if let Some(l) = out.iter().find(|l| !used(l)) {
                return Err(bad(&format!(
                    "output label {} is in no input",
                    l.map_or("...".into(), |c| (c as char).to_string())
                )));
            }
        }
        Ok(Self { operands, output })
    }
}

/// Labels with every ellipsis expanded for operands of these ranks; and the output's.
fn expand(eq: &Equation, ranks: &[usize]) -> Result<(Vec<Vec<u8>>, Vec<u8>), EngineError> {
    let mut widest = 0;
    let mut operands = Vec::new();
    for (labels, &rank) in eq.operands.iter().zip(ranks) {
        let named = labels.iter().flatten().count();
        let wide = rank
            .checked_sub(named)
            .filter(|w| *w == 0 || labels.contains(&None));
        let Some(wide) = wide else {
            return Err(EngineError::Invalid(format!(
                "Einsum: a term of {} labels for a rank-{rank} input",
                labels.len()
            )));
        };
        widest = widest.max(wide);
        operands.push((labels, wide));
    }
    if widest > usize::from(u8::MAX - ELLIPSIS_LABELS) {
        return Err(EngineError::Unsupported(
            "Einsum: too many ellipsis axes".into(),
        ));
    }
    // Ellipsis axes align on the right, as broadcasting does.
    #[expect(clippy::cast_possible_truncation, reason = "bounded just above")]
    let ellipsis = |wide: usize| (widest - wide..widest).map(|i| ELLIPSIS_LABELS + i as u8);
    let expanded = operands
        .into_iter()
        .map(|(labels, wide)| {
            labels
                .iter()
                .flat_map(|l| match l {
                    Some(c) => vec![*c],
                    None => ellipsis(wide).collect(),
                })
                .collect()
        })
        .collect::<Vec<Vec<u8>>>();
    let output = match &eq.output {
        Some(out) => out
            .iter()
            .flat_map(|l| match l {
                Some(c) => vec![*c],
                None => ellipsis(widest).collect(),
            })
            .collect(),
        None => {
            let mut once: Vec<u8> = expanded
                .iter()
                .flatten()
                .copied()
                .filter(|l| *l < ELLIPSIS_LABELS)
                .filter(|l| expanded.iter().flatten().filter(|m| *m == l).count() == 1)
                .collect();
            once.sort_unstable();
            ellipsis(widest).chain(once).collect()
        }
    };
    Ok((expanded, output))
}

/// A float tensor with a label per axis.
struct Labelled {
    value: Float,
    labels: Vec<u8>,
}

impl Labelled {
    fn size(&self, label: u8) -> Option<usize> {
        let at = self.labels.iter().position(|l| *l == label)?;
        self.value.dims().get(at).copied()
    }

    /// Sums out the labels `keep` rejects.
    fn sum_out(self, keep: impl Fn(u8) -> bool) -> Result<Self, EngineError> {
        let Self {
            mut value,
            mut labels,
        } = self;
        while let Some(at) = labels.iter().rposition(|l| !keep(*l)) {
            let mut dims = value.dims();
            if dims.len() == 1 {
                // The last axis: a scalar, which is rank 1 of length 1 here.
                let Float::R1(t) = value else {
                    return Err(EngineError::Internal("Einsum: rank 1 that is not".into()));
                };
                return Ok(Self {
                    value: Float::R1(t.sum_dim(0)),
                    labels: Vec::new(),
                });
            }
            let rank = dims.len();
            value = with_rank!(rank, D => lift_to::<D>(value)?.sum_dim(at));
            dims.remove(at);
            value = value.reshape(&dims)?;
            labels.remove(at);
        }
        Ok(Self { value, labels })
    }

    /// Permutes the axes into `order` (a permutation of the labels).
    fn permute(self, order: &[u8]) -> Result<Self, EngineError> {
        let perm: Vec<usize> = order
            .iter()
            .map(|l| self.labels.iter().position(|m| m == l))
            .collect::<Option<_>>()
            .ok_or_else(|| EngineError::Internal("Einsum: a label went missing".into()))?;
        if perm.iter().enumerate().all(|(i, p)| i == *p) {
            return Ok(Self {
                value: self.value,
                labels: order.to_vec(),
            });
        }
        let rank = perm.len();
        let value = with_rank!(rank, D => lift_to::<D>(self.value)?.permute(to_array::<D>(&perm)));
        Ok(Self {
            value,
            labels: order.to_vec(),
        })
    }
}

/// The Einsum step: `eq` over every input.
pub(super) fn run(
    eq: &Equation,
    mut inputs: Vec<Option<crate::engine::value::Value>>,
    cap: Cap,
) -> Result<Vec<crate::engine::value::Value>, EngineError> {
    let operands = (0..inputs.len())
        .map(|i| super::float_input(&mut inputs, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![crate::engine::value::Value::Float(einsum(
        eq, operands, cap,
    )?)])
}

/// Runs `eq` on `inputs`.
fn einsum(eq: &Equation, inputs: Vec<Float>, cap: Cap) -> Result<Float, EngineError> {
    let ranks: Vec<usize> = inputs.iter().map(Float::rank).collect();
    let (labels, output) = expand(eq, &ranks)?;
    let mut operands: Vec<Labelled> = inputs
        .into_iter()
        .zip(labels)
        .map(|(value, labels)| Labelled { value, labels })
        .collect();
    // Every label's size, the same wherever it appears.
    for (i, a) in operands.iter().enumerate() {
        for b in &operands[i + 1..] {
            for &l in &a.labels {
                if let (Some(x), Some(y)) = (a.size(l), b.size(l))
                    && x != y
                {
                    return Err(EngineError::Invalid(format!(
                        "Einsum: label {} is {x} in one operand and {y} in another",
                        label_name(l)
                    )));
                }
            }
        }
    }
    let mut rest = operands.split_off(1);
    rest.reverse();
    let mut acc = operands
        .pop()
        .ok_or_else(|| EngineError::Invalid("Einsum of nothing".into()))?;
    // Labels a later operand or the output still needs.
    let needed = |l: u8, rest: &[Labelled]| {
        output.contains(&l) || rest.iter().any(|o| o.labels.contains(&l))
    };
    acc = acc.sum_out(|l| needed(l, &rest))?;
    while let Some(next) = rest.pop() {
        let next = next.sum_out(|l| needed(l, &rest) || acc.labels.contains(&l))?;
        acc = contract(acc, next, |l| needed(l, &rest), cap)?;
    }
    let done = acc.permute(&output)?;
    cap.check(&done.value.dims(), F32)?;
    Ok(done.value)
}

fn label_name(l: u8) -> String {
    if l >= ELLIPSIS_LABELS {
        format!("... axis {}", l - ELLIPSIS_LABELS)
    } else {
        (l as char).to_string()
    }
}

/// `a` and `b` as one batched MatMul, keeping the labels `keep` wants.
fn contract(
    a: Labelled,
    b: Labelled,
    keep: impl Fn(u8) -> bool,
    cap: Cap,
) -> Result<Labelled, EngineError> {
    let in_b = |l: &u8| b.labels.contains(l);
    let batch: Vec<u8> = a
        .labels
        .iter()
        .copied()
        .filter(|l| in_b(l) && keep(*l))
        .collect();
    let depth: Vec<u8> = a
        .labels
        .iter()
        .copied()
        .filter(|l| in_b(l) && !keep(*l))
        .collect();
    let rows: Vec<u8> = a.labels.iter().copied().filter(|l| !in_b(l)).collect();
    let columns: Vec<u8> = b
        .labels
        .iter()
        .copied()
        .filter(|l| !a.labels.contains(l))
        .collect();
    let sizes = |t: &Labelled, ls: &[u8]| {
        ls.iter()
            .map(|l| t.size(*l).unwrap_or(1))
            .collect::<Vec<_>>()
    };
    let product = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |p, d| p.checked_mul(*d))
            .ok_or_else(|| EngineError::Limit("Einsum: too large".into()))
    };
    let (batch_dims, row_dims, depth_dims, column_dims) = (
        sizes(&a, &batch),
        sizes(&a, &rows),
        sizes(&a, &depth),
        sizes(&b, &columns),
    );
    let (nb, m, k, n) = (
        product(&batch_dims)?,
        product(&row_dims)?,
        product(&depth_dims)?,
        product(&column_dims)?,
    );
    cap.check(&[nb, m, n], F32)?;
    let order_a: Vec<u8> = batch.iter().chain(&rows).chain(&depth).copied().collect();
    let order_b: Vec<u8> = batch
        .iter()
        .chain(&depth)
        .chain(&columns)
        .copied()
        .collect();
    let a = a.permute(&order_a)?.value.reshape(&[nb, m, k])?;
    let b = b.permute(&order_b)?.value.reshape(&[nb, k, n])?;
    let product = super::nn::matmul(a, b, cap)?;
    let dims: Vec<usize> = batch_dims
        .iter()
        .chain(&row_dims)
        .chain(&column_dims)
        .copied()
        .collect();
    let labels: Vec<u8> = batch.iter().chain(&rows).chain(&columns).copied().collect();
    // No labels left: a scalar, rank 1 of length 1 here.
    let dims = if dims.is_empty() { vec![1] } else { dims };
    Ok(Labelled {
        value: product.reshape(&dims)?,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use burn::tensor::TensorData;

    use super::Equation;
    use crate::engine::test_graphs::{Graph, info, model, node, string, with};
    use crate::engine::{Model, cpu};

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                #[expect(clippy::cast_precision_loss, reason = "test values")]
                let t = i as f32;
                ((t * 0.61 + seed).sin() * 4.0).round() / 4.0
            })
            .collect()
    }

    /// Einsum by its definition: every assignment of every label, summed into the
    /// output's. `terms` are the explicit labels (ellipses written out as letters).
    fn definition(
        terms: &[&str],
        output: &str,
        inputs: &[(Vec<usize>, Vec<f32>)],
    ) -> (Vec<usize>, Vec<f32>) {
        let mut size: BTreeMap<char, usize> = BTreeMap::new();
        for (term, (shape, _)) in terms.iter().zip(inputs) {
            for (c, d) in term.chars().zip(shape) {
                size.insert(c, *d);
            }
        }
        let labels: Vec<char> = size.keys().copied().collect();
        let out_shape: Vec<usize> = output.chars().map(|c| size[&c]).collect();
        let mut out = vec![0f32; out_shape.iter().product::<usize>().max(1)];
        let total: usize = labels.iter().map(|c| size[c]).product();
        for mut flat in 0..total {
            let mut at: BTreeMap<char, usize> = BTreeMap::new();
            for c in labels.iter().rev() {
                at.insert(*c, flat % size[c]);
                flat /= size[c];
            }
            let offset = |term: &str, shape: &[usize]| {
                term.chars().zip(shape).fold(0, |o, (c, d)| o * d + at[&c])
            };
            let product: f32 = terms
                .iter()
                .zip(inputs)
                .map(|(t, (shape, data))| data[offset(t, shape)])
                .product();
            out[offset(output, &out_shape)] += product;
        }
        (
            if out_shape.is_empty() {
                vec![1]
            } else {
                out_shape
            },
            out,
        )
    }

    /// The model's output, and the inputs it ran on.
    type Ran = (Vec<usize>, Vec<f32>, Vec<(Vec<usize>, Vec<f32>)>);

    fn run(equation: &str, shapes: &[&[usize]]) -> Result<Ran, String> {
        run_declared(equation, shapes, true)
    }

    /// [`run`], the inputs' sizes declared in the model or left dynamic.
    fn run_declared(equation: &str, shapes: &[&[usize]], declared: bool) -> Result<Ran, String> {
        let names: Vec<String> = (0..shapes.len()).map(|i| format!("x{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let dims = |s: &[usize]| {
            s.iter()
                .map(|d| Some(*d as i64).filter(|_| declared))
                .collect::<Vec<_>>()
        };
        let bytes = model(Graph {
            nodes: vec![with(
                node("Einsum", "einsum", &refs, &["y"]),
                vec![string("equation", equation)],
            )],
            inputs: names
                .iter()
                .zip(shapes)
                .map(|(n, s)| info(n, 1, &dims(s)))
                .collect(),
            outputs: vec![info("y", 1, &[])],
            initializers: vec![],
        });
        let model = Model::load(&bytes, &cpu()).map_err(|e| e.to_string())?;
        #[expect(clippy::cast_precision_loss, reason = "seeds")]
        let inputs: Vec<(Vec<usize>, Vec<f32>)> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_vec(), values(s.iter().product(), i as f32)))
            .collect();
        let out = model
            .run(
                names
                    .iter()
                    .zip(&inputs)
                    .map(|(n, (s, v))| (n.clone(), TensorData::new(v.clone(), s.clone())))
                    .collect(),
            )
            .map_err(|e| e.to_string())?;
        let y = &out[0].1;
        let data = y.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
        Ok((y.shape().to_vec(), data, inputs))
    }

    fn check(equation: &str, shapes: &[&[usize]], terms: &[&str], output: &str) {
        let (shape, got, inputs) =
            run(equation, shapes).unwrap_or_else(|e| panic!("{equation}: {e}"));
        let (want_shape, want) = definition(terms, output, &inputs);
        assert_eq!(shape, want_shape, "{equation}: shape");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{equation} [{i}]: {g} against {w}"
            );
        }
    }

    #[test]
    fn einsums_match_their_definition() {
        // MaxViT's attention, spaces and capitals as torch writes them.
        check(
            "B G H I D, B G H J D -> B G H I J",
            &[&[2, 1, 3, 4, 5], &[2, 1, 3, 6, 5]],
            &["BGHID", "BGHJD"],
            "BGHIJ",
        );
        check(
            "B G H I J, B G H J D -> B G H I D",
            &[&[2, 1, 3, 4, 6], &[2, 1, 3, 6, 5]],
            &["BGHIJ", "BGHJD"],
            "BGHID",
        );
        check("ij->ji", &[&[3, 4]], &["ij"], "ji");
        check("ij->i", &[&[3, 4]], &["ij"], "i");
        check("i,i", &[&[5], &[5]], &["i", "i"], "");
        check("ij,jk", &[&[3, 4], &[4, 2]], &["ij", "jk"], "ik");
        check("ba,b->a", &[&[3, 4], &[3]], &["ba", "b"], "a");
        check(
            "...ij,...jk->...ik",
            &[&[2, 3, 4, 5], &[2, 3, 5, 2]],
            &["xyij", "xyjk"],
            "xyik",
        );
        check(
            "ij,jk,kl->il",
            &[&[2, 3], &[3, 4], &[4, 5]],
            &["ij", "jk", "kl"],
            "il",
        );
        check("bij,k->bkj", &[&[2, 3, 4], &[5]], &["bij", "k"], "bkj");
        check(
            "nchw,oc->nohw",
            &[&[2, 3, 2, 2], &[4, 3]],
            &["nchw", "oc"],
            "nohw",
        );
    }

    #[test]
    fn einsums_cairn_cannot_run_are_refused_with_reasons() {
        let diagonal = run("ii->i", &[&[3, 3]]).expect_err("a diagonal");
        assert!(diagonal.contains("diagonal"), "{diagonal}");
        // Declared sizes that disagree fail at load; dynamic ones when the run finds them.
        let sizes = run_declared("ij,jk->ik", &[&[3, 4], &[5, 2]], false).expect_err("4 against 5");
        assert!(
            sizes.contains("label j is 4 in one operand and 5"),
            "{sizes}"
        );
        let terms = run("ij->i", &[&[3, 4], &[3, 4]]).expect_err("1 term for 2 inputs");
        assert!(terms.contains("terms"), "{terms}");
        let output = run("ij->k", &[&[3, 4]]).expect_err("k in no input");
        assert!(output.contains("k"), "{output}");
        let rank = run("ijk->i", &[&[3, 4]]).expect_err("3 labels, rank 2");
        assert!(rank.contains("rank 2"), "{rank}");
    }

    #[test]
    fn equations_parse_with_ellipses_and_spaces() {
        assert!(Equation::parse("... i j , ... j k -> ... i k", 2).is_ok());
        assert!(Equation::parse("..i->i", 1).is_err(), "a lone '..'");
        assert!(Equation::parse("i1->i", 1).is_err(), "a digit");
        assert!(Equation::parse("......i->i", 1).is_err(), "two ellipses");
    }
}
