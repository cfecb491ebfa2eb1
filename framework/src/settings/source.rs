//! Where a table of settings comes from, lowest first: its table in the TOML file that
//! `COHORT_CONFIG` names, then its environment variables (`{TABLE}_{KEY}`), then the files that
//! `{TABLE}_{KEY}_FILE` variables name (secrets, the Docker and Kubernetes convention).

use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// The variable that names the settings file.
pub const CONFIG_FILE: &str = "COHORT_CONFIG";

/// What the settings are read from: the process's environment, or any function from a variable
/// name to its value (tests use a map).
pub(crate) type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// [`Vars`] that an app keeps until it starts.
pub(crate) type SharedVars = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One table of settings, layered from every source, that knows where each key came from.
pub(crate) struct Table {
    name: String,
    figment: Figment,
}

impl Table {
    /// Table `name` (`shop`: `[shop]` in the file, `SHOP_*` variables), for the keys `keys`.
    pub(crate) fn read(vars: Vars, name: &str, keys: &[&str]) -> Result<Table, Error> {
        let (plain, secret) = variables(vars, name, keys)?;
        let mut figment = Figment::new();
        if let Some(file) = SettingsFile::named_by(vars)? {
            figment = figment.merge(file.table(name));
        }
        let figment = figment
            .merge(Layer::new(name, plain, environment()))
            .merge(Layer::new(name, secret, secret_files()));
        Ok(Table {
            name: name.to_owned(),
            figment,
        })
    }

    /// The settings as `T`; text becomes a number or a boolean where `T` wants one.
    pub(crate) fn extract<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.figment
            .extract_inner_lossy(&self.name)
            .map_err(|err| self.describe(err))
    }

    /// `problem` with `key`, named as the operator set it.
    pub(crate) fn invalid(&self, key: &str, problem: &str) -> Error {
        invalid_config(format!("{} is not valid: {problem}", self.origin(key)))
    }

    /// How the operator knows `key`: its variable, or its key and file.
    pub(crate) fn origin(&self, key: &str) -> String {
        let path = [self.name.as_str(), key];
        match self.figment.find_metadata(&path.join(".")) {
            Some(metadata) => origin(metadata, &path),
            None => variable(&path),
        }
    }

    /// A message naming the settings at fault and what each should be, never their values
    /// (any of them may be a secret).
    fn describe(&self, err: figment::Error) -> Error {
        let problems: Vec<String> = err.into_iter().map(|e| self.problem(e)).collect();
        invalid_config(problems.join("; "))
    }

    fn problem(&self, err: figment::Error) -> String {
        if let Kind::MissingField(field) = &err.kind {
            let path = [self.name.as_str(), field];
            return format!(
                "{} is missing: set it, or `{}` in [{}] of the {CONFIG_FILE} file",
                variable(&path),
                field,
                self.name
            );
        }
        // `extract_inner` puts the table last: `[max_order_quantity, shop]`.
        let mut path = err.path.clone();
        if path.last() == Some(&self.name) {
            path.pop();
        }
        path.insert(0, self.name.clone());
        let at = match &err.metadata {
            Some(metadata) if path.len() > 1 => origin(metadata, &path),
            _ => format!("[{}]", self.name),
        };
        let problem = match &err.kind {
            Kind::Message(message) => message.clone(),
            Kind::InvalidType(actual, expected) => {
                format!("expected {expected}, found {}", kind_of(actual))
            }
            Kind::InvalidValue(_, expected) => format!("expected {expected}"),
            Kind::UnknownField(key, _) => format!("`{key}` is not a known setting"),
            other => other.to_string(),
        };
        format!("{at} is not valid: {problem}")
    }
}

pub(crate) fn invalid_config(message: impl Into<String>) -> Error {
    Error::bad_request(message).with_code("invalid_config")
}

/// What a value was, without the value.
fn kind_of(actual: &Actual) -> &'static str {
    match actual {
        Actual::Str(_) | Actual::Char(_) => "text",
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "another kind of value",
    }
}

