"""GIST: the task subspace from validation gradients, and the rank advisor."""
