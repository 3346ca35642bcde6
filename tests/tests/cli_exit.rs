//! The `rheon` command line: word count through the binary, and its exit
//! status on bad input. The binary lives in another crate, so the test builds
//! it once with cargo (a no-op when it is up to date) in the same target
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use rheon_tests::{read_word_count_output, reference_word_count, TempDir};

/// Builds `rheon-tools` and returns the path of the `rheon` binary.
fn rheon_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate is inside the workspace");
        // Build with the profile this test was built with, so a release test
        // run reuses its release artifacts instead of compiling everything again.
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-q", "-p", "rheon-tools", "--manifest-path"]);
        build.arg(workspace.join("Cargo.toml"));
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p rheon-tools failed");
        // Test binaries are in <target>/<profile>/deps; the command one level up.
        let exe = std::env::current_exe().expect("test binary path");
        let binary = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/debug")
            .join("rheon");
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

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
