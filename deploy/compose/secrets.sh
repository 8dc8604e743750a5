#!/usr/bin/env bash
# Writes every secret docker-compose.yml mounts into deploy/compose/secrets/ (or $1): random
# passwords, the Kafka broker's JAAS file and admin client config, the MongoDB key file, each
# service's store URL (and all four as one JSON file for the auditor's tools), and the Ed25519
# key pair the services sign checkpoints with. Existing files are kept, so running it again changes nothing; delete a
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
keep kafka_auditor_password "$(random)"

# Checkpoints: one Ed25519 key pair (PKCS#8 / SubjectPublicKeyInfo PEM, as `yellowcart
# checkpoint-key` writes them) for all four services, which sign their seals with the private
# key; the auditor's tools check seals against the public one. The container user reads the
# mount, so the private key is not 0600 here: the directory (0700) keeps others out. To rotate,
# delete checkpoint_key (its public key is rewritten with it) after copying checkpoint_public_key
# somewhere safe: the old public key is what verifies the seals made before the rotation.
if [ ! -e "$dir/checkpoint_key" ]; then
  openssl genpkey -algorithm ed25519 -out "$dir/checkpoint_key"
  chmod 644 "$dir/checkpoint_key"
  rm -f "$dir/checkpoint_public_key"
fi
keep checkpoint_public_key "$(openssl pkey -in "$dir/checkpoint_key" -pubout)"
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
# the four together, for the auditor's tools (YELLOWCART_STORE_URLS_FILE in the `ops` profile)
url() { tr -d '\n' <"$dir/store_url_$1"; }
keep store_urls "{\"order\": \"$(url order)\", \"payment\": \"$(url payment)\", \"seller-dispute\": \"$(url seller_dispute)\", \"penalty\": \"$(url penalty)\"}"

echo "secrets in $dir"
