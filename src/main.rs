fn main() -> std::process::ExitCode {
    fluxadmit::cli::main()
}
