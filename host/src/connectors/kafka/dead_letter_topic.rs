//! A dead-letter topic must keep every letter. A compacted one does not: compaction keeps only
//! the latest letter of each key, and the broker refuses a letter without a key, which leaves
//! the pipeline nowhere to put it. So a Kafka dead-letter destination whose topic compacts is
//! refused when the pipeline starts, naming the setting to change, instead of losing letters
//! later in silence or stopping at the first keyless one.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use super::access::probe_config;
use crate::connectors::ConnectorError;

/// How long the brokers may take to describe the topic before the check is left undone.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The fatal error for a dead-letter topic whose `cleanup.policy` is `policy`, or nothing when
/// the policy keeps every letter (`delete`, the brokers' default).
fn refusal(connector: &str, topic: &str, policy: &str) -> Option<ConnectorError> {
    let compacts = policy
        .split(',')
        .any(|part| part.trim().eq_ignore_ascii_case("compact"));
    compacts.then(|| {
        ConnectorError::fatal(
            connector,
            format!(
                "topic `{topic}` is compacted (cleanup.policy={policy}), so it cannot be a dead-letter topic: compaction keeps only the latest letter of each key, and the brokers refuse a letter without a key. Set its policy to delete (`kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=delete`) or name a topic that is not compacted"
            ),
        )
    })
}

/// Refuses `topic` as a dead-letter topic when the brokers say it is compacted. A topic that
/// does not exist yet (created on the first letter with the brokers' default policy), brokers
/// that cannot be reached, or credentials without `DescribeConfigs` leave the check undone, with
/// a debug line: only a policy read from the brokers refuses.
pub async fn refuse_compacted(
    connector: &str,
    brokers: &str,
    properties: &BTreeMap<String, crate::secret::Secret>,
    topic: &str,
) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = match probe_config(brokers, properties).create()
    {
        Ok(admin) => admin,
        Err(error) => {
            tracing::debug!(connector, %error, "Cannot create a client to read the dead-letter topic's cleanup policy; not checked.");
            return Ok(());
        }
    };
    let options = AdminOptions::new().request_timeout(Some(DESCRIBE_TIMEOUT));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await;
    let resources = match described {
        Ok(resources) => resources,
        Err(error) => {
            tracing::debug!(connector, %error, "Cannot read the dead-letter topic's cleanup policy; not checked.");
            return Ok(());
        }
    };
    // rdkafka reports a topic that does not exist and one this principal may not describe alike:
    // a resource without settings.
    let policy = resources
        .into_iter()
        .filter_map(Result::ok)
        .find_map(|resource| {
            resource
                .get("cleanup.policy")
                .and_then(|entry| entry.value.clone())
        });
    let Some(policy) = policy else {
        tracing::debug!(
            connector,
            topic,
            "The brokers gave no cleanup policy for the dead-letter topic (it does not exist yet, or this principal lacks DescribeConfigs on it); not checked."
        );
        return Ok(());
    };
    match refusal(connector, topic, &policy) {
        Some(refused) => Err(refused),
        None => Ok(()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacting_policy_is_refused_naming_the_topic_and_the_fix() {
        for policy in ["compact", "compact,delete", "delete, compact", "COMPACT"] {
            let refused = refusal("dead-letter kafka topic dlq", "dlq", policy)
                .unwrap_or_else(|| panic!("{policy} compacts"));
            let said = refused.to_string();
            assert!(said.contains(&format!("cleanup.policy={policy}")), "{said}");
            assert!(said.contains("--entity-name dlq"), "{said}");
        }
    }

    #[test]
    fn a_deleting_policy_is_taken() {
        for policy in ["delete", "Delete", ""] {
            assert!(refusal("c", "dlq", policy).is_none(), "{policy}");
        }
    }
}
