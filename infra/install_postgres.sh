#!/bin/sh
# Postgres (Debian's `postgresql`) for infra/servers.py and tests/infra/test_servers.py, which run
# the team's stack without Docker. Installs it with apt-get when missing and running as root, without
# the `main` cluster Debian would create and start (the tests start their own, as the postgres user);
# otherwise says what to run.
set -e
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing postgresql (apt-get) for the team-stack tests"
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/deocclude.conf
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
else
    echo "postgresql is missing: the team-stack tests (tests/infra/test_servers.py) will be skipped. Install it with" >&2
    echo "    sudo apt-get install -y postgresql    (Debian/Ubuntu; or your system's PostgreSQL server package)" >&2
fi
