"""Selection methods over stored features: GIST, LESS and the baselines, and the selection rules they share."""
