"""Errors raised while reading or building a model pack.

common.errors.ServiceError
└── PackError (500: a broken pack is an operator problem, reported at start-up)
    ├── PackFileMissing(path)
    ├── PackMetadataInvalid(path, problems)
    ├── PackModelMismatch(what, expected, actual)
    ├── PackModelUnreadable(path, problem)
    ├── GpuRequired(providers)
    └── the model store (packs.model_store): PackNotStored(tag), PackTampered(tag),
        PackChangedWhileCopied(path), PackNotStorable(path, problem),
        PackPolicyMissing(tag, path)
    └── shared packs (packs.shared_packs): PackNotShared(tag, store, shared dir)
common.errors.Unprocessable
└── PackerInputInvalid(message)  a packer user's mistake: bad file, label, option
"""

from __future__ import annotations

from pathlib import Path

from common.errors import ServiceError, Unprocessable


class PackError(ServiceError):
    code = "pack_error"


class PackFileMissing(PackError):
    def __init__(self, path: Path):
        super().__init__(f"model pack file is missing: {path}")


class PackMetadataInvalid(PackError):
    def __init__(self, path: Path, problems: str):
        super().__init__(f"model pack metadata {path} is invalid: {problems}")


class PackModelUnreadable(PackError):
    def __init__(self, path: Path, problem: str):
        super().__init__(
            f"model pack file {path} is not a loadable ONNX model: {problem}"
        )


class PackModelMismatch(PackError):
    def __init__(self, what: str, expected: object, actual: object):
        super().__init__(
            f"model pack does not match its ONNX model: {what}: "
            f"metadata says {expected!r}, model has {actual!r}"
        )


class GpuRequired(PackError):
    def __init__(self, providers: list[str]):
        super().__init__(
            "settings require a GPU (CUDAExecutionProvider) but onnxruntime is "
            f"running on {providers}; refusing to start"
        )


class PackNotStored(PackError):
    def __init__(self, tag: str, root: object):
        super().__init__(f"model pack {tag} is not in the model store {root}")


class PackNotShared(PackError):
    def __init__(self, tag: str, store: object, shared: object | None):
        where = (
            f"nor published in the shared pack directory {shared}"
            if shared is not None
            else "and no shared pack directory is set "
            "(FLYWHEEL_DEPLOYMENT__SHARED_PACKS_DIR) to fetch it from"
        )
        super().__init__(f"model pack {tag} is not in the model store {store} {where}")


class PackTampered(PackError):
    def __init__(self, tag: str, recorded: str, actual: str):
        super().__init__(
            f"model pack {tag} in the model store does not match its recorded "
            f"hash (sha256 {recorded[:16]}, files now {actual[:16]}): refusing it"
        )


class PackChangedWhileCopied(PackError):
    def __init__(self, path: Path):
        super().__init__(
            f"model pack {path} changed while it was copied into the model store; "
            "nothing was stored"
        )


class PackNotStorable(PackError):
    def __init__(self, path: Path, problem: str):
        super().__init__(f"model pack {path} cannot enter the model store: {problem}")


class PackPolicyMissing(PackError):
    def __init__(self, tag: str, path: Path):
        super().__init__(
            f"model pack {tag} carries no policy ({path} is missing): repack it, or "
            "set FLYWHEEL_GUARDRAILS__POLICY_PATH to a policy for its labels"
        )


class PackerInputInvalid(Unprocessable):
    """What the person packing a model got wrong, in one line that says how to fix
    it (the packer's command line prints it and exits 2)."""

    code = "packer_input_invalid"
