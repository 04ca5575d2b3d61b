//! `warren`: the Warren command line.

fn main() {}
