"""Clusters, client side: profiles, reaching a head through the Jobs API (summary, storage
probe), and the embedded local head (``ray start --head`` as a child process).

May import: the bottom layer (``core.*`` modules) only. ``core.runs`` builds on this package.
"""

from napari_raysam.core.cluster.connection import (
    PROBE_MARK,
    ClusterSummary,
    check_cluster_storage,
    connect,
    make_client,
    package_dir,
    resolve_address,
)
from napari_raysam.core.cluster.local_head import LocalHead
from napari_raysam.core.cluster.profiles import (
    LOCAL,
    ClusterError,
    ClusterProfile,
    ProfileStore,
    validate_address,
    validate_token,
)

__all__ = ["LOCAL", "PROBE_MARK", "ClusterError", "ClusterProfile", "ClusterSummary", "LocalHead",
           "ProfileStore", "check_cluster_storage", "connect", "make_client", "package_dir",
           "resolve_address", "validate_address", "validate_token"]
