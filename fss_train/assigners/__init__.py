"""Label assigners behind one interface (see ``base.py``): name -> class, no registry magic."""

from fss_train.assigners.atss import ATSSAssigner
from fss_train.assigners.base import AssignResult
from fss_train.assigners.fss import FSSAssigner
from fss_train.assigners.maxiou import MaxIoUAssigner
from fss_train.assigners.simota import SimOTAAssigner
from fss_train.assigners.tal import TALAssigner

ASSIGNERS = {"fss": FSSAssigner, "simota": SimOTAAssigner, "tal": TALAssigner, "atss": ATSSAssigner,
             "maxiou": MaxIoUAssigner}


def build_assigner(name: str, **params):
    """An assigner by name; unknown names or parameters are errors that list the valid ones."""
    if name not in ASSIGNERS:
        raise ValueError(f"unknown assigner {name!r}; choose one of {sorted(ASSIGNERS)}")
    cls = ASSIGNERS[name]
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"assigner {name!r} has no parameter(s) {unknown}; known: {sorted(known)}")
    return cls(**params)


__all__ = ["ASSIGNERS", "AssignResult", "build_assigner", "FSSAssigner", "SimOTAAssigner", "TALAssigner",
           "ATSSAssigner", "MaxIoUAssigner"]
