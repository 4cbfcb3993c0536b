#!/usr/bin/env bash
# Makes sure a RabbitMQ broker listens on 127.0.0.1:5672 for the AMQP tests.
#
# When the port already accepts connections, it exits 0 and changes nothing.
# Otherwise it installs Debian's rabbitmq-server package if missing, starts
# the broker with every listener on the loopback interface, and waits up to
# 60 seconds for the port. It needs root or sudo to install and start.
set -euo pipefail

readonly HOST="127.0.0.1"
readonly PORT=5672
readonly WAIT_SECONDS=60

port_accepts_connections() {
  timeout 2 bash -c "exec 3<>/dev/tcp/${HOST}/${PORT}" 2>/dev/null
}

fail() {
  echo "rabbitmq.sh: $*" >&2
  exit 1
}

if port_accepts_connections; then
  echo "rabbitmq.sh: a broker already listens on ${HOST}:${PORT}"
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo --preserve-env=RABBITMQ_NODE_IP_ADDRESS,RABBITMQ_NODE_PORT,ERL_EPMD_ADDRESS,RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS)
else
  fail "nothing listens on ${HOST}:${PORT}, and installing or starting RabbitMQ needs root or sudo"
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "rabbitmq.sh: installing rabbitmq-server from the Debian packages"

  # A policy-rc.d that exits 101 stops the package scripts from starting the
  # broker with its default listeners on every interface. The broker is
  # started below, on loopback only.
  policy=/usr/sbin/policy-rc.d
  created_policy=false
  if [[ ! -e "${policy}" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "${policy}" >/dev/null
    "${as_root[@]}" chmod +x "${policy}"
    created_policy=true
  fi

  install_status=0
  "${as_root[@]}" apt-get update || install_status=$?
  if [[ "${install_status}" -eq 0 ]]; then
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server || install_status=$?
  fi

  if [[ "${created_policy}" == true ]]; then
    "${as_root[@]}" rm -f "${policy}"
  fi
  if [[ "${install_status}" -ne 0 ]]; then
    fail "apt-get failed with status ${install_status} while installing rabbitmq-server"
  fi
fi

# AMQP, the Erlang port mapper (epmd) and the node's distribution port listen
# on loopback only.
export RABBITMQ_NODE_IP_ADDRESS="${HOST}"
export RABBITMQ_NODE_PORT="${PORT}"
export ERL_EPMD_ADDRESS="${HOST}"
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

echo "rabbitmq.sh: starting rabbitmq-server on ${HOST}:${PORT}"
"${as_root[@]}" rabbitmq-server -detached || fail "rabbitmq-server -detached failed with status $?"

for ((second = 0; second < WAIT_SECONDS; second++)); do
  if port_accepts_connections; then
    echo "rabbitmq.sh: the broker listens on ${HOST}:${PORT} after ${second} s"
    exit 0
  fi
  sleep 1
done

echo "rabbitmq.sh: last lines of the broker logs in /var/log/rabbitmq:" >&2
"${as_root[@]}" sh -c 'tail -n 20 /var/log/rabbitmq/*.log' >&2 || true
fail "the broker did not listen on ${HOST}:${PORT} within ${WAIT_SECONDS} s: see the logs above"
