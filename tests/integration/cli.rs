//! The binary's command line: help, errors, `--check-config` and precedence.

use std::process::Output;

use crate::support::command;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = command();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run corral")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_exits_0_and_lists_options() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success(), "{:?}", out.status);
    let help = text(&out.stdout);
    for flag in [
        "--listen",
        "--max-body-bytes",
        "--workers",
        "--check-config",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn bad_value_exits_2_with_one_line_naming_the_flag() {
    let out = run(&["--workers", "abc"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "expected one line, got:\n{err}");
    assert!(err.ends_with('\n'));
    assert!(err.contains("--workers"), "{err}");
    assert!(err.contains("abc"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_flag_exits_2_with_one_line() {
    let out = run(&["--wokers", "3"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--workers"), "suggests the right flag: {err}");
}

fn check_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["--check-config"];
    all.extend_from_slice(args);
    let out = run(&all, env);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn check_config_prints_the_effective_config() {
    let conf = check_config(
        &["--listen", "127.0.0.1:9999", "--max-body-bytes", "2MiB"],
        &[],
    );
    for line in [
        "listen = 127.0.0.1:9999",
        "max-body-bytes = 2MiB",
        "header-timeout = 10s",
        "queue = 1024",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "missing {line:?} in:\n{conf}"
        );
    }
}

#[test]
fn env_sets_and_flag_beats_env() {
    let conf = check_config(&[], &[("CORRAL_WORKERS", "3")]);
    assert!(conf.lines().any(|l| l == "workers = 3"), "{conf}");
    let conf = check_config(&["--workers", "5"], &[("CORRAL_WORKERS", "3")]);
    assert!(conf.lines().any(|l| l == "workers = 5"), "{conf}");
    assert!(!conf.lines().any(|l| l == "workers = 3"), "{conf}");
}

#[test]
fn bad_env_value_exits_2_naming_the_variable() {
    let out = run(&["--check-config"], &[("CORRAL_WORKERS", "many")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("CORRAL_WORKERS"), "{err}");
}
