//! `holdfast`: the command-line client. See `holdfast --help`.

fn main() -> std::process::ExitCode {
    holdfast_client::cli::main()
}
