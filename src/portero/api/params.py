"""Path parameters that name something portero owns, checked against strict patterns before any lookup.

A value that cannot be one of ours is simply not found (404, as for any unknown name): it never reaches the
store or a runtime, so no input names a container or process portero did not start.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path

from portero.errors import NotFound
from portero.spec.models import NAME_PATTERN

REPLICA_ID = r"^[a-z][a-z0-9-]{0,63}$"
DEPLOYMENT_ID = r"^[a-z][a-z0-9-]{0,95}$"


def _replica_id(
    replica_id: Annotated[str, Path(description="A replica's id (`portero status`).", examples=["portal-1-eea0"])],
) -> str:
    if not re.fullmatch(REPLICA_ID, replica_id):
        raise NotFound("replica", replica_id)
    return replica_id


def _service_name(name: Annotated[str, Path(description="A service of the spec.", examples=["portal"])]) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise NotFound("service", name)
    return name


def _deployment_id(
    deployment_id: Annotated[
        str, Path(description="A deployment's id (`portero history`).", examples=["portal-1764300000-a1b2"])
    ],
) -> str:
    if not re.fullmatch(DEPLOYMENT_ID, deployment_id):
        raise NotFound("deployment", deployment_id)
    return deployment_id


ReplicaId = Annotated[str, Depends(_replica_id)]
ServiceName = Annotated[str, Depends(_service_name)]
DeploymentId = Annotated[str, Depends(_deployment_id)]
