//! The dispatch table: what the macros register, and the checks it must pass before start-up.
//!
//! `#[command]` and `#[subscription]` each submit a descriptor with `inventory`; at start the runtime
//! collects them into a [`Registry`] and refuses to start when two commands or two routes clash, or a
//! route names a parameter its input type lacks.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::broker::spi::StartPosition;
use crate::context::Ctx;
use crate::error::Error;
use crate::message::Subjects;
use crate::metrics::QualifiedName;
use crate::runtime::Target;

/// The type-erased body of a command: decodes the input, runs the function, encodes the output.
pub(crate) type CommandFn = fn(Ctx, Bytes) -> BoxFuture<'static, Result<Bytes, Error>>;

/// A command's guard, as `guard = path` names it: checked before the handler, on the executing
/// instance.
pub type GuardFn = for<'a> fn(&'a Ctx) -> BoxFuture<'a, Result<(), Error>>;

/// The type-erased body of a subscription: decodes the event and runs the function.
pub(crate) type EventFn = fn(Ctx, Bytes) -> BoxFuture<'static, Result<(), Error>>;

/// The type-erased body of a task: runs the function.
pub(crate) type TaskFn = fn(Ctx) -> BoxFuture<'static, Result<(), Error>>;

/// Where a function was declared, for messages that name both places of a clash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The source file, as `file!()` names it.
    pub file: &'static str,
    /// The line of the function's name.
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// An HTTP route bound to a command by `#[http]`.
#[derive(Debug, Clone, Copy)]
pub struct HttpRoute {
    /// Upper-case method name, such as `POST`.
    pub method: &'static str,
    /// The path, with `{param}` segments that fill input fields of the same name.
    pub path: &'static str,
    /// The status of a success (200 unless the attribute says 201 or 204).
    pub status: u16,
}

/// The package (crate) that declared a command, as Cargo names it where the macro expanded: the
/// default title and version of the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    /// `CARGO_PKG_NAME`.
    pub name: &'static str,
    /// `CARGO_PKG_VERSION`.
    pub version: &'static str,
}

/// A command, as `#[command]` registers it.
#[derive(Debug)]
pub struct CommandDescriptor {
    /// The service it belongs to.
    pub service: &'static str,
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: &'static str,
    /// The function's doc comment.
    pub description: &'static str,
    /// The command's own timeout; `None` uses the app's default.
    pub timeout_ms: Option<u64>,
    /// Declared idempotent: a caller may send it again when the instance running it is lost.
    pub idempotent: bool,
    /// The JSON schema of its input.
    pub input_schema: fn() -> schemars::Schema,
    /// The JSON schema of its output.
    pub output_schema: fn() -> schemars::Schema,
    /// The route `#[http]` binds to it.
    pub http: Option<HttpRoute>,
    /// The guard that must pass before the handler runs.
    pub guard: Option<GuardFn>,
    /// Decodes, runs and encodes.
    pub handler: CommandFn,
    /// Where the function is.
    pub location: Location,
    /// The package that declares it.
    pub package: Package,
}

impl CommandDescriptor {
    /// Where callers send this command.
    pub(crate) fn target(&self, subjects: &Subjects) -> Target {
        Target::new(
            subjects,
            self.service,
            self.version,
            self.name,
            self.timeout_ms,
            self.idempotent,
        )
    }
}

/// A subscription, as `#[subscription]` registers it.
#[derive(Debug)]
pub struct SubscriptionDescriptor {
    /// The service it belongs to.
    pub service: &'static str,
    /// Its name: the function's, unless the attribute says otherwise.
    pub name: &'static str,
    /// The name of the event type it consumes ([`Event::NAME`](crate::Event::NAME)).
    pub event: &'static str,
    /// The JSON schema of that type ([`Event::schema`](crate::Event::schema)).
    pub event_schema: fn() -> Option<schemars::Schema>,
    /// Every instance gets every event, instead of one instance each event.
    pub every_instance: bool,
    /// Where an every-instance subscription starts at each start of its instance.
    pub start: StartPosition,
    /// Decodes and runs.
    pub handler: EventFn,
    /// Where the function is.
    pub location: Location,
}

impl SubscriptionDescriptor {
    /// The subscription as a metrics label.
    pub(crate) fn metrics_name(&self) -> QualifiedName {
        QualifiedName {
            service: self.service,
            name: self.name,
        }
    }
}

