//! The ONNX backend node conformance suite, run against the engine on the CPU.
//!
//! Slow and data-hungry, so it runs when `CAIRN_ONNX_NODE_TESTS` names the suite's
//! `node` directory (`scripts/conformance` fetches it with pip and sets it; CI runs it
//! once). Each case loads `model.onnx`, feeds `test_data_set_*/input_*.pb`, compares
//! `output_*.pb` with rtol 1e-3 and atol 1e-7 (as onnx does). Results per operator go to
//! `target/conformance.md`.
//!
//! The bar: every operator cairn claims passes all of its cases, except those listed with
//! a reason in `tests/conformance/exceptions.txt`. cairn claims an operator when it loads
//! (translates) some case of it: "supported" means "translated", with no list to keep.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cairn::engine::{Model, cpu, proto};
use onnx_ir::{Message, ModelProto};

#[derive(Default, Debug)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
    refused: usize,
    /// Every case made only of claimed operators that did not pass, with why.
    not_passed: Vec<String>,
    claimed: bool,
}

/// `pattern` with `*` wildcards matches `name`.
fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// The operator a case is reported under (the first node that is not a Constant feeding
/// it), and every operator type the case uses.
fn case_op(model: &[u8]) -> Option<(String, BTreeSet<String>)> {
    let proto = ModelProto::parse_from_bytes(model).ok()?;
    let nodes = &proto.graph.node;
    let op = nodes
        .iter()
        .find(|n| n.op_type != "Constant")
        .or_else(|| nodes.first())?
        .op_type
        .clone();
    let types = nodes.iter().map(|n| n.op_type.clone()).collect();
    Some((op, types))
}

/// The case-name patterns of `tests/conformance/FILE` (first word of each line; `#`
/// starts a comment).
fn exception_patterns_in(file: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance")
        .join(file);
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn close(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-7 + 1e-3 * w.abs() || (g == w)
        })
}

fn run_case(dir: &Path) -> Result<(), String> {
    run_case_on(dir, &cpu())
}

