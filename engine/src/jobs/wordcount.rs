//! Word count: lines of a text file -> words (split on anything that is not a
//! letter or digit, lower-cased) -> count per word.
//!
//! The tokenizer pre-aggregates counts per subtask (a bounded map flushed when
//! full and at the end, like Flink's local aggregation), so the keyed exchange
//! carries one record per distinct word per flush instead of one per word. The
//! keyed stage keeps a rolling sum in keyed state; the last stage keeps the
//! latest sum per word and emits the final counts when the input ends.

use std::path::PathBuf;

use rustc_hash::FxHashMap;

use crate::api::env::StreamEnv;
use crate::api::functions::OneInputOperator;
use crate::config::EngineConfig;
use crate::coordinator::messages::JobOutcome;
use crate::error::JobError;
use crate::jobs::word_table::WordTable;
use crate::runtime::collector::Emitter;

/// Distinct words a tokenizer holds before it emits its partial counts.
pub const PARTIAL_COUNTS_MAX: usize = 1 << 16;

/// Slots of a tokenizer's table: it emits its partial counts when half full.
const WORD_TABLE_SLOTS: usize = 2 * PARTIAL_COUNTS_MAX;

/// Splits lines into lower-cased words and counts them locally.
#[derive(Clone, Default)]
pub struct TokenizeAndCount {
    /// Allocated on first use, so the operator is cheap to clone per subtask.
    table: Option<WordTable>,
    word: String,
}

impl TokenizeAndCount {
    fn emit_all(&mut self, out: &mut Emitter<'_, (String, u64)>) {
        if let Some(table) = &mut self.table {
            table.drain(|word, count| out.emit((word, count)));
        }
    }
}

/// Byte classes for the ASCII fast path.
const SEPARATOR: u8 = 0;
const LOWER_OR_DIGIT: u8 = 1;
const UPPER: u8 = 2;
const NON_ASCII: u8 = 3;

const fn byte_classes() -> [u8; 256] {
    let mut table = [SEPARATOR; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c >= 0x80 {
            NON_ASCII
        } else if c.is_ascii_uppercase() {
            UPPER
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            LOWER_OR_DIGIT
        } else {
            SEPARATOR
        };
        b += 1;
    }
    table
}

static BYTE_CLASS: [u8; 256] = byte_classes();

/// Calls `f` with each word of `line`, lower-cased. A word is a maximal run of
/// alphanumeric characters (Unicode's definition). Words that are already
/// lower-case ASCII are passed as slices of the line without copying;
/// `scratch` holds the others.
pub fn for_each_word(line: &str, scratch: &mut String, mut f: impl FnMut(&str)) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Skip separators.
        while i < bytes.len() && BYTE_CLASS[bytes[i] as usize] == SEPARATOR {
            i += 1;
        }
        let start = i;
        let mut simple = true;
        while i < bytes.len() {
            match BYTE_CLASS[bytes[i] as usize] {
                LOWER_OR_DIGIT => i += 1,
                UPPER => {
                    simple = false;
                    i += 1;
                }
                NON_ASCII => {
                    simple = false;
                    break;
                }
                _ => break,
            }
        }
        if i < bytes.len() && BYTE_CLASS[bytes[i] as usize] == NON_ASCII {
            // Non-ASCII in or after the word: decode it character by character.
            scratch.clear();
            let mut end = start;
            for c in line[start..].chars() {
                if !c.is_alphanumeric() {
                    break;
                }
                scratch.extend(c.to_lowercase());
                end += c.len_utf8();
            }
            if scratch.is_empty() {
                // A non-ASCII separator: step over it.
                end += line[end..].chars().next().map_or(1, char::len_utf8);
            } else {
                f(scratch);
            }
            i = end;
            continue;
        }
        if i > start {
            if simple {
                f(&line[start..i]);
            } else {
                scratch.clear();
                scratch.push_str(&line[start..i]);
                scratch.make_ascii_lowercase();
                f(scratch);
            }
        }
    }
}

impl OneInputOperator<String, (String, u64)> for TokenizeAndCount {
    fn process(&mut self, line: String, out: &mut Emitter<'_, (String, u64)>) {
        let table = self
            .table
            .get_or_insert_with(|| WordTable::with_capacity(WORD_TABLE_SLOTS));
        for_each_word(&line, &mut self.word, |w| table.add(w));
        if table.is_full() {
            self.emit_all(out);
        }
    }

