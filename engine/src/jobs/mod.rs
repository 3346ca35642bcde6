//! Built-in jobs, shared by the `rheon` command, the benchmarks and the tests:
//! word count over a text file and a generator-driven throughput job.

pub mod throughput;
pub mod windowed_sums;
pub mod word_table;
pub mod wordcount;
