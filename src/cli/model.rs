//! `cairn model inspect | run | bench | profile`: for integrators testing a model on the
//! device.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use burn::tensor::TensorData;
use clap::Subcommand;

use crate::engine::device::{DeviceChoice, Precision, select_with};
use crate::engine::elementwise::to_declared;
use crate::engine::{Model, inspect, npy, threads};

/// Where a model runs and what it computes in (`--device`, `--precision`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct On {
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// What the model computes in: f16 halves weights and bandwidth on a GPU (inputs
    /// and outputs stay f32); the CPU always computes in f32.
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Inputs, outputs, operators; exit 0 only if cairn can run the model.
    Inspect { file: PathBuf },
    /// Run the model on `.npy` inputs; write one `.npy` per output.
    Run {
        file: PathBuf,
        /// NAME=PATH.npy, once per model input (the model's own input names).
        #[arg(long = "input", value_name = "NAME=PATH")]
        inputs: Vec<String>,
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
        #[command(flatten)]
        on: On,
    },
    /// Load time, first run, latency percentiles and throughput on synthetic inputs.
    Bench {
        file: PathBuf,
        /// Size of every dynamic dimension (the batch).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// NAME=DIMS (`images=1x3x640x640`): the shape of one input's synthetic data, for
        /// inputs whose dynamic dimensions are more than the batch (an image's size).
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        #[command(flatten)]
        on: On,
        /// CPU threads one inference spreads over (0: every core), as
        /// `engine.intra_op_threads`.
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Callers running inferences at once (as concurrent requests do), each
        /// `iterations` times; latencies and throughput cover them all.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
    },
    /// Time of every step, the device synchronised after each (burn's sync): where an
    /// inference spends its time, issuing work (host) and waiting for it (device).
    Profile {
        file: PathBuf,
        /// Size of every dynamic dimension (the batch).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// NAME=DIMS (`images=1x3x640x640`): the shape of one input's synthetic data, for
        /// inputs whose dynamic dimensions are more than the batch (an image's size).
        #[arg(long = "shape", value_name = "NAME=DIMS")]
        shapes: Vec<String>,
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        #[command(flatten)]
        on: On,
        /// CPU threads one inference spreads over (0: every core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// How many of the slowest steps to list (all of them by operator in any case).
        #[arg(long, default_value_t = 25)]
        top: usize,
    },
}

/// Synthetic inputs of the model's declared types, every dynamic dimension at `batch`:
/// floats in [-0.5, 0.5), integers small and non-negative (valid token ids and indices).
/// `--shape NAME=DIMS` values by input name; each names an input and agrees with its rank
/// and fixed dimensions.
fn given_shapes(model: &Model, given: &[String]) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    let mut shapes = HashMap::new();
    for text in given {
        let (name, dims) = text.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--shape {text}: expected NAME=DIMS, as images=1x3x640x640")
        })?;
        let spec = model
            .inputs()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                anyhow::anyhow!("--shape {text}: the model has no input named {name}")
            })?;
        let dims: Vec<usize> = dims
            .split('x')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                anyhow::anyhow!("--shape {text}: DIMS are sizes joined by x, as 1x3x640x640")
            })?;
        let fits = dims.len() == spec.shape.len()
            && dims
                .iter()
                .zip(&spec.shape)
                .all(|(d, s)| s.is_none_or(|s| s == *d));
        if !fits {
            bail!(
                "--shape {text}: input {name} is {}",
                shape_text(&spec.shape)
            );
        }
        shapes.insert(name.to_owned(), dims);
    }
    Ok(shapes)
}

fn synthetic_inputs(
    model: &Model,
    batch: usize,
    given: &[String],
) -> anyhow::Result<Vec<(String, TensorData)>> {
    let mut shapes = given_shapes(model, given)?;
    model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = shapes
                .remove(&spec.name)
                .unwrap_or_else(|| spec.shape.iter().map(|d| d.unwrap_or(batch)).collect());
            let n: usize = shape.iter().product();
            let data = match spec.element_type() {
                Some(dtype) if !dtype.is_float() => {
                    let values: Vec<i64> = (0..n).map(|i| (i % 7) as i64).collect();
                    to_declared(TensorData::new(values, shape), dtype)?
                }
                _ => {
                    #[expect(clippy::cast_precision_loss, reason = "synthetic values")]
                    let values: Vec<f32> = (0..n).map(|i| ((i % 97) as f32) / 97.0 - 0.5).collect();
                    TensorData::new(values, shape)
                }
            };
            Ok((spec.name.clone(), data))
        })
        .collect()
}

fn device(on: On) -> anyhow::Result<burn::tensor::Device> {
    let selected = select_with(on.device, on.precision)?;
    eprintln!(
        "device: {} {} ({})",
        selected.kind,
        selected.precision.as_str(),
        selected.reason
    );
    if let Some(adapter) = &selected.adapter {
        eprintln!(
            "adapter: {} [{}; {}; {}]",
            adapter.name, adapter.device_type, adapter.backend, adapter.driver
        );
    }
    Ok(selected.device)
}