fn run_case_on(dir: &Path, device: &burn::tensor::Device) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let model = Model::load(&bytes, device).map_err(|e| format!("load: {e}"))?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let mut inputs = Vec::new();
        for (i, spec) in model.inputs().iter().enumerate() {
            let raw =
                std::fs::read(set.join(format!("input_{i}.pb"))).map_err(|e| e.to_string())?;
            let (_, data) = proto::decode(&raw).map_err(|e| e.to_string())?;
            inputs.push((spec.name.clone(), data));
        }
        let outputs = model.run(inputs).map_err(|e| format!("run: {e}"))?;
        for (i, (name, got)) in outputs.into_iter().enumerate() {
            let raw =
                std::fs::read(set.join(format!("output_{i}.pb"))).map_err(|e| e.to_string())?;
            let (_, want) = proto::decode(&raw).map_err(|e| e.to_string())?;
            let want_shape: Vec<usize> = want.shape().to_vec();
            let got_shape: Vec<usize> = got.shape().to_vec();
            let same_shape = want_shape == got_shape || (want_shape.is_empty() && got_shape == [1]);
            let (g, w): (Vec<f32>, Vec<f32>) = (
                got.convert::<f32>()
                    .try_to_vec()
                    .map_err(|e| format!("{e:?}"))?,
                want.convert::<f32>()
                    .try_to_vec()
                    .map_err(|e| format!("{e:?}"))?,
            );
            if !same_shape || !close(&g, &w) {
                return Err(format!(
                    "output {name}: shape {got_shape:?} vs {want_shape:?}, or values differ"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn onnx_node_suite() {
    let Some(root) = std::env::var_os("CAIRN_ONNX_NODE_TESTS") else {
        eprintln!(
            "CAIRN_ONNX_NODE_TESTS is unset: the conformance suite did not run (scripts/conformance runs it)"
        );
        return;
    };
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("node suite dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    cases.sort();
    let mut by_op: BTreeMap<String, Tally> = BTreeMap::new();
    // Per case: its name, operator, operator types and why it did not pass (if it did not).
    let mut outcomes: Vec<(String, String, BTreeSet<String>, Option<String>)> = Vec::new();
    let mut translated: BTreeSet<String> = BTreeSet::new();
    for case in &cases {
        let Ok(bytes) = std::fs::read(case.join("model.onnx")) else {
            continue;
        };
        let Some((op, types)) = case_op(&bytes) else {
            continue;
        };
        let tally = by_op.entry(op.clone()).or_default();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = match std::panic::catch_unwind(|| run_case(case)) {
            Ok(Ok(())) => {
                tally.passed += 1;
                translated.extend(types.iter().cloned());
                outcomes.push((name, op, types, None));
                continue;
            }
            Ok(Err(e)) if e.starts_with("load: ") || e.contains("unsupported") => {
                tally.refused += 1;
                e
            }
            Ok(Err(e)) => {
                tally.failed.push(format!("{name}: {e}"));
                translated.extend(types.iter().cloned());
                e
            }
            Err(_) => {
                tally.failed.push(format!("{name}: panicked"));
                "panicked".to_owned()
            }
        };
        outcomes.push((name, op, types, Some(outcome)));
    }
    // Why each case did not pass, for whoever picks the next operator.
    let reasons: String = outcomes
        .iter()
        .filter_map(|(name, op, _, outcome)| {
            let why = outcome.as_deref()?.replace('\n', " ");
            Some(format!("{op}\t{name}\t{why}\n"))
        })
        .collect();
    let _ = std::fs::write(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/conformance-not-passed.tsv"),
        reasons,
    );
    for (name, op, types, outcome) in outcomes {
        let claimed = types.iter().all(|t| translated.contains(t));
        let tally = by_op.entry(op).or_default();
        tally.claimed |= claimed;
        if let (true, Some(outcome)) = (claimed, outcome) {
            tally.not_passed.push(format!("{name}: {outcome}"));
        }
    }
    let excepted = exception_patterns_in("exceptions.txt");
    let excepted: Vec<&str> = excepted.iter().map(String::as_str).collect();
    let mut report =
        String::from("| operator | passed | failed | refused at load |\n|---|---|---|---|\n");
    let (mut passed, mut total) = (0, 0);
    let mut broken = Vec::new();
    for (op, tally) in &by_op {
        let cases = tally.passed + tally.failed.len() + tally.refused;
        total += cases;
        passed += tally.passed;
        report.push_str(&format!(
            "| {op} | {} | {} | {} |\n",
            tally.passed,
            tally.failed.len(),
            tally.refused
        ));
        {
            for failure in &tally.not_passed {
                let case = failure.split(':').next().unwrap_or("");
                if !excepted.iter().any(|pattern| matches(pattern, case)) {
                    broken.push(failure.clone());
                }
            }
        }
    }
    report.push_str(&format!("\n{passed} of {total} cases pass.\n"));
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/conformance.md");
    let _ = std::fs::write(&out, &report);
    eprintln!("{report}");
    assert!(
        broken.is_empty(),
        "{} cases of supported operators fail and are not listed in tests/conformance/exceptions.txt:\n{}",
        broken.len(),
        broken.join("\n")
    );
    // An exception that excuses nothing any more goes, so the list only shrinks.
    let not_passed: Vec<&str> = by_op
        .values()
        .flat_map(|t| t.not_passed.iter())
        .map(|f| f.split(':').next().unwrap_or(""))
        .collect();
    let stale: Vec<&&str> = excepted
        .iter()
        .filter(|pattern| !not_passed.iter().any(|case| matches(pattern, case)))
        .collect();
    assert!(
        stale.is_empty(),
        "exceptions that match no failing case (remove them): {stale:?}"
    );
}

/// The same suite on the wgpu path (Vulkan; Mesa's lavapipe in CI), with `--features gpu`
/// and `CAIRN_TEST_WGPU=1`: every case of the claimed operators that passes on the CPU
/// passes on the GPU too, unless `tests/conformance/exceptions-wgpu.txt` lists it with a
/// reason. Counts go to `target/conformance-wgpu.md`.
#[cfg(feature = "gpu")]
#[test]
fn onnx_node_suite_on_wgpu() {
    if std::env::var("CAIRN_TEST_WGPU").as_deref() != Ok("1") {
        eprintln!("CAIRN_TEST_WGPU is not 1: the suite did not run on wgpu");
        return;
    }
    let Some(root) = std::env::var_os("CAIRN_ONNX_NODE_TESTS") else {
        eprintln!("CAIRN_ONNX_NODE_TESTS is unset: the suite did not run on wgpu");
        return;
    };
    let selected = cairn::engine::device::select(cairn::engine::device::DeviceChoice::Gpu)
        .expect("a Vulkan adapter");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("node suite dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    cases.sort();
    let excepted = exception_patterns_in("exceptions-wgpu.txt");
    let excepted: Vec<&str> = excepted.iter().map(String::as_str).collect();
    let (mut total, mut passed, mut broken) = (0, 0, Vec::new());
    for case in &cases {
        let Ok(bytes) = std::fs::read(case.join("model.onnx")) else {
            continue;
        };
        if case_op(&bytes).is_none() || run_case(case).is_err() {
            continue;
        }
        total += 1;
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match std::panic::catch_unwind(|| run_case_on(case, &selected.device)) {
            Ok(Ok(())) => passed += 1,
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e,
                    _ => "panicked".to_owned(),
                };
                if !excepted.iter().any(|pattern| matches(pattern, &name)) {
                    broken.push(format!("{name}: {why}"));
                }
            }
        }
    }
    let adapter = selected
        .adapter
        .map(|a| format!("{} ({}, {})", a.name, a.device_type, a.driver))
        .unwrap_or_default();
    let report = format!(
        "wgpu on {adapter}: {passed} of the {total} claimed-operator cases that pass on the CPU pass.\n"
    );
    let _ = std::fs::write(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/conformance-wgpu.md"),
        &report,
    );
    eprintln!("{report}");
    assert!(
        broken.is_empty(),
        "{} cases pass on the CPU but not on wgpu, and are not in tests/conformance/exceptions-wgpu.txt:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn exception_patterns() {
    assert!(matches("test_abs*", "test_abs_int8"));
    assert!(matches("test_*_int8", "test_abs_int8"));
    assert!(!matches("test_abs", "test_abs_int8"));
    assert!(matches("test_abs", "test_abs"));
}

/// The 9 light real-architecture models of the onnx wheel (`data/light`): inputs are what
/// onnx's runner generates (`arange(n) / n` in the input's shape), outputs are compared
/// with `light_*_output_0.pb`.
#[test]
fn onnx_light_models() {
    let Some(node_dir) = std::env::var_os("CAIRN_ONNX_NODE_TESTS") else {
        eprintln!("CAIRN_ONNX_NODE_TESTS is unset: the light models did not run");
        return;
    };
    let dir = PathBuf::from(node_dir).join("../light");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("light models dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    let mut failures = Vec::new();
    for path in &models {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let outcome = (|| -> Result<(), String> {
            let model = Model::load(&std::fs::read(path).map_err(|e| e.to_string())?, &cpu())
                .map_err(|e| format!("load: {e}"))?;
            let spec = model.inputs()[0].clone();
            let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(1)).collect();
            let n: usize = shape.iter().product();
            #[allow(clippy::cast_precision_loss)]
            let values: Vec<f32> = (0..n).map(|i| (i as f64 / n as f64) as f32).collect();
            let outputs = model
                .run(vec![(
                    spec.name,
                    burn::tensor::TensorData::new(values, shape),
                )])
                .map_err(|e| format!("run: {e}"))?;
            let raw = std::fs::read(dir.join(format!("{name}_output_0.pb")))
                .map_err(|e| e.to_string())?;
            let (_, want) = proto::decode(&raw).map_err(|e| e.to_string())?;
            let got: Vec<f32> = outputs[0]
                .1
                .clone()
                .convert::<f32>()
                .try_to_vec()
                .map_err(|e| format!("{e:?}"))?;
            let want: Vec<f32> = want
                .convert::<f32>()
                .try_to_vec()
                .map_err(|e| format!("{e:?}"))?;
            if close(&got, &want) {
                Ok(())
            } else {
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs())
                    .fold(0f32, f32::max);
                Err(format!(
                    "output differs (max abs diff {worst}, {} vs {} values)",
                    got.len(),
                    want.len()
                ))
            }
        })();
        match outcome {
            Ok(()) => eprintln!("{name}: ok"),
            Err(e) => {
                eprintln!("{name}: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    assert_eq!(models.len(), 9, "the onnx 1.22 wheel ships 9 light models");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
