"""Container networking: IP address management, Linux bridges and veths, nftables NAT.

``service.NetworkService`` is the entry point; the container service calls its
``prepare``/``attach``/``detach`` around a container's life, the API routes call
the rest.
"""
