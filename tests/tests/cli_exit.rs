//! The `rheon` command line: word count through the binary, and its exit
//! status on bad input. The binary lives in another crate, so the test builds
//! it once with cargo (a no-op when it is up to date) in the same target
//! directory.

use std::process::{Command, Output};

use rheon_tests::{read_word_count_output, reference_word_count, rheon_binary, TempDir};

fn rheon(args: &[&str]) -> Output {
    Command::new(rheon_binary())
        .args(args)
        .output()
        .expect("run rheon")
}

#[test]
fn wordcount_of_a_missing_file_exits_non_zero_naming_the_file() {
    let output = rheon(&["wordcount", "/nonexistent/rheon-input.txt", "--cores", "2"]);
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/rheon-input.txt"),
        "stderr: {stderr}"
    );
}

#[test]
fn wordcount_with_bad_utf8_exits_non_zero_naming_the_line() {
    let dir = TempDir::new("cli-utf8");
    let input = dir.join("bad.txt");
    std::fs::write(&input, b"one\ntwo\nth\xffree\nfour\n").unwrap();
    let output = rheon(&["wordcount", input.to_str().unwrap(), "--cores", "2"]);
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.txt"), "stderr: {stderr}");
    assert!(stderr.contains("line 3"), "stderr: {stderr}");
}

#[test]
fn wordcount_writes_every_count() {
    let dir = TempDir::new("cli-wordcount");
    let input = dir.join("input.txt");
    let text = "Hello, world!\r\nhello WORLD, hello rheon.\n\nÉté été\n";
    std::fs::write(&input, text).unwrap();
    let out_dir = dir.join("counts");
    let output = rheon(&[
        "wordcount",
        input.to_str().unwrap(),
        "--cores",
        "2",
        "--parallelism",
        "2",
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "exit status {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(read_word_count_output(&out_dir), reference_word_count(text));

    // Without --output it prints the top words, most frequent first.
    let output = rheon(&[
        "wordcount",
        input.to_str().unwrap(),
        "--cores",
        "2",
        "--top",
        "1",
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        ["3", "hello"],
        "{stdout}"
    );
}
