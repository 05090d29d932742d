//! The built-in task kinds and their typed payloads. A payload is parsed (unknown fields
//! refused, ranges checked) when the task is submitted, so a task that starts always has a
//! valid one. Adding a kind: a variant, a line in [`KIND_NAMES`], a payload struct, an arm in
//! `run.rs`.

use serde::{Deserialize, Serialize};

use crate::engine::device::Precision;

/// Every kind, by name. The index is the kind's slot in per-kind tables.
pub const KIND_NAMES: &[&str] = &[
    "store.backup",
    "store.compact",
    "tasks.purge",
    "system.selftest",
    "model.validate",
    "model.benchmark",
    "system.sleep",
];

/// How `system.sleep` fails on purpose (a diagnostic kind, for tests and drills).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Retryable,
    Terminal,
}

/// A task kind with its validated payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A consistent snapshot of the store and the model blobs, with a SHA-256 manifest.
    StoreBackup,
    /// A compacted copy of the store; reports how much space compaction would reclaim.
    StoreCompact,
    /// Deletes finished tasks past the retention (the configured one unless given).
    TasksPurge {
        max_age_s: Option<u64>,
        max_tasks: Option<u64>,
    },
    /// Store write, free disk, and the engine running a built-in model.
    SystemSelftest,
    /// Loads and runs a registry version once under the engine's limits.
    ModelValidate { model: String, version: u32 },
    /// Runs a registry version `runs` times on a device; latency percentiles.
    ModelBenchmark {
        model: String,
        version: u32,
        runs: u32,
        device: String,
        /// f16 only where a GPU may be picked.
        precision: Precision,
    },
    /// Diagnostic: sleeps `ms` cooperatively (cancel and time limits interrupt it), and
    /// fails on purpose when asked (the first `fail_attempts` attempts, or always with
    /// `fail`).
    SystemSleep {
        ms: u64,
        fail_attempts: u32,
        fail: Option<FailMode>,
    },
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PurgePayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_age_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tasks: Option<u64>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ModelPayload {
    model: String,
    version: u32,
}

fn default_runs() -> u32 {
    100
}

fn default_device() -> String {
    "cpu".into()
}

fn default_precision() -> String {
    "f32".into()
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BenchmarkPayload {
    model: String,
    version: u32,
    #[serde(default = "default_runs")]
    runs: u32,
    #[serde(default = "default_device")]
    device: String,
    #[serde(default = "default_precision")]
    precision: String,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    ms: u64,
    #[serde(default)]
    fail_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fail: Option<FailMode>,
}

/// The longest `system.sleep`: one day.
const MAX_SLEEP_MS: u64 = 86_400_000;
const MAX_RUNS: u32 = 100_000;

fn parse_as<T: serde::de::DeserializeOwned>(
    name: &str,
    payload: &serde_json::Value,
) -> Result<T, String> {
    let payload = if payload.is_null() {
        &serde_json::Value::Object(serde_json::Map::new())
    } else {
        payload
    };
    T::deserialize(payload).map_err(|e| format!("payload of {name}: {e}"))
}

impl Kind {
    /// Parses and validates a payload for the kind `name`.
    ///
    /// # Errors
    /// An unknown kind, unknown fields, values out of range; the message says which.
    pub fn parse(name: &str, payload: &serde_json::Value) -> Result<Self, String> {
        let kind = match name {
            "store.backup" => {
                parse_as::<Empty>(name, payload)?;
                Self::StoreBackup
            }
            "store.compact" => {
                parse_as::<Empty>(name, payload)?;
                Self::StoreCompact
            }
            "tasks.purge" => {
                let p: PurgePayload = parse_as(name, payload)?;
                Self::TasksPurge {
                    max_age_s: p.max_age_s,
                    max_tasks: p.max_tasks,
                }
            }
            "system.selftest" => {
                parse_as::<Empty>(name, payload)?;
                Self::SystemSelftest
            }
            "model.validate" => {
                let p: ModelPayload = parse_as(name, payload)?;
                crate::registry::check_name(&p.model)
                    .map_err(|e| format!("payload of {name}: {e}"))?;
                Self::ModelValidate {
                    model: p.model,
                    version: p.version,
                }
            }
            "model.benchmark" => {
                let p: BenchmarkPayload = parse_as(name, payload)?;
                crate::registry::check_name(&p.model)
                    .map_err(|e| format!("payload of {name}: {e}"))?;
                if p.runs == 0 || p.runs > MAX_RUNS {
                    return Err(format!("payload of {name}: runs must be 1 to {MAX_RUNS}"));
                }
                if !matches!(p.device.as_str(), "cpu" | "gpu" | "auto") {
                    return Err(format!(
                        "payload of {name}: device must be cpu, gpu or auto"
                    ));
                }
                let Some(precision) = Precision::parse(&p.precision) else {
                    return Err(format!("payload of {name}: precision must be f32 or f16"));
                };
                if precision == Precision::F16 && p.device == "cpu" {
                    return Err(format!(
                        "payload of {name}: precision f16 runs on a GPU (device gpu or auto)"
                    ));
                }
                Self::ModelBenchmark {
                    model: p.model,
                    version: p.version,
                    runs: p.runs,
                    device: p.device,
                    precision,
                }
            }
            "system.sleep" => {
                let p: SleepPayload = parse_as(name, payload)?;
                if p.ms > MAX_SLEEP_MS {
                    return Err(format!(
                        "payload of {name}: ms must be at most {MAX_SLEEP_MS}"
                    ));
                }
                Self::SystemSleep {
                    ms: p.ms,
                    fail_attempts: p.fail_attempts,
                    fail: p.fail,
                }
            }
            other => {
                return Err(format!(
                    "unknown task kind `{}`; cairn runs {}",
                    other.chars().take(64).collect::<String>(),
                    KIND_NAMES.join(", ")
                ));
            }
        };
        Ok(kind)
    }

    #[must_use]
    pub fn name(&self) -> &'static str {
        KIND_NAMES[self.index()]
    }

    /// Whether an attempt of this kind may begin before its submission is durable (see
    /// `Core::submit`): true where everything it does stays inside the store or is
    /// read-only, so a crash before that commit leaves nothing behind but an unanswered
    /// submission. A backup writes files and compaction rewrites the store: they wait.
    #[must_use]
    pub fn may_run_ahead(&self) -> bool {
        !matches!(self, Self::StoreBackup | Self::StoreCompact)
    }

    /// The kind's slot in per-kind tables (its place in [`KIND_NAMES`]).
    #[must_use]
    pub fn index(&self) -> usize {
        match self {
            Self::StoreBackup => 0,
            Self::StoreCompact => 1,
            Self::TasksPurge { .. } => 2,
            Self::SystemSelftest => 3,
            Self::ModelValidate { .. } => 4,
            Self::ModelBenchmark { .. } => 5,
            Self::SystemSleep { .. } => 6,
        }
    }

    /// The payload as canonical JSON text (what is stored and shown).
    #[must_use]
    pub fn payload_json(&self) -> String {
        let value = match self {
            Self::StoreBackup | Self::StoreCompact | Self::SystemSelftest => {
                serde_json::to_value(Empty {})
            }
            Self::TasksPurge {
                max_age_s,
                max_tasks,
            } => serde_json::to_value(PurgePayload {
                max_age_s: *max_age_s,
                max_tasks: *max_tasks,
            }),
            Self::ModelValidate { model, version } => serde_json::to_value(ModelPayload {
                model: model.clone(),
                version: *version,
            }),
            Self::ModelBenchmark {
                model,
                version,
                runs,
                device,
                precision,
            } => serde_json::to_value(BenchmarkPayload {
                model: model.clone(),
                version: *version,
                runs: *runs,
                device: device.clone(),
                precision: precision.as_str().to_owned(),
            }),
            Self::SystemSleep {
                ms,
                fail_attempts,
                fail,
            } => serde_json::to_value(SleepPayload {
                ms: *ms,
                fail_attempts: *fail_attempts,
                fail: *fail,
            }),
        };
        value.map_or_else(|_| "{}".into(), |v| v.to_string())
    }
}