/// An event type, as `#[derive(Event)]` registers it: every type the binary can emit or consume.
#[derive(Debug)]
pub struct EventDescriptor {
    /// Its name ([`Event::NAME`](crate::Event::NAME)).
    pub name: &'static str,
    /// Its JSON schema ([`Event::schema`](crate::Event::schema)).
    pub schema: fn() -> Option<schemars::Schema>,
}

/// When a task runs, as `#[task]` wrote it (checked at compile time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskSchedule {
    /// Every `ms` milliseconds, at multiples of the period since the Unix epoch.
    Every {
        /// The period.
        ms: u64,
    },
    /// At the times of a five-field cron expression, in UTC.
    Cron {
        /// The expression, such as `0 3 * * *`.
        expression: &'static str,
    },
    /// Once per deployment version, before the instances turn ready.
    OnStart,
}

impl fmt::Display for TaskSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskSchedule::Every { ms } => {
                write!(
                    f,
                    "every {}",
                    humantime::format_duration(std::time::Duration::from_millis(*ms))
                )
            }
            TaskSchedule::Cron { expression } => write!(f, "cron {expression}"),
            TaskSchedule::OnStart => f.write_str("on start"),
        }
    }
}

/// A task, as `#[task]` registers it.
#[derive(Debug)]
pub struct TaskDescriptor {
    /// The service it belongs to: its state namespace, and `COHORT_SERVICES` selects it.
    pub service: &'static str,
    /// Its name: the function's, unless the attribute says otherwise.
    pub name: &'static str,
    /// When it runs.
    pub schedule: TaskSchedule,
    /// The version of the crate that declares it, which names the deployment of an `on_start`
    /// task unless `COHORT_DEPLOYMENT_VERSION` is set.
    pub app_version: &'static str,
    /// Runs the function.
    pub handler: TaskFn,
    /// Where the function is.
    pub location: Location,
}

inventory::collect!(CommandDescriptor);
inventory::collect!(SubscriptionDescriptor);
inventory::collect!(EventDescriptor);
inventory::collect!(TaskDescriptor);

/// The validated dispatch table of the binary.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) commands: Vec<&'static CommandDescriptor>,
    pub(crate) subscriptions: Vec<&'static SubscriptionDescriptor>,
    pub(crate) events: Vec<&'static EventDescriptor>,
    pub(crate) tasks: Vec<&'static TaskDescriptor>,
}

impl Registry {
    /// Everything the macros registered in this binary, validated.
    pub(crate) fn collect() -> Result<Registry, Error> {
        let registry = Registry {
            commands: inventory::iter::<CommandDescriptor>.into_iter().collect(),
            subscriptions: inventory::iter::<SubscriptionDescriptor>
                .into_iter()
                .collect(),
            events: inventory::iter::<EventDescriptor>.into_iter().collect(),
            tasks: inventory::iter::<TaskDescriptor>.into_iter().collect(),
        };
        registry.validate()?;
        Ok(registry)
    }

    /// Refuses a table in which two commands, two routes or two subscriptions clash, or a route
    /// parameter is missing from the command's input. Every problem is listed, not just the first.
    fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        let mut commands = HashMap::new();
        let mut routes = HashMap::new();
        for command in &self.commands {
            let id = (command.service, command.version, command.name);
            if let Some(first) = commands.insert(id, command.location) {
                problems.push(format!(
                    "command `{}.v{}.{}` is defined twice: at {first} and at {}",
                    command.service, command.version, command.name, command.location
                ));
            }
            let Some(route) = command.http else { continue };
            let key = (route.method, route_shape(route.path));
            if let Some((first_name, first_at)) =
                routes.insert(key, (command.name, command.location))
            {
                problems.push(format!(
                    "route `{} {}` is bound twice: to `{first_name}` at {first_at} and to `{}` at {}",
                    route.method, route.path, command.name, command.location
                ));
            }
            problems.extend(missing_route_params(command, route));
        }
        let mut subscriptions = HashMap::new();
        for sub in &self.subscriptions {
            if let Some(first) = subscriptions.insert((sub.service, sub.name), sub.location) {
                problems.push(format!(
                    "subscription `{}.{}` is defined twice: at {first} and at {}",
                    sub.service, sub.name, sub.location
                ));
            }
        }
        let mut tasks = HashMap::new();
        for task in &self.tasks {
            if let Some(first) = tasks.insert((task.service, task.name), task.location) {
                problems.push(format!(
                    "task `{}.{}` is defined twice: at {first} and at {}",
                    task.service, task.name, task.location
                ));
            }
            if let Err(e) = crate::task::Timing::of(task.schedule) {
                problems.push(format!(
                    "task `{}.{}` at {}: {e}",
                    task.service, task.name, task.location
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "the dispatch table is invalid:\n  - {}",
                problems.join("\n  - ")
            ))
            .with_code("invalid_registry"))
        }
    }

    /// Whether the binary registered nothing at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.subscriptions.is_empty() && self.tasks.is_empty()
    }

    /// The services that have a command or a subscription in this binary, sorted.
    pub(crate) fn services(&self) -> Vec<&'static str> {
        let mut services: Vec<_> = self
            .commands
            .iter()
            .map(|c| c.service)
            .chain(self.subscriptions.iter().map(|s| s.service))
            .chain(self.tasks.iter().map(|t| t.service))
            .collect();
        services.sort_unstable();
        services.dedup();
        services
    }
}

