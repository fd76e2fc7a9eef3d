"""Production launcher: YAML manifest -> task graph -> MPI/one-process execution."""
