#!/usr/bin/env bash
# Writes every secret docker-compose.yml mounts into deploy/compose/secrets/ (or $1): random
# passwords, the Kafka broker's JAAS file and admin client config, the MongoDB key file and each
# service's store URL. Existing files are kept, so running it again changes nothing; delete a
# file to rotate it (and recreate what holds the old value). The directory is not committed.
set -euo pipefail
dir="${1:-$(dirname "$0")/secrets}"
mkdir -p "$dir" && chmod 700 "$dir"
umask 022  # container users (kafka uid 1000, mongodb 999, yellowcart 10001) read the mounts

random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
keep() {  # keep NAME CONTENT: write only when absent
  [ -e "$dir/$1" ] || printf '%s\n' "$2" >"$dir/$1"
}

# Bearer tokens: an Ed25519 signing key (kept here for `yellowcart token` and the smoke demo;
# the services mount only the public JWKS). With an identity provider, replace token_jwks by
# its key set and delete token_signing_key.
if [ ! -e "$dir/token_signing_key" ]; then
  openssl genpkey -algorithm ed25519 -out "$dir/token_signing_key"
  chmod 600 "$dir/token_signing_key"
fi
public_x="$(openssl pkey -in "$dir/token_signing_key" -pubout -outform DER | tail -c 32 |
  base64 | tr '+/' '-_' | tr -d '=\n')"
keep token_jwks "{\"keys\": [{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": \"$public_x\", \"kid\": \"compose-1\", \"alg\": \"EdDSA\", \"use\": \"sig\"}]}"
keep gateway_secret "$(random)"
keep kafka_admin_password "$(random)"
for service in order payment seller_dispute penalty; do
  keep "kafka_${service}_password" "$(random)"
  keep "mongo_${service}_password" "$(random)"
done
keep mongo_root_password "$(random)"
keep mongo_keyfile "$(head -c 756 /dev/urandom | base64 -w 0)"

admin_password="$(cat "$dir/kafka_admin_password")"
keep kafka_server_jaas.conf "KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
    username=\"admin\" password=\"$admin_password\" user_admin=\"$admin_password\";
  org.apache.kafka.common.security.scram.ScramLoginModule required;
};"
keep kafka_admin.properties "security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin_password\";"

store_url() {  # store_url SERVICE USER DATABASE
  local password
  password="$(cat "$dir/mongo_${1}_password")"
  keep "store_url_$1" "mongodb://$2:$password@mongo:27017/$3?replicaSet=rs0&authSource=$3"
}
store_url order order yellowcart_order
store_url payment payment yellowcart_payment
store_url seller_dispute seller-dispute yellowcart_dispute
store_url penalty penalty yellowcart_penalty

echo "secrets in $dir"