    fn finish(&mut self, out: &mut Emitter<'_, (String, u64)>) {
        self.emit_all(out);
    }
}

/// Keeps the latest value per key and emits them all at the end of input.
#[derive(Clone, Default)]
pub struct LastPerKey {
    latest: FxHashMap<String, u64>,
}

impl OneInputOperator<(String, u64), (String, u64)> for LastPerKey {
    fn process(&mut self, (word, count): (String, u64), _out: &mut Emitter<'_, (String, u64)>) {
        self.latest.insert(word, count);
    }
    fn finish(&mut self, out: &mut Emitter<'_, (String, u64)>) {
        for (word, count) in self.latest.drain() {
            out.emit((word, count));
        }
    }
}

pub struct WordCountOptions {
    pub input: PathBuf,
    /// Writes every `word count` line here (one file, or a directory of
    /// part files at parallelism > 1) instead of collecting the counts.
    pub output: Option<PathBuf>,
    pub config: EngineConfig,
}

pub struct WordCountResult {
    /// All counts, when no output file was asked for.
    pub counts: Vec<(String, u64)>,
    pub outcome: JobOutcome,
    pub input_bytes: u64,
}

/// Builds and runs word count.
pub fn run(options: WordCountOptions) -> Result<WordCountResult, JobError> {
    let input_bytes = std::fs::metadata(&options.input)
        .map(|m| m.len())
        .unwrap_or(0);
    let env = StreamEnv::new(options.config);
    let counts = env
        .read_text_file(options.input.clone())
        .transform("Tokenize", TokenizeAndCount::default())
        .key_by(|(word, _): &(String, u64)| word.clone())
        .sum(|(_, count): &(String, u64)| *count)
        .name("Count")
        .transform("Final counts", LastPerKey::default());
    let handle = match &options.output {
        Some(path) => {
            counts.write_text_file(
                path.clone(),
                |(word, count): &(String, u64), line: &mut String| {
                    use std::fmt::Write;
                    let _ = write!(line, "{word} {count}");
                },
            );
            None
        }
        None => Some(counts.collect()),
    };
    let outcome = env.execute("word count")?;
    Ok(WordCountResult {
        counts: handle.map(|h| h.take()).unwrap_or_default(),
        outcome,
        input_bytes,
    })
}

/// The `n` most frequent words, ties broken alphabetically.
pub fn top(counts: &[(String, u64)], n: usize) -> Vec<(String, u64)> {
    let mut sorted = counts.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted.truncate(n);
    sorted
}

/// Writes a deterministic text of about `size_bytes` bytes: lines of words
/// drawn from a Zipf-like vocabulary, for benchmarks and tests.
pub fn generate_text(path: &std::path::Path, size_bytes: u64, seed: u64) -> std::io::Result<()> {
    use std::io::Write;
    const VOCABULARY: usize = 50_000;
    let vocabulary: Vec<String> = (0..VOCABULARY).map(|i| synthetic_word(i as u64)).collect();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state = seed | 1;
    let mut written = 0u64;
    let mut line = String::new();
    while written < size_bytes {
        line.clear();
        for _ in 0..12 {
            // xorshift64*, then a skewed pick: small ranks are far more frequent.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
            let rank = ((VOCABULARY as f64).powf(u) as usize).min(VOCABULARY) - 1;
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&vocabulary[rank]);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.flush()
}

fn synthetic_word(i: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "is", "on", "ur", "ba",
        "de",
    ];
    let mut word = String::new();
    let mut n = i;
    loop {
        word.push_str(SYLLABLES[(n % 16) as usize]);
        n /= 16;
        if n == 0 {
            break;
        }
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word(line, &mut String::new(), |w| out.push(w.to_string()));
        out
    }

    fn reference(line: &str) -> Vec<String> {
        line.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect()
    }

    #[test]
    fn splits_like_the_plain_definition() {
        for line in [
            "",
            "hello world",
            "  Hello, World!  ",
            "don't stop-me now42 X",
            "Grüße aus Köln — ÉTÉ été",
            "naïve café—crème ÀB",
            "日本語 テキスト",
            "a—b",
            "—",
            "ABC—",
            "x\u{00a0}y",
        ] {
            assert_eq!(words(line), reference(line), "line {line:?}");
        }
    }
}
