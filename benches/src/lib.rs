//! `warren-benches`: criterion benchmarks for Warren's hot paths and the
//! scripts that run competitors side by side in the same run (`make bench`).
