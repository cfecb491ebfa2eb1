//! Start-up refusals as a user meets them: a real binary, its exit status and what it prints.

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// Runs the binary that depends on the example app's library without using it.
async fn run_unlinked_app(extra_env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_unlinked-app"));
    command
        .env_clear()
        .env("COHORT_HTTP_ADDR", "127.0.0.1:0")
        .envs(extra_env.iter().copied())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the binary exits by itself within 20 s")
        .expect("the binary runs")
}

#[tokio::test]
async fn a_library_app_that_main_never_calls_refuses_to_start() {
    let output = run_unlinked_app(&[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not start: {stderr}");
    assert!(
        stderr.contains("this binary registers no #[command] and no #[subscription]"),
        "says what happened: {stderr}"
    );
    assert!(
        stderr.contains("`main` must use something from it"),
        "says how to fix it: {stderr}"
    );
    assert!(stderr.contains("(no_handlers)"), "{stderr}");
    let error_lines = stderr
        .lines()
        .skip_while(|l| !l.starts_with("Error: "))
        .count();
    assert_eq!(
        error_lines, 3,
        "one problem a line, real line breaks: {stderr}"
    );
}

#[tokio::test]
async fn an_app_that_opts_in_starts_without_handlers() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_unlinked-app"));
    let mut child = command
        .env_clear()
        .env("COHORT_HTTP_ADDR", "127.0.0.1:0")
        .env("COHORT_ALLOW_EMPTY", "true")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stderr reads") {
            if line.contains("cohort instance ready") {
                return true;
            }
        }
        false
    })
    .await
    .expect("ready or exited within 20 s");
    assert!(ready, "it starts when it opts in");
    child.kill().await.expect("stopped");
}
