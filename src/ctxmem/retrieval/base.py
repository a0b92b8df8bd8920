"""The two retrieval extension points: :class:`Embedder` and :class:`VectorIndex`.

Contracts:

* ``Embedder.embed(texts)`` returns a ``float32`` array of shape ``(len(texts), dim)``
  whose rows are L2-normalized (an empty text gives a zero row), so the inner product is
  the cosine similarity. The same text under the same ``id`` always gives the same vector
  (up to float rounding): ``id`` names everything that changes the vectors (model,
  truncation length, hashing parameters), because caches are keyed by it.
* ``VectorIndex.add(ids, vectors)`` stores vectors under caller-chosen ``int64`` ids;
  ``search(queries, k)`` returns ``(scores, ids)``, both of shape ``(len(queries), k)``,
  best first (inner product, higher is better), padded with ``-inf`` / ``-1`` when the
  index holds fewer than ``k`` vectors. Ties are broken by ascending id in exact indexes.

numpy is imported only for type checking here, so this module is free to import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


@runtime_checkable
class Embedder(Protocol):
    """Texts → L2-normalized float32 vectors."""

    @property
    def id(self) -> str:
        """Stable identity of the vectors this embedder produces (cache key)."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@runtime_checkable
class VectorIndex(Protocol):
    """Inner-product nearest-neighbour search over vectors with int64 ids."""

    @property
    def dim(self) -> int: ...

    def add(self, ids: Sequence[int] | npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None: ...

    def search(
        self, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

    def __len__(self) -> int: ...
