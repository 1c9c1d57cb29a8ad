//! Without a reachable Docker engine every docker task fails with one clear line, before
//! it runs anything.

use std::process::Command;

const MESSAGE: &str = "no Docker engine is reachable (is the Docker daemon running?)";

const TASKS: [&str; 4] = ["docker-build", "docker-up", "docker-down", "docker-logs"];

/// Runs `cargo xtask TASK` as built, with `setup` applied to its environment.
fn run(task: &str, setup: impl Fn(&mut Command)) -> (bool, String) {
    let mut xtask = Command::new(env!("CARGO_BIN_EXE_xtask"));
    xtask.arg(task).env_remove("DOCKER_CONTEXT");
    setup(&mut xtask);
    let output = xtask.output().expect("xtask runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_error(task: &str, (success, stderr): (bool, String)) {
    assert!(!success, "{task} succeeded without an engine");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{task} printed more than one line:\n{stderr}"
    );
    assert!(lines[0].contains(MESSAGE), "{task} printed {stderr:?}");
}

#[test]
fn docker_tasks_explain_an_unreachable_engine_in_one_line() {
    for task in TASKS {
        let outcome = run(task, |cmd| {
            cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        });
        assert_one_line_error(task, outcome);
    }
}

#[test]
fn docker_tasks_explain_a_missing_docker_program_in_one_line() {
    for task in TASKS {
        let outcome = run(task, |cmd| {
            cmd.env("PATH", "/nonexistent");
        });
        assert_one_line_error(task, outcome);
    }
}
