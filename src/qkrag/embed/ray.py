"""Embedding on Ray Data (`--engine ray`, extra `[ray]`): the same `embed()`, with the cache misses encoded by a pool
of Ray actors that each hold the encoder.

`RayEngine` plugs into `EmbedOptions.engine`. `embed()` still does everything else: input checks, the content-hash
cache lookup (a re-run embeds nothing twice, and vectors made by Ray and by the local path share one cache), and
ordering. Only the texts that miss the cache go to Ray: they become a Ray dataset of (position, text) rows, encoded by
`map_batches` over an actor pool (`concurrency` actors, each loading the encoder once; one GPU each where the cluster
has GPUs), and the vectors stream back to the driver, which writes them to the cache batch by batch as they arrive,
so a killed run keeps what it had done. `build_index` hands Ray `chunk` texts at a time and writes each chunk's
vectors to the index while the next one is encoded by the pool.

With no address, a local Ray is started (as many CPUs as asked, no dashboard); `address` joins a cluster
("auto", or "ray://host:10001").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qkrag.cache import pack_vector
from qkrag.errors import QkragError, fail


class _EncodeActor:
    """One Ray actor: holds the encoder (loaded once) and embeds the batches it is given."""

    def __init__(self, encoder: Any, side: str, gpu: bool):
        if gpu and hasattr(encoder, "device"):  # a sentence-transformers encoder; the model may come loaded on CPU
            encoder.device = "cuda"
            encoder.model.to("cuda")
        self.encoder = encoder
        self.side = side
        encoder.warm_up()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.embed_batch([str(t) for t in batch["text"]], self.side)
        return {"position": batch["position"], "vector": np.asarray(vectors, dtype=np.float32)}


@dataclass
class RayEngine:
    """Where `embed()` sends its cache misses: a Ray actor pool. `actors`: encoder copies (default: one per CPU of
    the cluster, at most 8; one per GPU when `gpus`); `batch_size`: texts per actor call; `chunk`: texts per Ray
    dataset when `build_index` streams into an index."""

    address: str | None = None
    num_cpus: int | None = None
    actors: int | None = None
    batch_size: int = 256
    gpus: bool | None = None  # None: use GPUs when the cluster has them
    chunk: int = 50_000

    def start(self) -> Any:
        """Join the cluster at `address`, or start a local Ray (once per process)."""
        try:
            import ray
        except ImportError:
            raise fail("--engine ray", "needs Ray", "pip install 'qkrag[ray]'") from None
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"address": self.address} if self.address else {
                "num_cpus": self.num_cpus, "include_dashboard": False, "object_store_memory": 256 * 1024**2}
            try:
                ray.init(ignore_reinit_error=True, log_to_driver=False, configure_logging=False, **kwargs)
            except Exception as err:  # ConnectionError and friends: the user needs the address and why
                raise fail(f"Ray cluster at {self.address or 'local'}", f"cannot be started or joined ({err})",
                           "check --ray-address (e.g. ray://head:10001), or drop it to run a local Ray") from None
            import ray.data

            ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def _pool(self, ray: Any) -> tuple[int, bool]:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.gpus is not False else 0
        if self.gpus and not gpus:
            raise fail("--engine ray", "GPUs were asked for but the Ray cluster has none", "drop the GPU option")
        size = self.actors or (gpus or max(1, min(8, int(resources.get("CPU", 1)))))
        return size, bool(gpus)

    def embed_into(self, out: dict[int, np.ndarray], todo: list[int], encoder: Any, texts: Sequence[str],
                   keys: list[str], side: str, cache: Any) -> None:
        """`embed()`'s contract: embed the texts at positions `todo` into `out`, writing each batch to `cache`."""
        for positions, vectors in self.stream(encoder, [texts[i] for i in todo], side):
            rows = [todo[p] for p in positions]
            if vectors.shape[0] != len(rows):
                raise QkragError(f"{encoder!r} returned {vectors.shape[0]} vectors for {len(rows)} texts on Ray")
            out.update(zip(rows, vectors))
            if cache is not None:
                cache.put_many({keys[i]: pack_vector(v) for i, v in zip(rows, vectors)})

    def stream(self, encoder: Any, texts: Sequence[str], side: str):
        """Yield (positions into `texts`, vectors) batch by batch, in whatever order the actors finish."""
        if not texts:
            return
        ray = self.start()
        size, gpu = self._pool(ray)
        rows = [{"position": i, "text": t} for i, t in enumerate(texts)]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // self.batch_size, size * 4)))
        pool = ray.data.ActorPoolStrategy(size=min(size, max(1, len(rows) // self.batch_size)))
        encoded = dataset.map_batches(_EncodeActor, fn_constructor_args=(encoder, side, gpu), batch_size=self.batch_size,
                                      compute=pool, num_gpus=1 if gpu else None, num_cpus=None if gpu else 1,
                                      batch_format="numpy")
        for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
            yield [int(p) for p in batch["position"]], np.stack(batch["vector"]).astype(np.float32, copy=False)

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


ENGINES = ("local", "ray")


def engine_for(name: str | None, address: str | None = None, num_cpus: int | None = None) -> RayEngine | None:
    """The engine a user names: "local" (None: embed in this process) or "ray" (a local Ray, or the cluster at
    `address`)."""
    if name in (None, "", "local"):
        if address:
            raise fail("--ray-address", "is given but the engine is local", "add --engine ray, or drop --ray-address")
        return None
    if name != "ray":
        raise fail("--engine", f"{name!r} is not an engine", f"use one of {', '.join(ENGINES)}")
    return RayEngine(address=address, num_cpus=num_cpus)
