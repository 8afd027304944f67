"""Which torch.export archives are safe to load: shared by the gateway (at upload) and the
worker (before torch.export.load). Torch-free.

torch.export.load hands "opaque object" constants straight to plain `pickle.loads` and custom
objects to the TorchScript unpickler — TORCH_FORCE_WEIGHTS_ONLY_LOAD does not cover either — so
an archive is accepted only when every constant is a tensor, it carries no compiled code and no
pickle beyond the weights-only sample inputs. The check itself lives in tasks.upload_check, with
the TorchScript and zip-member checks, so the gateway and the worker run the same one.
"""

from __future__ import annotations

from tasks.upload_check import UnsafeArchive, check_pt2

__all__ = ["UnsafeArchive", "check_pt2"]
