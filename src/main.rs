fn main() -> std::process::ExitCode {
    stablehand::run(std::env::args_os())
}
