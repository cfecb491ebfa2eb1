//! The shop's own settings: `[shop]` in the settings file that `COHORT_CONFIG` names, and the
//! `SHOP_*` variables (each also as `SHOP_*_FILE`, a file holding the value).

use serde::{Deserialize, Deserializer, de::Error as _};

/// The most an order may ask for, as the API's contract says; a deployment may only lower it.
pub const ORDER_QUANTITY_LIMIT: u32 = 1000;

/// Read once at start: every instance of a deployment must be given the same, since a command
/// runs on any of them.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopConfig {
    /// `SHOP_MAX_ORDER_QUANTITY` (default and at most [`ORDER_QUANTITY_LIMIT`]): a larger order
    /// gets a 422.
    #[serde(deserialize_with = "order_quantity")]
    pub max_order_quantity: u32,
    /// `SHOP_ADMINS`: the usernames that get the `admin` role when they log in, comma-separated
    /// (an array in the file).
    #[serde(deserialize_with = "cohort::settings::list")]
    pub admins: Vec<String>,
}

cohort::settings!(ShopConfig, "shop");

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            max_order_quantity: ORDER_QUANTITY_LIMIT,
            admins: Vec::new(),
        }
    }
}

fn order_quantity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let quantity = u32::deserialize(deserializer)?;
    if (1..=ORDER_QUANTITY_LIMIT).contains(&quantity) {
        Ok(quantity)
    } else {
        Err(D::Error::custom(format!(
            "expected a quantity from 1 to {ORDER_QUANTITY_LIMIT}"
        )))
    }
}
