//! Choosing where inference runs: a real GPU through wgpu (Vulkan pinned), else the CPU
//! through burn's flex backend — also when the only Vulkan adapter is a CPU one
//! (lavapipe, llvmpipe), since flex is far faster there. What was picked, and why, is
//! reported for health and metrics.

#[cfg(feature = "gpu")]
use std::sync::OnceLock;

use burn::tensor::Device;

use super::EngineError;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A real GPU when there is one, else the CPU.
    Auto,
    /// The GPU through wgpu (Vulkan); a CPU-type adapter is accepted when forced.
    Gpu,
    /// The CPU (burn's flex backend).
    Cpu,
}

/// The adapter wgpu found, as its driver reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterInfo {
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    /// Whether its shaders can compute in f16 (wgpu's `SHADER_F16`): what
    /// [`Precision::F16`] needs.
    pub f16: bool,
}

/// The float type a model computes in. f16 is opt-in, per deployment, on a GPU only: it
/// halves weight memory and bandwidth and reaches tensor cores, at an accuracy cost stated
/// per model in `docs/engine-conformance.md`. Inputs and outputs stay f32 either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    #[default]
    F32,
    /// Weights and activations in f16 on the GPU; the CPU always computes in f32.
    F16,
}

impl Precision {
    /// `f32` or `f16`, as the API, tasks and the command line write it.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        [Self::F32, Self::F16]
            .into_iter()
            .find(|p| p.as_str() == text)
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

/// The device inference runs on, and why.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// `gpu` or `cpu`.
    pub kind: &'static str,
    pub adapter: Option<AdapterInfo>,
    pub reason: String,
    /// What the device computes in (f32 on the CPU whatever was asked).
    pub precision: Precision,
}

/// Keeps what cubecl learns about the GPU (kernel autotune results with `gpu-tuned`, and
/// its other caches) under `dir` — the appliance's data dir, not the service user's home
/// or `/tmp` — so tuning is done once per device and model shape and survives restarts.
/// Call before the GPU starts; the first call wins (false when cubecl was configured
/// already). `CUBECL_*` environment variables still apply.
#[cfg(feature = "gpu")]
pub fn keep_gpu_cache_in(dir: &std::path::Path) -> bool {
    use burn::cubecl::config::cache::CacheConfig;
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let mut config = CubeClRuntimeConfig::default().override_from_env();
    config.environment.path = CacheConfig::Directory(dir.to_path_buf());
    CubeClRuntimeConfig::try_set(config)
}

/// Without GPU support there is nothing to keep.
#[cfg(not(feature = "gpu"))]
pub fn keep_gpu_cache_in(_dir: &std::path::Path) -> bool {
    false
}

/// The outcome of bringing up wgpu, once per process (a wgpu runtime cannot be set up twice).
#[cfg(feature = "gpu")]
fn vulkan() -> &'static Result<(Device, AdapterInfo), String> {
    static VULKAN: OnceLock<Result<(Device, AdapterInfo), String>> = OnceLock::new();
    VULKAN.get_or_init(|| {
        use burn::tensor::wgpu::WgpuBackend;
        let started = std::panic::catch_unwind(|| {
            Device::wgpu_options()
                .graphics_api(WgpuBackend::Vulkan)
                .init_with_setup()
        });
        match started {
            Ok(Ok((device, setup))) => {
                let info = setup.adapter.get_info();
                Ok((
                    device,
                    AdapterInfo {
                        name: info.name,
                        device_type: format!("{:?}", info.device_type),
                        backend: format!("{:?}", info.backend),
                        driver: format!("{} {}", info.driver, info.driver_info)
                            .trim()
                            .to_owned(),
                        f16: setup
                            .adapter
                            .features()
                            .contains(burn::tensor::wgpu::wgpu::Features::SHADER_F16),
                    },
                ))
            }
            Ok(Err(e)) => Err(format!("no Vulkan adapter: {e}")),
            Err(_) => Err("the Vulkan driver failed to start".into()),
        }
    })
}

