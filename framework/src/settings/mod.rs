//! Settings: the app's own, declared as a struct, read at start-up like Cohort's (see
//! [`Config`](crate::Config)) from the TOML file `COHORT_CONFIG` names and the environment, and
//! handed to every handler by [`Ctx::config`](crate::Ctx::config).
//!
//! ```
//! use serde::Deserialize;
//!
//! /// `[shop]` in the settings file, `SHOP_*` variables.
//! #[derive(Debug, Deserialize)]
//! #[serde(default)]
//! pub struct ShopConfig {
//!     /// `SHOP_MAX_ORDER_QUANTITY`.
//!     pub max_order_quantity: u32,
//!     /// `SHOP_ADMINS=alice,bob`, or `admins = ["alice", "bob"]` in the file.
//!     #[serde(deserialize_with = "cohort::settings::list")]
//!     pub admins: Vec<String>,
//! }
//!
//! impl Default for ShopConfig {
//!     fn default() -> Self {
//!         ShopConfig { max_order_quantity: 100, admins: Vec::new() }
//!     }
//! }
//!
//! cohort::settings!(ShopConfig, "shop");
//! ```

mod fields;
mod source;
mod text;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::Error;

pub use source::CONFIG_FILE;
pub use text::{duration, list};

pub(crate) use fields::of as fields_of;
pub(crate) use source::{SharedVars, Table, Vars, invalid_config};
pub(crate) use text::{FromText, List, Parsed, Span};

/// A struct of the app's own settings, loaded once when the instance starts and shared by every
/// handler. Implement it with [`settings!`](crate::settings!), which also registers the struct
/// to be loaded (and checked) at every start.
pub trait Settings: DeserializeOwned + Send + Sync + 'static {
    /// The table of the settings file and, in upper case, the prefix of the variables: `"shop"`
    /// reads `[shop]` and `SHOP_*`.
    const TABLE: &'static str;
}

/// Declares `$type` (a struct that derives `Deserialize`) as the app's settings of table
/// `$table`: `cohort::settings!(ShopConfig, "shop");` reads `[shop]` of the settings file and
/// the variables `SHOP_{KEY}` and `SHOP_{KEY}_FILE`, at every start, before the instance serves.
#[macro_export]
macro_rules! settings {
    ($type:ty, $table:literal) => {
        impl $crate::settings::Settings for $type {
            const TABLE: &'static str = $table;
        }
        $crate::__private::inventory::submit! {
            $crate::__private::SettingsRegistration::of::<$type>()
        }
    };
}

type Loaded = Arc<dyn Any + Send + Sync>;

/// A settings struct to load at start: registered by [`settings!`](crate::settings!).
#[doc(hidden)]
pub struct Registration {
    table: &'static str,
    type_name: fn() -> &'static str,
    type_id: fn() -> TypeId,
    load: fn(Vars) -> Result<Loaded, Error>,
}

inventory::collect!(Registration);

impl Registration {
    pub const fn of<T: Settings>() -> Registration {
        Registration {
            table: T::TABLE,
            type_name: std::any::type_name::<T>,
            type_id: TypeId::of::<T>,
            load: load::<T>,
        }
    }
}

fn load<T: Settings>(vars: Vars) -> Result<Loaded, Error> {
    let keys = fields_of::<T>().ok_or_else(|| {
        invalid_config(format!(
            "the settings `{}` must be a struct with named fields",
            std::any::type_name::<T>()
        ))
    })?;
    let settings: T = Table::read(vars, T::TABLE, keys)?.extract()?;
    Ok(Arc::new(settings))
}

/// The app's settings of one instance, by type.
#[derive(Clone, Default)]
pub(crate) struct AppSettings(HashMap<TypeId, Loaded>);

impl AppSettings {
    /// Every registered settings struct not `given` in code, read from `vars` and the settings
    /// file: the first that is missing or invalid fails the start, naming its key.
    pub(crate) fn load(vars: Vars, given: AppSettings) -> Result<AppSettings, Error> {
        let mut settings = given;
        let mut tables: HashMap<&str, &str> = HashMap::new();
        for registration in inventory::iter::<Registration> {
            let type_name = (registration.type_name)();
            check_table(registration.table, type_name)?;
            if let Some(other) = tables.insert(registration.table, type_name) {
                return Err(invalid_config(format!(
                    "the settings `{type_name}` and `{other}` both read the table `{}`: give \
                     each its own",
                    registration.table
                )));
            }
            let type_id = (registration.type_id)();
            if let Entry::Vacant(slot) = settings.0.entry(type_id) {
                slot.insert((registration.load)(vars)?);
            }
        }
        Ok(settings)
    }

