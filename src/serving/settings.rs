//! What an operator asks of a deployment, checked, and its stored form.

use crate::engine::device::{DeviceChoice, Precision};
use crate::store::schema::DeploySettingsRecordV2;

use super::ServeError;

/// What an operator asks of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploySettings {
    pub version: u32,
    pub device: DeviceChoice,
    /// f16 computes on a GPU in half precision; where `auto` lands on the CPU it is f32.
    pub precision: Precision,
    pub instances: u32,
    pub max_batch_size: u32,
    pub max_batch_delay_us: u32,
    pub queue_capacity: u32,
}

impl DeploySettings {
    /// Defaults for `version`: auto device, one instance, batches of up to 8 gathered
    /// without waiting, 64 requests queued.
    #[must_use]
    pub fn new(version: u32) -> Self {
        Self {
            version,
            device: DeviceChoice::Auto,
            precision: Precision::F32,
            instances: 1,
            max_batch_size: 8,
            max_batch_delay_us: 0,
            queue_capacity: 64,
        }
    }

    /// # Errors
    /// Values out of their ranges.
    pub fn check(&self) -> Result<(), ServeError> {
        let bad = |what: &str| Err(ServeError::Invalid(what.to_owned()));
        if self.precision == Precision::F16 && self.device == DeviceChoice::Cpu {
            return bad(
                "precision: f16 runs on a GPU (device gpu or auto); the CPU computes in f32",
            );
        }
        if !(1..=64).contains(&self.instances) {
            return bad("instances: 1 to 64");
        }
        if !(1..=4096).contains(&self.max_batch_size) {
            return bad("max_batch_size: 1 to 4096");
        }
        if self.max_batch_delay_us > 1_000_000 {
            return bad("max_batch_delay_us: at most 1000000 (one second)");
        }
        if !(1..=65_536).contains(&self.queue_capacity) {
            return bad("queue_capacity: 1 to 65536");
        }
        Ok(())
    }

    pub(super) fn record(&self) -> DeploySettingsRecordV2 {
        DeploySettingsRecordV2 {
            version: self.version,
            device: match self.device {
                DeviceChoice::Auto => 0,
                DeviceChoice::Gpu => 1,
                DeviceChoice::Cpu => 2,
            },
            precision: match self.precision {
                Precision::F32 => 0,
                Precision::F16 => 1,
            },
            instances: self.instances,
            max_batch_size: self.max_batch_size,
            max_batch_delay_us: self.max_batch_delay_us,
            queue_capacity: self.queue_capacity,
        }
    }

    pub(super) fn from_record(r: &DeploySettingsRecordV2) -> Self {
        Self {
            version: r.version,
            device: match r.device {
                1 => DeviceChoice::Gpu,
                2 => DeviceChoice::Cpu,
                _ => DeviceChoice::Auto,
            },
            precision: match r.precision {
                1 => Precision::F16,
                _ => Precision::F32,
            },
            instances: r.instances,
            max_batch_size: r.max_batch_size,
            max_batch_delay_us: r.max_batch_delay_us,
            queue_capacity: r.queue_capacity,
        }
    }
}

pub(super) fn device_name(choice: DeviceChoice) -> &'static str {
    match choice {
        DeviceChoice::Auto => "auto",
        DeviceChoice::Gpu => "gpu",
        DeviceChoice::Cpu => "cpu",
    }
}
