//! What `#[command]` and `#[derive(Event)]` implement on a user's types, so that calls and events
//! are checked at compile time.

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A command that can be called with its types checked at compile time:
/// `ctx.call::<place_order>(input)`. `#[command]` implements it on a type named like the function.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command",
    label = "not a command",
    note = "add `#[command(service = \"...\")]` to the function to call, then name the function: `ctx.call::<place_order>(input)`"
)]
pub trait Command: 'static {
    /// The input the function takes (`()` when it takes none).
    type Input: Send + 'static;
    /// What the function returns on success.
    type Output: Send + 'static;
    /// The service it belongs to.
    const SERVICE: &'static str;
    /// Its version: `v{VERSION}` in its subject.
    const VERSION: u32;
    /// Its name: the function's, unless `#[command(name = "...")]` says otherwise.
    const NAME: &'static str;
    /// The command's own timeout in milliseconds, if it sets one.
    const TIMEOUT_MS: Option<u64>;
    /// Whether running it twice has the effect of running it once (`#[command(idempotent)]`), so
    /// that a caller may send it again when the instance running it is lost.
    const IDEMPOTENT: bool;
}

/// An event: a type published with `ctx.emit` and consumed by `#[subscription]`s.
/// Implement it with `#[derive(Event)]` (name defaults to the type name in snake_case).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event",
    label = "not an event",
    note = "add `#[derive(cohort::Event, serde::Serialize, serde::Deserialize)]` to `{Self}`"
)]
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name in event subjects: `{prefix}.evt.{service}.{NAME}`.
    const NAME: &'static str;

    /// The JSON schema of the event, whose hash instances compare to find version drift; `None`
    /// leaves the event out of the comparison. `#[derive(Event)]` gives the schema of a type
    /// that also implements `schemars::JsonSchema`, and `None` for any other.
    fn schema() -> Option<schemars::Schema> {
        None
    }
}

/// How `#[derive(Event)]` finds an event's schema without requiring `JsonSchema`: it calls
/// `(&SchemaProbe::<T>::NEW).event_schema()` for its concrete type with both traits below in
/// scope. Method lookup tries the receiver `&SchemaProbe<T>` before `&&SchemaProbe<T>`, so
/// [`WithSchema`] answers when `T: JsonSchema` and [`WithoutSchema`] otherwise.
pub struct SchemaProbe<T>(PhantomData<T>);

impl<T> SchemaProbe<T> {
    /// The probe of `T`.
    pub const NEW: SchemaProbe<T> = SchemaProbe(PhantomData);
}

/// An event type that implements `JsonSchema`: its schema.
pub trait WithSchema {
    /// The root schema of the type.
    fn event_schema(&self) -> Option<schemars::Schema>;
}

impl<T: JsonSchema> WithSchema for SchemaProbe<T> {
    fn event_schema(&self) -> Option<schemars::Schema> {
        Some(crate::__private::schema_for::<T>())
    }
}

/// Any other event type: no schema.
pub trait WithoutSchema {
    /// `None`.
    fn event_schema(&self) -> Option<schemars::Schema>;
}

impl<T> WithoutSchema for &SchemaProbe<T> {
    fn event_schema(&self) -> Option<schemars::Schema> {
        None
    }
}
