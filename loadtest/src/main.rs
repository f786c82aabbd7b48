//! The `swarm` load tester.

fn main() {}
