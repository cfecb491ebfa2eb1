//! Headless Chromium (the Debian package `chromium`): a page's DOM after its scripts ran, and
//! screenshots.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// How long Chromium may take to load a page, run its scripts and exit.
const PATIENCE: Duration = Duration::from_secs(60);

/// How much virtual time the page's scripts get: its timers run that far, its fetches complete.
const SCRIPT_TIME_MS: u32 = 5000;

/// The browser binary, or a panic that says how to install it.
fn chromium() -> &'static str {
    let found = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "the dashboard tests need headless Chromium: `apt-get install chromium` (scripts/test installs it)"
    );
    "chromium"
}

/// Runs headless Chromium on `url` with `args`, in a profile of its own.
async fn run(url: &str, args: &[String]) -> Output {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--virtual-time-budget={SCRIPT_TIME_MS}"),
        ])
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("Chromium did not finish with {url} within {PATIENCE:?}"))
        .expect("Chromium runs");
    assert!(
        output.status.success(),
        "Chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The DOM of the page at `url` once its scripts have run.
pub async fn dom_of(url: &str) -> String {
    let output = run(url, &["--dump-dom".to_owned()]).await;
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Saves a `width` x `height` screenshot of the page at `url`, once its scripts have run, to
/// `path` (PNG).
pub async fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    let args = [
        format!("--screenshot={}", path.display()),
        format!("--window-size={width},{height}"),
    ];
    run(url, &args).await;
}

/// The text of each cell of each row of the table `id` in `dom`: enough HTML reading for a page
/// whose cells hold text only.
pub fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let Some(start) = dom.find(&format!("<table id=\"{id}\"")) else {
        return Vec::new();
    };
    let table = &dom[start..];
    let table = &table[..table.find("</table>").unwrap_or(table.len())];
    let body = table.split("<tbody>").nth(1).unwrap_or_default();
    body.split("<tr>")
        .skip(1)
        .map(|row| row.split("<td").skip(1).map(cell_text).collect())
        .collect()
}

/// The text of one cell, from just after `<td`: its markup removed, its entities decoded.
fn cell_text(cell: &str) -> String {
    let content = cell.split_once('>').map_or("", |(_, rest)| rest);
    let content = content.split("</td>").next().unwrap_or_default();
    let mut text = String::new();
    let mut in_tag = false;
    for c in content.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}
