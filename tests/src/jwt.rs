//! A NATS server in operator (JWT) mode for one test: an operator, its system account (JetStream
//! needs one), an account with JetStream and a user, their JWTs signed with nkeys as `nsc` would, the server configuration that trusts them
//! and the user's `.creds` file.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator, its account and a user of that account.
pub struct Operator {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
}

impl Operator {
    pub fn new() -> Self {
        Operator {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
        }
    }

    /// The nats-server configuration that trusts this operator and knows its account.
    pub fn server_config(&self) -> String {
        let system_key = self.system.public_key();
        let operator = self.sign(
            &self.operator,
            &self.operator,
            json!({"type": "operator", "system_account": system_key}),
        );
        let system = self.sign(&self.operator, &self.system, json!({"type": "account"}));
        let account = self.sign(
            &self.operator,
            &self.account,
            json!({
                "type": "account",
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
                },
                "default_permissions": {"pub": {}, "sub": {}}
            }),
        );
        format!(
            "operator: {operator}\nsystem_account: {system_key}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {system_key}: {system}\n  {}: {account}\n}}\n",
            self.account.public_key()
        )
    }

    /// The `.creds` file of a new user of the account.
    pub fn user_creds(&self) -> String {
        let user = KeyPair::new_user();
        let jwt = self.sign(
            &self.account,
            &user,
            json!({"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
        );
        let seed = user.seed().expect("a user seed");
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    /// The JWT of `subject`, issued and signed by `issuer`.
    fn sign(&self, issuer: &KeyPair, subject: &KeyPair, mut nats: Value) -> String {
        nats["version"] = json!(2);
        let claims = json!({
            "jti": subject.public_key(),
            "iat": 1_700_000_000,
            "iss": issuer.public_key(),
            "sub": subject.public_key(),
            "name": "cohort-test",
            "nats": nats,
        });
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{body}");
        let signature = issuer.sign(signed.as_bytes()).expect("signed");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}
