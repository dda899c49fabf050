//! `holdfast-server`: serves holdfast over gRPC until SIGTERM or SIGINT. See `--help`.

fn main() -> anyhow::Result<()> {
    holdfast_server::program::main()
}
