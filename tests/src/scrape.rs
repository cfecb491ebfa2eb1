//! Scrapes of `/metrics`, read series by series.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The metrics at `url`, checked to be the Prometheus text format.
pub async fn scrape(url: &str) -> Metrics {
    let response = reqwest::get(url)
        .await
        .expect("the scrape reaches the server");
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap_or_default();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Metrics(response.text().await.expect("the metrics arrive"))
}

/// A scrape's text.
#[derive(Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series written exactly as `series` (name and labels), if it is there.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }

    /// The value of `series`, which must be there.
    pub fn of(&self, series: &str) -> f64 {
        self.value(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{}", self.0))
    }
}

/// `at` in Unix seconds, as a timestamp gauge shows it.
pub fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs_f64()
}

/// The next whole minute, in Unix milliseconds, once it is at least `margin` away: waits out a
/// minute's turn that is nearer, so that a once-a-minute task does not run during a test.
pub async fn next_minute_at_least(margin: Duration) -> u64 {
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch");
        let next = Duration::from_secs((now.as_secs() / 60 + 1) * 60);
        let left = next - now;
        if left >= margin {
            return next.as_secs() * 1000;
        }
        // Waiting for the wall clock itself: there is nothing else to poll.
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
}
