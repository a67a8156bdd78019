#!/bin/sh
# Run once on an empty database, as POSTGRES_USER, beside POSTGRES_DB (mlflow): by the postgres
# image from /docker-entrypoint-initdb.d, and by infra/servers.py. Creates Prefect's database and
# the role and database Optuna workers on other machines log in to. The password is read from the
# environment by psql itself, so no command line shows it.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname mlflow <<'SQL'
\getenv optuna_password OPTUNA_DB_PASSWORD
CREATE DATABASE prefect;
CREATE ROLE optuna LOGIN PASSWORD :'optuna_password';
CREATE DATABASE optuna OWNER optuna;
SQL
