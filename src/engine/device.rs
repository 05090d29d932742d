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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub device_type: String,
    pub backend: String,
    pub driver: String,
}

/// The device inference runs on, and why.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// `gpu` or `cpu`.
    pub kind: &'static str,
    pub adapter: Option<AdapterInfo>,
    pub reason: String,
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
