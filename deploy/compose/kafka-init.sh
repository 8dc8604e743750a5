#!/usr/bin/env bash
# One-shot Kafka set-up for docker-compose.yml, run in the Kafka image as the admin principal
# (over the INTERNAL listener): topics with explicit partitions, replication and retention, one
# SCRAM-SHA-512 principal per service, and ACLs. Safe to run again: everything is create-or-keep.
#
# The GRANTS table is the whole access policy: each service writes only its own topic (and the
# dead-letter topics of what it consumes, where its consumer parks poison records), reads the
# topics its subscriptions consume, and joins only consumer groups named `<service>.*`.
# tests/deploy/test_compose.py checks this table against the services' wiring.
set -euo pipefail

bin=/opt/kafka/bin
admin=(--bootstrap-server "${KAFKA_BOOTSTRAP:-kafka:9094}" --command-config /run/secrets/kafka_admin.properties)

# service         writes          reads (space separated)
GRANTS='
order             order.events    order.events payment.events dispute.events penalty.events
payment           payment.events  order.events
seller-dispute    dispute.events  order.events dispute.events
penalty           penalty.events  order.events
'

topic() {
  "$bin/kafka-topics.sh" "${admin[@]}" --create --if-not-exists --topic "$1" \
    --partitions "${TOPIC_PARTITIONS:-4}" --replication-factor "${TOPIC_REPLICATION:-1}" \
    --config "min.insync.replicas=${TOPIC_MIN_ISR:-1}" \
    --config "retention.ms=${TOPIC_RETENTION_MS:-2592000000}" \
    --config cleanup.policy=delete
}

allow() {
  "$bin/kafka-acls.sh" "${admin[@]}" --add --allow-principal "User:$1" "${@:2}" >/dev/null
}

while read -r service writes reads; do
  [ -n "$service" ] || continue
  password_file="/run/secrets/kafka_${service//-/_}_password"
  echo "principal $service"
  "$bin/kafka-configs.sh" "${admin[@]}" --alter --entity-type users --entity-name "$service" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$(cat "$password_file")]" >/dev/null

  topic "$writes"
  allow "$service" --operation Write --operation Describe --topic "$writes"
  for consumed in $reads; do
    topic "$consumed"
    topic "$consumed.dlq"
    allow "$service" --operation Read --operation Describe --topic "$consumed"
    allow "$service" --operation Write --operation Describe --topic "$consumed.dlq"
  done
  allow "$service" --operation Read --operation Describe \
    --group "$service." --resource-pattern-type prefixed
done <<<"$GRANTS"

echo "kafka-init: topics, principals and ACLs in place"
