"""Everything MLflow: runs, logged models, registration and promotion by alias."""
