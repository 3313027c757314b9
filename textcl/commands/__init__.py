"""Sub-commands of the `textcl` CLI, one module each."""
