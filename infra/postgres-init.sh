#!/bin/sh
# Run once by the postgres image on an empty volume, as POSTGRES_USER: the databases beside
# POSTGRES_DB (mlflow), and the role Optuna workers on other machines log in with.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname mlflow \
     -v optuna_password="$OPTUNA_DB_PASSWORD" <<'SQL'
CREATE DATABASE prefect;
CREATE ROLE optuna LOGIN PASSWORD :'optuna_password';
CREATE DATABASE optuna OWNER optuna;
SQL
