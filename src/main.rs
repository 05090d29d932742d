// An inference allocates and frees its activations at every step: mimalloc's per-thread
// free lists cost a fraction of glibc's bins there (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cairn::cli::main()
}
