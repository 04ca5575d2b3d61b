//! envd: the daemon inside each capsule (E2B envd protocol). Being built.
fn main() {}
