"""CIC provisioner: the only service that launches and terminates nodes."""
