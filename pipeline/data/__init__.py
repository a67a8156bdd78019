"""The on-disk dataset, its synthetic generator and its Great Expectations validation."""