/// The slot of a kind name, if it is one.
#[must_use]
pub fn kind_index(name: &str) -> Option<usize> {
    KIND_NAMES.iter().position(|k| *k == name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payloads_are_checked_and_round_trip() {
        let kind = Kind::parse("system.sleep", &json!({"ms": 5, "fail": "terminal"})).unwrap();
        let again = Kind::parse(
            kind.name(),
            &serde_json::from_str(&kind.payload_json()).unwrap(),
        );
        assert_eq!(again.unwrap(), kind);
        assert!(
            Kind::parse("system.sleep", &json!({"ms": 5, "x": 1}))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            Kind::parse("nope", &json!({}))
                .unwrap_err()
                .contains("store.backup")
        );
        assert!(
            Kind::parse(
                "model.benchmark",
                &json!({"model": "m", "version": 1, "runs": 0})
            )
            .is_err()
        );
        // Precision: f32 by default, f16 only where a GPU may be picked; round-trips.
        let bench = |payload| Kind::parse("model.benchmark", &payload);
        let Kind::ModelBenchmark { precision, .. } =
            bench(json!({"model": "m", "version": 1})).unwrap()
        else {
            panic!("not a benchmark");
        };
        assert_eq!(precision, Precision::F32);
        let f16 = bench(json!({"model": "m", "version": 1, "device": "auto", "precision": "f16"}))
            .unwrap();
        assert_eq!(
            Kind::parse(
                f16.name(),
                &serde_json::from_str(&f16.payload_json()).unwrap()
            )
            .unwrap(),
            f16
        );
        for (payload, says) in [
            (
                json!({"model": "m", "version": 1, "precision": "f16"}),
                "runs on a GPU",
            ),
            (
                json!({"model": "m", "version": 1, "precision": "bf16"}),
                "f32 or f16",
            ),
        ] {
            assert!(bench(payload).unwrap_err().contains(says));
        }
        assert_eq!(
            Kind::parse("store.backup", &serde_json::Value::Null).unwrap(),
            Kind::StoreBackup
        );
        for (i, name) in KIND_NAMES.iter().enumerate() {
            assert_eq!(kind_index(name), Some(i));
        }
    }
}
