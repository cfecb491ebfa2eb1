//! The `info` of the OpenAPI document: the application's title, version and description.

use crate::registry::CommandDescriptor;

/// The title, version and description of the application in `/openapi.json`, set with
/// [`App::api_info`](crate::App::api_info). [`api_info!`](crate::api_info) makes one from the
/// calling package's `Cargo.toml`; without either, the document names the package that declares
/// the HTTP routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiInfo {
    /// `info.title`.
    pub title: String,
    /// `info.version`: the application's version, not the document format's.
    pub version: String,
    /// `info.description`, if any.
    pub description: Option<String>,
}

impl ApiInfo {
    /// A title and a version, without description.
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> ApiInfo {
        ApiInfo {
            title: title.into(),
            version: version.into(),
            description: None,
        }
    }

    /// With this description (Markdown); an empty one is none.
    pub fn description(mut self, description: impl Into<String>) -> ApiInfo {
        let description = description.into();
        self.description = (!description.is_empty()).then_some(description);
        self
    }

    /// The package that declares the most HTTP routes (the first by name on a tie): the
    /// application's own, unless its routes come from several packages.
    pub(crate) fn of_routes(commands: &[&'static CommandDescriptor]) -> ApiInfo {
        let mut packages: Vec<_> = commands
            .iter()
            .filter(|command| command.http.is_some())
            .map(|command| command.package)
            .collect();
        packages.sort_unstable_by_key(|package| (package.name, package.version));
        let most_routes = packages
            .chunk_by(|a, b| a == b)
            .max_by_key(|same| (same.len(), std::cmp::Reverse(same[0].name)))
            .map(|same| same[0]);
        match most_routes {
            Some(package) => ApiInfo::new(package.name, package.version),
            None => ApiInfo::new("Cohort application", "0.0.0"),
        }
    }
}

/// The [`ApiInfo`] of the package this is written in, from its `Cargo.toml`: `name`, `version`
/// and `description`.
///
/// ```no_run
/// # async fn run() -> Result<(), cohort::Error> {
/// cohort::App::from_env()?.api_info(cohort::api_info!()).run().await
/// # }
/// ```
#[macro_export]
macro_rules! api_info {
    () => {
        $crate::http::ApiInfo::new(
            ::core::env!("CARGO_PKG_NAME"),
            ::core::env!("CARGO_PKG_VERSION"),
        )
        .description(::core::env!("CARGO_PKG_DESCRIPTION"))
    };
}