/// The `{param}` names of a route path.
pub(crate) fn route_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|param| param.trim_start_matches('*'))
}

/// A path with its parameter names erased: `/a/{x}` and `/a/{y}` are the same route.
fn route_shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "{}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn missing_route_params(command: &CommandDescriptor, route: HttpRoute) -> Vec<String> {
    let schema = (command.input_schema)();
    route_params(route.path)
        .filter(|param| schema_property(&schema, param).is_none())
        .map(|param| {
            format!(
                "route `{} {}` of `{}` at {} has the parameter `{param}`, but its input type has no field `{param}`",
                route.method, route.path, command.name, command.location
            )
        })
        .collect()
}

/// The schema of the property `name` of an object schema.
pub(crate) fn schema_property<'a>(
    schema: &'a schemars::Schema,
    name: &str,
) -> Option<&'a serde_json::Value> {
    schema.get("properties")?.get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(_: Ctx, _: Bytes) -> BoxFuture<'static, Result<Bytes, Error>> {
        Box::pin(async { Ok(Bytes::new()) })
    }

    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    struct ById {
        id: u64,
    }

    fn command(name: &'static str, path: &'static str, line: u32) -> CommandDescriptor {
        CommandDescriptor {
            service: "orders",
            version: 1,
            name,
            description: "",
            timeout_ms: None,
            idempotent: false,
            input_schema: || schemars::schema_for!(ById),
            output_schema: || schemars::schema_for!(()),
            http: Some(HttpRoute {
                method: "GET",
                path,
                status: 200,
            }),
            guard: None,
            handler: noop,
            location: Location {
                file: "src/orders.rs",
                line,
            },
            package: Package {
                name: "shop",
                version: "1.0.0",
            },
        }
    }

    fn validate(commands: Vec<CommandDescriptor>) -> Result<(), Error> {
        let leaked: Vec<&'static CommandDescriptor> = commands
            .into_iter()
            .map(|c| &*Box::leak(Box::new(c)))
            .collect();
        Registry {
            commands: leaked,
            subscriptions: vec![],
            events: vec![],
            tasks: vec![],
        }
        .validate()
    }

    #[test]
    fn duplicate_commands_name_both_places() {
        let err = validate(vec![
            command("get", "/a/{id}", 10),
            command("get", "/b/{id}", 20),
        ])
        .expect_err("duplicate must be refused");
        assert!(err.message().contains("src/orders.rs:10"), "{err}");
        assert!(err.message().contains("src/orders.rs:20"), "{err}");
    }

    #[test]
    fn duplicate_routes_are_refused_whatever_the_param_names() {
        let err = validate(vec![command("a", "/o/{id}", 1), command("b", "/o/{id}", 2)])
            .expect_err("duplicate route must be refused");
        assert!(
            err.message().contains("route `GET /o/{id}` is bound twice"),
            "{err}"
        );
    }

    #[test]
    fn route_params_must_be_input_fields() {
        let err = validate(vec![command("a", "/o/{order_id}", 7)]).expect_err("must be refused");
        assert!(err.message().contains("no field `order_id`"), "{err}");
        assert!(validate(vec![command("a", "/o/{id}", 7)]).is_ok());
    }
}