fn read_model(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Runs a `cairn model` command.
///
/// # Errors
/// The model cannot be read, loaded or run; for `inspect`, it is not runnable.
pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Inspect { file } => {
            let report = inspect(&read_model(&file)?)?;
            println!("model: {}", file.display());
            if let Some(opset) = report.opset {
                println!("opset: {opset}");
            }
            println!("inputs:");
            for spec in &report.inputs {
                println!("  {} {} {}", spec.name, spec.dtype, shape_text(&spec.shape));
            }
            println!("outputs:");
            for spec in &report.outputs {
                println!("  {} {} {}", spec.name, spec.dtype, shape_text(&spec.shape));
            }
            println!("operators:");
            for (op, count) in &report.ops {
                println!("  {op} ×{count}");
            }
            if report.unsupported.is_empty() {
                println!("runnable: yes");
                Ok(())
            } else {
                println!("runnable: no");
                bail!("unsupported: {}", report.unsupported.join(", "))
            }
        }
        ModelCommand::Run {
            file,
            inputs,
            output_dir,
            on,
        } => {
            let device = device(on)?;
            let model = Model::load(&read_model(&file)?, &device)?;
            let mut named = Vec::new();
            for pair in &inputs {
                let (name, path) = pair
                    .split_once('=')
                    .context("--input takes NAME=PATH.npy")?;
                named.push((name.to_owned(), npy::read(&PathBuf::from(path))?));
            }
            std::fs::create_dir_all(&output_dir)
                .with_context(|| format!("cannot create {}", output_dir.display()))?;
            for (name, data) in model.run(named)? {
                let safe: String = name
                    .chars()
                    .map(|c| {
                        if c.is_alphanumeric() || "-_.".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let path = output_dir.join(format!("{safe}.npy"));
                npy::write(&path, &data)?;
                println!("{name}: {:?} → {}", data.shape().to_vec(), path.display());
            }
            Ok(())
        }
        ModelCommand::Bench {
            file,
            batch,
            shapes,
            iterations,
            on,
            threads,
            concurrency,
        } => {
            let device = device(on)?;
            eprintln!("intra-op threads: {}", threads::configure(threads));
            let bytes = read_model(&file)?;
            let started = Instant::now();
            let model = Model::load(&bytes, &device)?;
            let load = started.elapsed();
            let inputs = synthetic_inputs(&model, batch, &shapes)?;
            let started = Instant::now();
            model.run(inputs.clone())?;
            let first = started.elapsed();
            let progress = concurrency == 1 && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let caller = || -> anyhow::Result<Vec<Duration>> {
                let mut times = Vec::with_capacity(iterations.max(1));
                for i in 0..iterations.max(1) {
                    // The copy of the inputs outside the timing: a server decodes each
                    // request's tensors once, and onnxruntime's side binds them once.
                    let inputs = inputs.clone();
                    let started = Instant::now();
                    model.run(inputs)?;
                    times.push(started.elapsed());
                    if progress && i % 10 == 0 {
                        eprint!("\r{}/{} runs", i + 1, iterations);
                    }
                }
                Ok(times)
            };
            let total = Instant::now();
            let mut times = std::thread::scope(|scope| {
                let callers: Vec<_> = (0..concurrency).map(|_| scope.spawn(caller)).collect();
                callers.into_iter().try_fold(Vec::new(), |mut all, c| {
                    all.extend(
                        c.join()
                            .map_err(|_| anyhow::anyhow!("a caller panicked"))??,
                    );
                    anyhow::Ok(all)
                })
            })?;
            if progress {
                eprintln!();
            }
            let wall = total.elapsed();
            times.sort();
            let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!("load: {:.1} ms", load.as_secs_f64() * 1e3);
            println!("first run: {:.1} µs", us(first));
            println!(
                "latency p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, min {:.1} µs",
                us(pct(50)),
                us(pct(90)),
                us(pct(99)),
                us(times[0])
            );
            #[expect(clippy::cast_precision_loss, reason = "counts for a report")]
            let throughput = (times.len() * batch) as f64 / wall.as_secs_f64();
            println!(
                "throughput: {throughput:.0} inferences/s (batch {batch}, {concurrency} caller{})",
                if concurrency == 1 { "" } else { "s" }
            );
            Ok(())
        }
        ModelCommand::Profile {
            file,
            batch,
            shapes,
            iterations,
            on,
            threads,
            top,
        } => {
            let device = device(on)?;
            eprintln!("intra-op threads: {}", threads::configure(threads));
            let model = Model::load(&read_model(&file)?, &device)?;
            let inputs = synthetic_inputs(&model, batch, &shapes)?;
            // One run first: first-use allocations and shader compilation stay out.
            model.run(inputs.clone())?;
            let pool_before = device.memory_pool_usage();
            let before = crate::engine::value::transfers::snapshot();
            let started = Instant::now();
            model.run(inputs.clone())?;
            let unfenced = started.elapsed();
            let after = crate::engine::value::transfers::snapshot();
            let pool_after = device.memory_pool_usage();
            let steps = model.profile(&inputs, iterations)?;
            print_profile(&steps, iterations.max(1), unfenced, top);
            let d = |i: usize| after[i] - before[i];
            println!(
                "\nper run: {} float uploads ({} bytes), {} float read-backs ({} bytes), \
                 inputs and outputs included; {} steps, each synchronised only when profiled",
                d(0),
                d(1),
                d(2),
                d(3),
                steps.len()
            );
            if let (Some(was), Some(now)) = (pool_before, pool_after) {
                let peak = steps.iter().map(|s| s.live_bytes).max().unwrap_or(0);
                println!(
                    "device memory: {} reserved; between runs {} in {} live tensors; one \
                     unfenced run reserved {} more (fresh buffers); at most {} live after a step",
                    mib(now.bytes_reserved),
                    mib(now.bytes_in_use),
                    now.number_allocs,
                    mib(now.bytes_reserved.saturating_sub(was.bytes_reserved)),
                    mib(peak)
                );
            }
            Ok(())
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "sizes for a report")]
fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn print_profile(
    steps: &[crate::engine::model::StepProfile],
    runs: usize,
    unfenced: Duration,
    top: usize,
) {
    #[expect(clippy::cast_precision_loss, reason = "run counts")]
    let per_run = |d: Duration| d.as_secs_f64() * 1e6 / runs as f64;
    let total: f64 = steps.iter().map(|s| per_run(s.total)).sum();
    let issue: f64 = steps.iter().map(|s| per_run(s.issue)).sum();
    println!(
        "{} steps; fenced after each: {total:.1} µs a run ({issue:.1} µs issuing work); \
         one unfenced run: {:.1} µs",
        steps.len(),
        unfenced.as_secs_f64() * 1e6
    );
    let split: Vec<_> = steps.iter().filter(|s| s.split).collect();
    let split_time: f64 = split.iter().map(|s| per_run(s.total)).sum::<f64>() + 0.0;
    println!(
        "{} steps split their work over the intra-op pool: {split_time:.1} µs a run, {:.1}%",
        split.len(),
        100.0 * split_time / total.max(f64::MIN_POSITIVE)
    );
    let host: Vec<_> = steps.iter().filter(|s| s.host).collect();
    let host_time: f64 = host.iter().map(|s| per_run(s.total)).sum::<f64>() + 0.0;
    println!(
        "{} steps ran on cairn's CPU kernels: {host_time:.1} µs a run; {} on burn's operators: \
         {:.1} µs a run",
        host.len(),
        steps.len() - host.len(),
        total - host_time
    );
    let mut by_op: std::collections::BTreeMap<&str, (usize, f64, f64)> =
        std::collections::BTreeMap::new();
    for s in steps {
        let e = by_op.entry(s.op.as_str()).or_default();
        e.0 += 1;
        e.1 += per_run(s.total);
        e.2 += per_run(s.issue);
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    println!(
        "\n{:<24} {:>6} {:>12} {:>12} {:>7}",
        "operator", "steps", "µs/run", "issue µs", "share"
    );
    for (op, (count, t, i)) in &ops {
        println!(
            "{op:<24} {count:>6} {t:>12.1} {i:>12.1} {:>6.1}%",
            100.0 * t / total.max(f64::MIN_POSITIVE)
        );
    }
    let mut slowest: Vec<_> = steps.iter().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.total));
    println!(
        "\n{:<40} {:<20} {:>12} {:>12} {:>6} {:>7}",
        "node", "operator", "µs/run", "issue µs", "split", "kernel"
    );
    for s in slowest.into_iter().take(top) {
        println!(
            "{:<40} {:<20} {:>12.1} {:>12.1} {:>6} {:>7}",
            s.node,
            s.op,
            per_run(s.total),
            per_run(s.issue),
            if s.split { "yes" } else { "-" },
            if s.host { "cairn" } else { "burn" }
        );
    }
    let reserving: Vec<_> = steps.iter().filter(|s| s.reserved > 0).collect();
    if !reserving.is_empty() {
        println!("\nsteps that reserved fresh device memory (per run, after a first run):");
        for s in reserving {
            println!(
                "{:<40} {:<20} {:>12}",
                s.node,
                s.op,
                mib(s.reserved / runs as u64)
            );
        }
    }
    let moving: Vec<_> = steps
        .iter()
        .filter(|s| s.uploads + s.read_backs > 0)
        .collect();
    if !moving.is_empty() {
        println!(
            "\nsteps that move floats between host and device (per run; inputs and outputs \
             are counted below):"
        );
        for s in moving {
            println!(
                "{:<40} {:<20} {:>3} up {:>3} back",
                s.node,
                s.op,
                s.uploads / runs as u64,
                s.read_backs / runs as u64
            );
        }
    }
}
