"""Hardware targets and simulator backends: the interfaces and registries (the entries live in hw_targets/)."""
