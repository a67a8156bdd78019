"""Where the DVC-tracked data and models are shared: the team's DVC remote."""
