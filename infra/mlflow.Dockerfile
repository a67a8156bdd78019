# MLflow's image plus the Postgres driver and boto3 it needs for the team's stack
# (backend store on Postgres, artifacts proxied to MinIO's S3). Same versions as pyproject.toml.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir "psycopg[binary]==3.3.9" "boto3==1.43.117"
