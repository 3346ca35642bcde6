//! A user-written job run from its own `main`: the word count of README.md.
//!
//! `cargo run --release -p rheon --example word_count -- FILE`

use rheon::{EngineConfig, StreamEnv};

fn main() -> Result<(), rheon::JobError> {
    let input = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "README.md".to_string());
    let env = StreamEnv::new(EngineConfig::default()); // one executor per core
    let counts = env
        .read_text_file(input)
        .flat_map(|line: String| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|word| (word, 1u64))
        .key_by(|(word, _): &(String, u64)| word.clone())
        .sum(|(_, n): &(String, u64)| *n)
        .collect();
    let outcome = env.execute("my word count")?;
    let mut finals = std::collections::HashMap::new();
    for (word, n) in counts.take() {
        let entry = finals.entry(word).or_insert(0);
        *entry = n.max(*entry);
    }
    println!("{} distinct words in {:?}", finals.len(), outcome.elapsed);
    Ok(())
}
