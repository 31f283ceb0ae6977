#!/usr/bin/env bash
# Create a private CA, a server certificate for the compose services and one client
# certificate per agent, in deploy/certs (used by docker-compose.tls.yml).
set -euo pipefail
out=${1:-"$(dirname "$0")/certs"}
mkdir -p "$out" && cd "$out"
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=lada-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=lada-server" -keyout server.key \
  -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,DNS:allocator,DNS:llm-service,IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
  -extfile san.ext -out server.crt 2>/dev/null
# One client certificate per agent, and one for internal callers (allocator, healthchecks).
for agent in internal agent-purchases agent-rates agent-percentages; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$agent" -keyout "$agent.key" \
    -out "$agent.csr" 2>/dev/null
  openssl x509 -req -in "$agent.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -out "$agent.crt" 2>/dev/null
done
rm -f ./*.csr san.ext
echo "certificates in $out"
