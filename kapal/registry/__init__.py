"""kapal-registry: an OCI Distribution Spec registry server (see docs/registry.md)."""
