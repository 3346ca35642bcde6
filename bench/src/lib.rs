//! Benchmark programs live in `bench/src/bin/`; this library holds shared helpers.
