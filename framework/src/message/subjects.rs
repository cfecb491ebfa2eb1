//! The subjects and stream names of the wire protocol, under one prefix.

/// The subjects and names of the wire protocol under one prefix (default `cohort`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The subjects under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    /// The first token of every subject, and of every state key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}.cmd.{service}.v{version}.{command}`
    pub fn command(&self, service: &str, version: u32, command: &str) -> String {
        format!("{}.cmd.{service}.v{version}.{command}", self.prefix)
    }

    /// `{prefix}.{service}.v{version}.{command}`: the queue group all instances share.
    pub fn queue_group(&self, service: &str, version: u32, command: &str) -> String {
        format!("{}.{service}.v{version}.{command}", self.prefix)
    }

    /// `{prefix}.evt.{service}.{event}`: where `service` publishes `event`.
    pub fn event(&self, service: &str, event: &str) -> String {
        crate::runtime::joined(&[&self.prefix, ".evt.", service, ".", event])
    }

    /// `{prefix}.evt.*.{event}`: the event from any service.
    pub fn event_filter(&self, event: &str) -> String {
        format!("{}.evt.*.{event}", self.prefix)
    }

    /// `{prefix}.evt.>`: everything the events stream captures.
    pub fn all_events(&self) -> String {
        format!("{}.evt.>", self.prefix)
    }

    /// `{prefix}.dlq.{service}.{subscription}`
    pub fn dead_letter(&self, service: &str, subscription: &str) -> String {
        format!("{}.dlq.{service}.{subscription}", self.prefix)
    }

    /// `{prefix}.dlq.>`
    pub fn all_dead_letters(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// `{PREFIX}_EVENTS`: the JetStream stream of events.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_base())
    }

    /// `{PREFIX}_DLQ`: the JetStream stream of dead letters.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.stream_base())
    }

    /// Stream names may not contain `.`, `*`, `>` or spaces.
    fn stream_base(&self) -> String {
        self.prefix
            .chars()
            .map(|c| match c {
                '.' | '*' | '>' | ' ' | '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect()
    }

    /// `{service}__{subscription}`: the durable consumer all instances share.
    pub fn durable(service: &str, subscription: &str) -> String {
        format!("{service}__{subscription}")
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new("cohort")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_wire_protocol() {
        let s = Subjects::new("shop.prod");
        assert_eq!(
            s.command("orders", 1, "place"),
            "shop.prod.cmd.orders.v1.place"
        );
        assert_eq!(
            s.queue_group("orders", 1, "place"),
            "shop.prod.orders.v1.place"
        );
        assert_eq!(
            s.event("orders", "order_placed"),
            "shop.prod.evt.orders.order_placed"
        );
        assert_eq!(
            s.event_filter("order_placed"),
            "shop.prod.evt.*.order_placed"
        );
        assert_eq!(s.events_stream(), "SHOP_PROD_EVENTS");
        assert_eq!(Subjects::durable("audit", "count"), "audit__count");
    }
}