    pub(crate) fn insert<T: Settings>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub(crate) fn get<T: Settings>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }
}

/// A table is also the prefix of variables, and `cohort` is Cohort's own.
fn check_table(table: &str, type_name: &str) -> Result<(), Error> {
    let valid = !table.is_empty()
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid || table == "cohort" {
        return Err(invalid_config(format!(
            "the settings `{type_name}` read the table `{table}`: a table is lower-case letters, \
             digits and `_`, and `cohort` is Cohort's own"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    /// Registered, so every app the unit tests start loads it: it needs no variable.
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default)]
    struct Unit {
        limit: u32,
        enabled: bool,
        #[serde(deserialize_with = "crate::settings::list")]
        names: Vec<String>,
        #[serde(deserialize_with = "crate::settings::duration")]
        every: Duration,
        version: String,
    }

    impl Default for Unit {
        fn default() -> Self {
            Unit {
                limit: 10,
                enabled: false,
                names: Vec::new(),
                every: Duration::from_secs(1),
                version: "1".to_owned(),
            }
        }
    }

    crate::settings!(Unit, "unit");

    /// Not registered: read by hand, for its required key.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Payments {
        api_key: String,
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn app_settings_come_from_their_variables_as_text() {
        let vars = vars(&[
            ("UNIT_LIMIT", "25"),
            ("UNIT_ENABLED", "yes"),
            ("UNIT_NAMES", "ann, bob"),
            ("UNIT_EVERY", "2m"),
            ("UNIT_VERSION", "1.10"),
            ("UNITS_LIMIT", "not this table's"),
        ]);
        let settings = AppSettings::load(&vars, AppSettings::default()).expect("valid");
        let unit = settings.get::<Unit>().expect("loaded");
        let expected = Unit {
            limit: 25,
            enabled: true,
            names: vec!["ann".to_owned(), "bob".to_owned()],
            every: Duration::from_secs(120),
            version: "1.10".to_owned(),
        };
        assert_eq!(unit, &expected);
    }

    #[test]
    fn settings_given_in_code_are_not_read() {
        let mut given = AppSettings::default();
        given.insert(Unit::default());
        let vars = vars(&[("UNIT_LIMIT", "many")]);
        let settings = AppSettings::load(&vars, given).expect("not read");
        assert_eq!(settings.get::<Unit>(), Some(&Unit::default()));
    }

    #[test]
    fn a_bad_value_names_its_variable_not_its_value() {
        let vars = vars(&[("UNIT_LIMIT", "many-s3cret")]);
        let err = AppSettings::load(&vars, AppSettings::default())
            .err()
            .expect("not a number");
        assert!(
            err.message().starts_with("UNIT_LIMIT is not valid"),
            "{err}"
        );
        assert!(!err.message().contains("s3cret"), "{err}");
        assert_eq!(err.code(), "invalid_config");
    }

    #[test]
    fn a_missing_key_names_its_variable_and_key() {
        let vars = vars(&[]);
        let keys = fields_of::<Payments>().expect("a struct");
        let table = Table::read(&vars, "payments", keys).expect("no file to read");
        let err = table.extract::<Payments>().expect_err("missing");
        assert!(
            err.message().contains("PAYMENTS_API_KEY is missing"),
            "{err}"
        );
        assert!(err.message().contains("`api_key` in [payments]"), "{err}");
    }

    #[test]
    fn a_table_must_be_usable_as_a_prefix_and_not_cohorts() {
        for table in ["cohort", "Shop", "my-shop", ""] {
            let err = check_table(table, "Shop").expect_err("refused");
            assert!(err.message().contains(&format!("`{table}`")), "{err}");
        }
        assert!(check_table("shop_2", "Shop").is_ok());
    }
}
