#!/usr/bin/env bash
# One-shot Kafka set-up for docker-compose.yml, run in the Kafka image as the admin principal
# (over the INTERNAL listener): topics with explicit partitions, replication and retention, one
# SCRAM-SHA-512 principal per service, and ACLs. Safe to run again: everything is create-or-keep.
#
# The GRANTS table is the whole access policy of the services: each writes only its own topic
# and checkpoint.events (where it seals signed checkpoints of its store), the dead-letter topics
# of what it consumes (where its consumer parks poison records), reads the topics its
# subscriptions consume, and joins only consumer groups named `<service>.*`. The `auditor`
# principal (compose's `ops` profile) only reads checkpoint.events, without a consumer group.
# tests/deploy/test_compose_file.py checks this table against the services' wiring.
set -euo pipefail

bin=/opt/kafka/bin
admin=(--bootstrap-server "${KAFKA_BOOTSTRAP:-kafka:9094}" --command-config /run/secrets/kafka_admin.properties)

# service         writes (comma separated)          reads (space separated)
GRANTS='
order             order.events,checkpoint.events    order.events payment.events dispute.events penalty.events
payment           payment.events,checkpoint.events  order.events
seller-dispute    dispute.events,checkpoint.events  order.events dispute.events
penalty           penalty.events,checkpoint.events  order.events
'
CHECKPOINT_TOPIC=checkpoint.events

topic() {  # topic NAME [PARTITIONS RETENTION_MS]: create it unless it exists
  "$bin/kafka-topics.sh" "${admin[@]}" --create --if-not-exists --topic "$1" \
    --partitions "${2:-${TOPIC_PARTITIONS:-4}}" --replication-factor "${TOPIC_REPLICATION:-1}" \
    --config "min.insync.replicas=${TOPIC_MIN_ISR:-1}" \
    --config "retention.ms=${3:-${TOPIC_RETENTION_MS:-2592000000}}" \
    --config cleanup.policy=delete
}

principal() {  # principal NAME: its SCRAM credential, from /run/secrets/kafka_<name>_password
  local password_file="/run/secrets/kafka_${1//-/_}_password"
  echo "principal $1"
  "$bin/kafka-configs.sh" "${admin[@]}" --alter --entity-type users --entity-name "$1" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$(cat "$password_file")]" >/dev/null
}

allow() {
  "$bin/kafka-acls.sh" "${admin[@]}" --add --allow-principal "User:$1" "${@:2}" >/dev/null
}

# The seals are the audit trail of the stores' heads: one partition (a few records an interval),
# kept a year (CHECKPOINT_RETENTION_MS) rather than the event topics' 30 days. Created first,
# so the services' rows below find it in place with these settings.
topic "$CHECKPOINT_TOPIC" 1 "${CHECKPOINT_RETENTION_MS:-31536000000}"

while read -r service writes reads; do
  [ -n "$service" ] || continue
  principal "$service"
  for written in ${writes//,/ }; do
    topic "$written"
    allow "$service" --operation Write --operation Describe --topic "$written"
  done
  for consumed in $reads; do
    topic "$consumed"
    topic "$consumed.dlq"
    allow "$service" --operation Read --operation Describe --topic "$consumed"
    allow "$service" --operation Write --operation Describe --topic "$consumed.dlq"
  done
  allow "$service" --operation Read --operation Describe \
    --group "$service." --resource-pattern-type prefixed
done <<<"$GRANTS"

principal auditor
allow auditor --operation Read --operation Describe --topic "$CHECKPOINT_TOPIC"

echo "kafka-init: topics, principals and ACLs in place"
