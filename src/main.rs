// mimalloc: a review is mostly short-lived JSON allocations; glibc malloc spent ~45 % of the
// mutate path in malloc/free (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fluxadmit::main()
}
