"""Docker volumes: the ``local`` driver's named and anonymous volumes, and containers' mount points.

``service`` keeps volumes (``<data root>/volumes/<name>/_data``) and the record
of which container mounts what where; ``kapal.container.mounts`` turns a
container's ``-v``/``--mount``/image ``VOLUME`` configuration into that record
and into OCI mounts.
"""

from kapal.volume.service import ANONYMOUS_LABEL, MountPoint, Volume, VolumeService

__all__ = ["ANONYMOUS_LABEL", "MountPoint", "Volume", "VolumeService"]
