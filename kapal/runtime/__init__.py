"""Running containers: the OCI spec, the runtime, cgroups and the container monitor."""
