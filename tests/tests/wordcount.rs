//! Word count against a reference count computed plainly in the test, on
//! generated and hand-written text, at parallelism 1, 2 and 4 (the text file
//! source splits the file by byte ranges: lines crossing a split boundary must
//! be counted once).

use std::path::Path;

use rheon::jobs::wordcount::{for_each_word, generate_text, run, WordCountOptions};
use rheon::JobError;
use rheon_tests::{
    config, read_word_count_output, reference_word_count, sorted, TempDir, PARALLELISMS,
};

fn word_count(input: &Path, parallelism: u32) -> Result<Vec<(String, u64)>, JobError> {
    run(WordCountOptions {
        input: input.to_path_buf(),
        output: None,
        config: config(2, parallelism),
    })
    .map(|r| sorted(r.counts))
}

const HAND_WRITTEN: &str = "The quick, brown fox -- jumps over the LAZY dog.\r\n\
\r\n\
\n\
Don't stop: the dog's bark (\"woof!\") is 100% louder; x2 y_z\r\n\
   leading and trailing spaces   \n\
Ünïcödé wörds: Straße, ÉCOLE école, naïve café — Καλημέρα κόσμε; 東京 und 東京\n\
tabs\tand\tmore\ttabs\n\
the end, THE END, The End";

#[test]
fn the_reference_splits_like_the_job() {
    // The test's reference and the job's tokenizer agree on every line.
    for line in HAND_WRITTEN.lines() {
        let mut words = Vec::new();
        let mut word = String::new();
        for_each_word(line, &mut word, |w| words.push(w.to_string()));
        let expected: Vec<String> = line
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        assert_eq!(words, expected, "line {line:?}");
    }
    let counts = reference_word_count(HAND_WRITTEN);
    let count = |w: &str| counts.iter().find(|(x, _)| x == w).map(|(_, c)| *c);
    assert_eq!(count("the"), Some(6));
    assert_eq!(count("école"), Some(2));
    assert_eq!(count("東京"), Some(2));
    assert_eq!(count("strasse"), None);
    assert_eq!(count("straße"), Some(1));
}

#[test]
fn hand_written_text_at_every_parallelism() {
    let dir = TempDir::new("wc-hand");
    let input = dir.join("input.txt");
    std::fs::write(&input, HAND_WRITTEN).unwrap();
    let expected = reference_word_count(HAND_WRITTEN);
    // More subtasks than lines, too: some splits hold no line start.
    for p in PARALLELISMS.into_iter().chain([7]) {
        assert_eq!(word_count(&input, p).unwrap(), expected, "parallelism {p}");
    }
}

#[test]
fn tiny_and_empty_files() {
    let dir = TempDir::new("wc-tiny");
    for (name, text) in [
        ("empty", ""),
        ("newline", "\n"),
        ("crlf", "\r\n"),
        ("one", "word"),
        ("no-final-newline", "a b\nb c"),
        ("only-punctuation", "...!!!\n---\n"),
    ] {
        let input = dir.join(name);
        std::fs::write(&input, text).unwrap();
        for p in PARALLELISMS {
            assert_eq!(
                word_count(&input, p).unwrap(),
                reference_word_count(text),
                "{name} at parallelism {p}"
            );
        }
    }
}

#[test]
fn lines_crossing_split_boundaries_are_counted_once() {
    // Every split point of a short file, at every parallelism: lines of
    // varying length so that the byte-range splits fall everywhere.
    let dir = TempDir::new("wc-splits");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&"w".repeat(i % 7 + 1));
        text.push(' ');
        text.push_str(&format!("n{i}"));
        text.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
    }
    let input = dir.join("input.txt");
    std::fs::write(&input, &text).unwrap();
    let expected = reference_word_count(&text);
    for p in 1..=6 {
        assert_eq!(word_count(&input, p).unwrap(), expected, "parallelism {p}");
    }
}

