#!/usr/bin/env bash
# Installs and starts what Sigil's test suite talks to: SoftHSM2 and opensc
# (PKCS#11), openssl (OCSP/CRL interop), curl, certbot and lego (ACME
# clients), and the local PostgreSQL and MariaDB servers.
# Idempotent; run as root on Debian. Under CI=true a peer that cannot be made
# available is an error, never a silent skip.
set -euo pipefail

need_pkgs=()
command -v softhsm2-util >/dev/null 2>&1 || need_pkgs+=(softhsm2)
command -v pkcs11-tool   >/dev/null 2>&1 || need_pkgs+=(opensc)
command -v openssl       >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v curl          >/dev/null 2>&1 || need_pkgs+=(curl)
command -v certbot       >/dev/null 2>&1 || need_pkgs+=(certbot)
command -v lego          >/dev/null 2>&1 || need_pkgs+=(lego)
command -v psql          >/dev/null 2>&1 || need_pkgs+=(postgresql postgresql-client)
command -v mariadbd      >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server mariadb-client)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${need_pkgs[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "deps: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432 with a database "test" reachable without a password.
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  echo "deps: starting PostgreSQL"
  if ls /etc/postgresql >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
  for _ in $(seq 1 50); do pg_up && break; sleep 0.2; done
fi
if pg_up; then
  if ! psql -h 127.0.0.1 -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
    # A fresh cluster: trust local TCP connections and create the test database.
    su postgres -c "psql -Atqc \"select 1 from pg_database where datname='test'\"" | grep -q 1 \
      || su postgres -c "createdb test" || true
  fi
fi
if ! psql -h 127.0.0.1 -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
  echo "deps: PostgreSQL is not reachable at postgres://postgres@127.0.0.1:5432/test" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
# MariaDB on 127.0.0.1:3306, root without a password.
my_up() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'select 1' >/dev/null 2>&1; }
if ! my_up; then
  echo "deps: starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
  for _ in $(seq 1 100); do my_up && break; sleep 0.2; done
  if ! my_up && mariadb -u root -e 'select 1' >/dev/null 2>&1; then
    # A fresh install: let root in over TCP from loopback without a password.
    mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES" || true
  fi
fi
if ! my_up; then
  echo "deps: MariaDB is not reachable at root@127.0.0.1:3306" >&2
  [ "${CI:-}" = "true" ] && exit 1
fi
echo "deps: ok (softhsm2 $(softhsm2-util --version 2>/dev/null), $(openssl version | cut -d' ' -f1-2), postgres $(psql -h 127.0.0.1 -U postgres -d test -Atqc 'show server_version' 2>/dev/null || echo unavailable), mariadb $(mariadb -h 127.0.0.1 -u root -Nse 'select version()' 2>/dev/null || echo unavailable))"
