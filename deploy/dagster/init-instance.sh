#!/bin/sh
# One-shot `dagster-init` job, before the webserver and daemon start:
#  1. create or migrate Dagster's tables (one process, so the webserver and daemon do
#     not race to create them on a fresh database, and upgrades of Dagster apply their
#     schema migrations);
#  2. set the limit of the `database` pool (see concurrency.pools in dagster.yaml).
# Needs DAGSTER_HOME and the DAGSTER_PG_* variables; idempotent.
set -eu

dagster instance migrate
dagster instance concurrency set database "${ASTRID_DATABASE_POOL_LIMIT:-4}"
dagster instance concurrency get database