#[test]
fn generated_text_of_a_few_megabytes() {
    let dir = TempDir::new("wc-generated");
    let input = dir.join("input.txt");
    generate_text(&input, 3 << 20, 42).unwrap();
    let text = std::fs::read_to_string(&input).unwrap();
    let expected = reference_word_count(&text);
    assert!(expected.len() > 1000, "a real vocabulary");
    for p in PARALLELISMS {
        let result = run(WordCountOptions {
            input: input.clone(),
            output: None,
            config: config(2, p),
        })
        .unwrap();
        assert_eq!(result.input_bytes, text.len() as u64);
        assert_eq!(sorted(result.counts), expected, "parallelism {p}");
    }
}

#[test]
fn output_files_hold_every_count() {
    let dir = TempDir::new("wc-output");
    let input = dir.join("input.txt");
    generate_text(&input, 256 << 10, 7).unwrap();
    let text = std::fs::read_to_string(&input).unwrap();
    let expected = reference_word_count(&text);
    for p in PARALLELISMS {
        let output = dir.join(&format!("out-{p}"));
        let result = run(WordCountOptions {
            input: input.clone(),
            output: Some(output.clone()),
            config: config(2, p),
        })
        .unwrap();
        assert!(result.counts.is_empty(), "counts go to the file");
        if p == 1 {
            assert!(output.is_file(), "one file at parallelism 1");
        } else {
            let mut parts: Vec<String> = std::fs::read_dir(&output)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            parts.sort();
            let expected_parts: Vec<String> = (0..p).map(|i| format!("part-{i}")).collect();
            assert_eq!(parts, expected_parts);
        }
        assert_eq!(read_word_count_output(&output), expected, "parallelism {p}");
    }
}

#[test]
fn a_missing_file_names_the_file() {
    let dir = TempDir::new("wc-missing");
    let input = dir.join("no-such-file.txt");
    for p in [1, 2] {
        let error = word_count(&input, p).expect_err("missing input");
        let message = error.to_string();
        assert!(message.contains("no-such-file.txt"), "{message}");
    }
}

#[test]
fn invalid_utf8_names_the_file_and_the_line() {
    let dir = TempDir::new("wc-utf8");
    let input = dir.join("bad-bytes.txt");
    let mut bytes = Vec::new();
    // At parallelism 4 the bad line starts in the second split, whose reader
    // must still count the lines before its split.
    bytes.extend_from_slice(b"first line of words\n");
    bytes.extend_from_slice("second line, with ünïcode\r\n".as_bytes());
    bytes.extend_from_slice(b"third line has a bad byte: \xff here\n");
    for _ in 0..5 {
        bytes.extend_from_slice(b"more fine words\n");
    }
    std::fs::write(&input, &bytes).unwrap();
    for p in [1, 2, 4] {
        let error = word_count(&input, p).expect_err("invalid UTF-8");
        let message = error.to_string();
        assert!(message.contains("bad-bytes.txt"), "{message}");
        assert!(message.contains("line 3"), "parallelism {p}: {message}");
    }
}

#[test]
fn invalid_utf8_at_the_split_point_is_reported_once_with_its_line() {
    // The bad line starts past the middle of the file, so the second subtask
    // of two reads it; its line number counts the lines of the first split.
    let dir = TempDir::new("wc-utf8-late");
    let input = dir.join("late.txt");
    let mut bytes = Vec::new();
    for _ in 0..99 {
        bytes.extend_from_slice(b"fine words\n");
    }
    bytes.extend_from_slice(b"\xc3\x28 broken\n");
    std::fs::write(&input, &bytes).unwrap();
    for p in [1, 2, 3] {
        let message = word_count(&input, p)
            .expect_err("invalid UTF-8")
            .to_string();
        assert!(message.contains("late.txt"), "{message}");
        assert!(message.contains("line 100"), "parallelism {p}: {message}");
    }
}
