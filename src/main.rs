fn main() -> std::process::ExitCode {
    confab::cli::main()
}
