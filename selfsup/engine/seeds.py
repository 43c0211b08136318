"""Seeds derived from (seed, purpose, step, ...): what makes a resumed run continue exactly.

Everything random in a pretraining step is drawn from a generator seeded by the run's seed, a purpose and the step: the
data order (``"epoch"``, :class:`selfsup.engine.batches.StepBatchSampler`), the view parameters (``"views"``) and the
masks (``"masks"``), the method's own randomness (``"method"``, :class:`~selfsup.methods.base.StepContext`) and the
global torch generator (``"global"``, reseeded before each forward). Nothing depends on how many draws came before, so
a run resumed at step s draws what the uninterrupted run drew there.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "generator_for"]


def derive_seed(*parts) -> int:
    """A 63-bit seed from any parts (ints, strings); stable across processes and Python's hash randomisation."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator_for(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))