/// `SHOP_MAX_ORDER_QUANTITY` for the path `shop.max_order_quantity` (and its items).
fn variable<S: AsRef<str>>(path: &[S]) -> String {
    path.iter()
        .take(2)
        .map(|key| key.as_ref().to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("_")
}

fn origin<S: AsRef<str>>(metadata: &Metadata, path: &[S]) -> String {
    let name = metadata.interpolate(&Profile::Default, path);
    match metadata
        .source
        .as_ref()
        .and_then(|source| source.file_path())
    {
        Some(file) => format!("{name} in {}", file.display()),
        None => name,
    }
}

fn environment() -> Metadata {
    Metadata::named("environment variable")
        .interpolater(|_: &Profile, path: &[&str]| variable(path))
}

fn secret_files() -> Metadata {
    Metadata::named("file named by a variable")
        .interpolater(|_: &Profile, path: &[&str]| format!("{}_FILE", variable(path)))
}

/// The values of `{TABLE}_{KEY}` and of the files `{TABLE}_{KEY}_FILE` name, for each key: a
/// value is trimmed, and an empty one is unset; a file loses its trailing line break.
fn variables(vars: Vars, table: &str, keys: &[&str]) -> Result<(Dict, Dict), Error> {
    let (mut plain, mut secret) = (Dict::new(), Dict::new());
    for &key in keys {
        let name = variable(&[table, key]);
        let file_name = format!("{name}_FILE");
        let value = |name: &str| {
            vars(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        match (value(&name), value(&file_name)) {
            (Some(_), Some(_)) => {
                return Err(invalid_config(format!(
                    "{name} and {file_name} are both set: keep one"
                )));
            }
            (Some(text), None) => {
                plain.insert(key.to_owned(), Value::from(text));
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid_config(format!("{file_name}={path}: the file cannot be read: {e}"))
                })?;
                let text = text.trim_end_matches(['\n', '\r']).to_owned();
                secret.insert(key.to_owned(), Value::from(text));
            }
            (None, None) => {}
        }
    }
    Ok((plain, secret))
}

/// The TOML file `COHORT_CONFIG` names, parsed.
struct SettingsFile {
    path: PathBuf,
    tables: Dict,
}

impl SettingsFile {
    fn named_by(vars: Vars) -> Result<Option<SettingsFile>, Error> {
        let Some(path) = vars(CONFIG_FILE).filter(|path| !path.trim().is_empty()) else {
            return Ok(None);
        };
        let path = PathBuf::from(path.trim());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            invalid_config(format!(
                "{CONFIG_FILE}={}: the file cannot be read: {e}",
                path.display()
            ))
        })?;
        let tables = toml::from_str::<Dict>(&text).map_err(|e| not_toml(&path, &text, &e))?;
        Ok(Some(SettingsFile { path, tables }))
    }

    /// Table `name` of the file (none: an empty one).
    fn table(&self, name: &str) -> Layer {
        let keys = match self.tables.get(name) {
            Some(Value::Dict(_, keys)) => keys.clone(),
            _ => Dict::new(),
        };
        let metadata = Metadata::from("TOML file", self.path.as_path())
            .interpolater(|_: &Profile, path: &[&str]| format!("`{}`", path.join(".")));
        Layer::new(name, keys, metadata)
    }
}

/// A syntax error, located by line: the text around it is left out, as it may hold a secret.
fn not_toml(path: &Path, text: &str, err: &toml::de::Error) -> Error {
    let line = err
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| before.matches('\n').count() + 1);
    let at = line
        .map(|line| format!(" at line {line}"))
        .unwrap_or_default();
    invalid_config(format!(
        "{CONFIG_FILE}={}: not valid TOML{at}: {}",
        path.display(),
        err.message()
    ))
}

/// One source's keys of one table.
struct Layer {
    table: String,
    keys: Dict,
    metadata: Metadata,
}

impl Layer {
    fn new(table: &str, keys: Dict, metadata: Metadata) -> Layer {
        Layer {
            table: table.to_owned(),
            keys,
            metadata,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let table = Dict::from([(self.table.clone(), Value::from(self.keys.clone()))]);
        Ok(Profile::Default.collect(table))
    }
}
