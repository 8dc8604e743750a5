// Runs once, when the MongoDB volume is empty (the image's /docker-entrypoint-initdb.d), as root:
// one user per service, with readWrite on that service's database and nothing else. Passwords
// are read from the mounted secret files; none is written here.
const fs = require("fs");
const secret = (name) => fs.readFileSync(`/run/secrets/${name}`, "utf8").trim();

const services = [
  ["order", "yellowcart_order", "mongo_order_password"],
  ["payment", "yellowcart_payment", "mongo_payment_password"],
  ["seller-dispute", "yellowcart_dispute", "mongo_seller_dispute_password"],
  ["penalty", "yellowcart_penalty", "mongo_penalty_password"],
];

for (const [user, database, passwordFile] of services) {
  db.getSiblingDB(database).createUser({
    user,
    pwd: secret(passwordFile),
    roles: [{ role: "readWrite", db: database }],
  });
}
