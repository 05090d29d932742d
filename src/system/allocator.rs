//! glibc's allocator, tuned for inference. By default glibc serves every block above a
//! moving threshold (128 KiB to 32 MiB) with a fresh `mmap` and unmaps it on free, and it
//! trims the heap top back to the kernel: an inference's activations and scratch buffers
//! (megabytes, allocated and freed every run) then fault in page by page on every run.
//! Measured on the YOLO-style model (`cairn model bench`, one thread, this 2-core VM):
//! p50 41.9 ms by default, 26.6–31.7 ms with the settings below. The cost is that freed
//! memory stays with the process (up to the trim threshold), which the next inference
//! reuses anyway.

/// Blocks below this come from the heap (glibc's maximum for the setting).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory kept at the top of a heap before it goes back to the kernel.
const TRIM_THRESHOLD: i32 = 128 << 20;

/// Applies the settings; call first thing in `main`, before threads start. A no-op
/// outside glibc (musl's allocator has no such knobs).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; called before any other thread
        // exists. The only raw libc call in cairn: nix does not wrap mallopt.
        let ok = unsafe {
            nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        };
        if !ok {
            eprintln!(
                "cairn: mallopt refused the allocator settings; running with glibc's defaults"
            );
        }
    }
}
