//! The `swarm` load tester; everything lives in the `starling_loadtest` library.

fn main() -> std::process::ExitCode {
    starling_loadtest::main_with_args()
}
