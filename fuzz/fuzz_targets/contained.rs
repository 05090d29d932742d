//! Which panics the engine's fuzz targets count as findings.
//!
//! onnx-ir panics on some malformed graphs (its type inference indexes and subtracts
//! without checks). The engine parses under a guard that turns such a panic into a
//! refusal ("the ONNX front end failed"), so the process survives it by design; those
//! panics are let through to the guard and the run goes on. Any other panic (in cairn,
//! burn or std) is a finding, and libFuzzer's own hook aborts on it as before.

/// Installs the filter in front of libFuzzer's hook (call once, from `init`).
pub fn install() {
    let finding = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_parser = info
            .location()
            .is_some_and(|at| at.file().contains("/onnx-ir-"));
        if !in_parser {
            finding(info);
        }
    }));
}