/// Picks the device for `choice`.
///
/// # Errors
/// `Gpu` was asked for and there is no Vulkan adapter (or the build has no GPU support).
pub fn select(choice: DeviceChoice) -> Result<Selected, EngineError> {
    let cpu = |reason: String| Selected {
        device: super::cpu(),
        kind: "cpu",
        adapter: None,
        reason,
        precision: Precision::F32,
    };
    match choice {
        DeviceChoice::Cpu => Ok(cpu("asked for the CPU".into())),
        #[cfg(not(feature = "gpu"))]
        DeviceChoice::Gpu => Err(EngineError::Unsupported(
            "this build has no GPU support (feature `gpu`)".into(),
        )),
        #[cfg(not(feature = "gpu"))]
        DeviceChoice::Auto => Ok(cpu("this build has no GPU support".into())),
        #[cfg(feature = "gpu")]
        DeviceChoice::Gpu | DeviceChoice::Auto => match vulkan() {
            Ok((device, adapter))
                if choice == DeviceChoice::Gpu || adapter.device_type != "Cpu" =>
            {
                Ok(Selected {
                    device: device.clone(),
                    kind: "gpu",
                    adapter: Some(adapter.clone()),
                    reason: format!("Vulkan adapter {} ({})", adapter.name, adapter.device_type),
                    precision: Precision::F32,
                })
            }
            Ok((_, adapter)) => Ok(Selected {
                adapter: Some(adapter.clone()),
                ..cpu(format!(
                    "the only Vulkan adapter, {}, runs on the CPU; burn's CPU backend is faster",
                    adapter.name
                ))
            }),
            Err(e) if choice == DeviceChoice::Auto => Ok(cpu(e.clone())),
            Err(e) => Err(EngineError::Unsupported(format!("GPU: {e}"))),
        },
    }
}

/// Picks the device for `choice` computing in `precision`. f16 on a GPU is a second wgpu
/// device on the same adapter whose float tensors default to f16 (so every weight, constant
/// and intermediate of a model loaded on it is f16, and f32 models on the first device
/// are untouched). Where `Auto` settles on the CPU, the model runs in f32 and the reason
/// says so.
///
/// # Errors
/// As [`select`]; f16 asked for on the CPU, or on an adapter without f16 shaders.
pub fn select_with(choice: DeviceChoice, precision: Precision) -> Result<Selected, EngineError> {
    let selected = select(choice)?;
    if precision == Precision::F32 {
        return Ok(selected);
    }
    if selected.kind != "gpu" {
        if choice == DeviceChoice::Cpu {
            return Err(EngineError::Unsupported(
                "precision f16 runs on the GPU only; the CPU computes in f32".into(),
            ));
        }
        return Ok(Selected {
            reason: format!("{}; f16 applies on a GPU only, so f32", selected.reason),
            ..selected
        });
    }
    #[cfg(feature = "gpu")]
    {
        let device = half_precision()
            .as_ref()
            .map_err(|e| EngineError::Unsupported(format!("precision f16 on this GPU: {e}")))?;
        Ok(Selected {
            device: device.clone(),
            precision: Precision::F16,
            reason: format!("{}, computing in f16", selected.reason),
            ..selected
        })
    }
    #[cfg(not(feature = "gpu"))]
    Err(EngineError::Unsupported(
        "this build has no GPU support (feature `gpu`)".into(),
    ))
}

/// The f16 device: a second wgpu runtime on the adapter [`vulkan`] found, configured once
/// with f16 as its default float type.
#[cfg(feature = "gpu")]
fn half_precision() -> &'static Result<Device, String> {
    static HALF: OnceLock<Result<Device, String>> = OnceLock::new();
    HALF.get_or_init(|| {
        use burn::tensor::wgpu::WgpuBackend;
        use burn::tensor::{DeviceKind, FloatDType};
        let (_, adapter) = vulkan().as_ref().map_err(Clone::clone)?;
        if !adapter.f16 {
            return Err(format!(
                "{} has no f16 shaders (wgpu feature SHADER_F16)",
                adapter.name
            ));
        }
        // The first device is wgpu's default pick; the same adapter under its explicit
        // kind is a distinct runtime with its own settings. (With several GPUs of one
        // type, the first of them: edge devices have one.)
        let kind = match adapter.device_type.as_str() {
            "DiscreteGpu" => DeviceKind::DiscreteGpu(0),
            "IntegratedGpu" => DeviceKind::IntegratedGpu(0),
            "VirtualGpu" => DeviceKind::VirtualGpu(0),
            "Cpu" => DeviceKind::Cpu,
            other => return Err(format!("an adapter of type {other}")),
        };
        let started = std::panic::catch_unwind(|| {
            Device::wgpu_options()
                .graphics_api(WgpuBackend::Vulkan)
                .device_kind(kind)
                .init()
        });
        let mut device = match started {
            Ok(Ok(device)) => device,
            Ok(Err(e)) => return Err(format!("a second Vulkan device: {e}")),
            Err(_) => return Err("the Vulkan driver failed to start a second device".into()),
        };
        device
            .configure(FloatDType::F16)
            .map_err(|e| format!("f16 tensors: {e:?}"))?;
        Ok(device)
    })
}
