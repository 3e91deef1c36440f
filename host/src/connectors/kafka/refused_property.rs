//! A client property librdkafka refuses, told without its value. rdkafka's own error
//! (`KafkaError::ClientConfig`) prints the value, and librdkafka's description may quote it too,
//! so a misspelt secret property (`sasl.pasword = "${PW}"`) would print the password.

use rdkafka::error::KafkaError;

use crate::connectors::ConnectorError;

/// What is wrong with the client's properties, naming the property and librdkafka's reason but
/// never a value; `None` when `error` is not about a property.
pub(crate) fn refused_property(error: &KafkaError) -> Option<String> {
    match error {
        KafkaError::ClientConfig(_, description, key, value) => {
            let description = if value.is_empty() {
                description.trim().to_owned()
            } else {
                description.trim().replace(value.as_str(), "***")
            };
            Some(format!(
                "librdkafka refused property `{key}` (its value is not shown): {description}"
            ))
        }
        // rdkafka's error holds the bytes of the key or value, secret or not.
        KafkaError::Nul(_) => Some(
            "a property's name or value holds a NUL character, which librdkafka cannot take"
                .to_owned(),
        ),
        _ => None,
    }
}

/// A failure to create a client as a connector error: a refused property with the fix and
/// without its value, anything else with rdkafka's error as its cause. Either way fatal: the
/// same settings fail the same way again.
pub(crate) fn creation_failed(connector: &str, what: &str, error: KafkaError) -> ConnectorError {
    match refused_property(&error) {
        Some(refusal) => ConnectorError::fatal(
            connector,
            format!("{what}: {refusal}; correct it in `properties`"),
        ),
        None => ConnectorError::fatal(connector, what).caused_by(error),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rdkafka::consumer::BaseConsumer;

    use super::*;
    use crate::secret::Secret;

    /// The message of a consumer created with `properties`, which must fail.
    fn creation_message(properties: &[(&str, &str)]) -> String {
        let properties: BTreeMap<String, Secret> = properties
            .iter()
            .map(|(key, value)| ((*key).to_owned(), Secret::new(*value)))
            .collect();
        let created: Result<BaseConsumer, _> =
            super::super::client_config("127.0.0.1:1", &properties).create();
        let Err(error) = created else {
            panic!("the consumer was created");
        };
        let error = creation_failed("kafka source t", "cannot create the consumer", error);
        format!("{error} {error:?}")
    }

    #[test]
    fn a_misspelt_secret_property_is_named_without_its_value() {
        let message = creation_message(&[("sasl.pasword", "canary-kafka-5e1f")]);
        assert!(
            message.contains("`sasl.pasword`")
                && message.contains("No such configuration property"),
            "{message}"
        );
        assert!(!message.contains("canary"), "{message}");
    }

    #[test]
    fn a_refused_value_is_not_quoted_back() {
        // librdkafka's own description quotes an invalid value.
        let message = creation_message(&[("security.protocol", "canary-kafka-77ab")]);
        assert!(
            message.contains("`security.protocol`") && message.contains("***"),
            "{message}"
        );
        assert!(!message.contains("canary"), "{message}");
        let message = creation_message(&[("sasl.password", "canary\0kafka")]);
        assert!(message.contains("NUL character"), "{message}");
        assert!(!message.contains("canary"), "{message}");
    }
}
