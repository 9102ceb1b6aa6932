// glibc's malloc keeps freed password-hash buffers (19 MiB each) in its arenas after its
// dynamic mmap threshold rises: a few hundred logins grew the process by hundreds of MiB.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    confab::cli::main()
}
