"""Loss terms, each a small function or module; the training modules weight and sum them."""
