"""Users' datasets in: per-file checks, landmark-placed masks, and the all-or-nothing ingest."""
