//! `cairn model inspect | run | bench`: for integrators testing a model on the device.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use burn::tensor::TensorData;
use clap::Subcommand;

use super::device::{DeviceChoice, select};
use super::{Model, inspect, npy};

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
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Load time, first run, latency percentiles and throughput on synthetic inputs.
    Bench {
        file: PathBuf,
        /// Size of every dynamic dimension (the batch).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
}

fn device(choice: DeviceChoice) -> anyhow::Result<burn::tensor::Device> {
    let selected = select(choice)?;
    eprintln!("device: {} ({})", selected.kind, selected.reason);
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
            device: choice,
        } => {
            let device = device(choice)?;
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
            iterations,
            device: choice,
        } => {
            let device = device(choice)?;
            let bytes = read_model(&file)?;
            let started = Instant::now();
            let model = Model::load(&bytes, &device)?;
            let load = started.elapsed();
            let inputs: Vec<(String, TensorData)> = model
                .inputs()
                .iter()
                .map(|spec| {
                    let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(batch)).collect();
                    let n: usize = shape.iter().product();
                    #[expect(clippy::cast_precision_loss, reason = "synthetic values")]
                    let values: Vec<f32> = (0..n).map(|i| ((i % 97) as f32) / 97.0 - 0.5).collect();
                    (spec.name.clone(), TensorData::new(values, shape))
                })
                .collect();
            let started = Instant::now();
            model.run(inputs.clone())?;
            let first = started.elapsed();
            let mut times = Vec::with_capacity(iterations);
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let total = Instant::now();
            for i in 0..iterations.max(1) {
                let started = Instant::now();
                model.run(inputs.clone())?;
                times.push(started.elapsed());
                if progress && i % 10 == 0 {
                    eprint!("\r{}/{} runs", i + 1, iterations);
                }
            }
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
                "latency p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs",
                us(pct(50)),
                us(pct(90)),
                us(pct(99))
            );
            #[expect(clippy::cast_precision_loss, reason = "counts for a report")]
            let throughput = (times.len() * batch) as f64 / wall.as_secs_f64();
            println!("throughput: {throughput:.0} inferences/s (batch {batch})");
            Ok(())
        }
    }
}
