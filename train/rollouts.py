"""RL rollouts on vLLM for video prompts (``rmsd-train rl --rollouts vllm``).

TRL 1.16's own vLLM rollouts (``use_vllm``) route images only, and its weight sync fails on vLLM's
CPU build. Here the rollouts go through rmsd-gen's vLLM backend (``gen/backends/vllm.py``): the
frames, timestamps and per-model metadata of a request are built by the same code that builds a
teacher's, and the completions come back as token ids for TRL to score and train on.

Colocated: the engine lives in the training process (on a GPU it takes ``--rollout-memory`` of the
device's memory). After every policy update it serves the new weights: the policy's state dict
(checkpoint naming, tied embeddings included) is reloaded in place through vLLM's
``reload_weights`` (``VLLMBackend.load_weights``). Server mode (a separate engine process for
multi-node runs) is not built yet.
"""

from __future__ import annotations

from pathlib import Path

from ..gen.backends import GenerationRequest


class VLLMRollouts:
    """A colocated vLLM engine that follows the policy's weights."""

    def __init__(
        self,
        model_path: str | Path,
        memory: float = 0.3,
        use_gpu: bool = False,
        dtype: str = "float32",
        enforce_eager: bool = False,
    ):
        from ..gen.backends import VLLMBackend

        self.backend = VLLMBackend(
            str(model_path),
            dtype=dtype,
            max_model_len=None,
            gpu_memory_utilization=memory,
            use_gpu=use_gpu,
            enforce_eager=enforce_eager,
            in_process=True,
        )
        self.synced_step: int | None = 0  # the engine starts with the checkpoint's weights: the policy's at step 0

    def sync(self, model, step: int) -> None:
        """Serve ``model``'s weights, unless they are already those of ``step``."""
        if step == self.synced_step:
            return
        self.backend.load_weights(model.state_dict().items())
        self.synced_step = step

    def generate(self, requests: list[GenerationRequest]) -> list[list[int]]:
        """One completion's token ids (end of sequence included) per request."""
        return [completions[0].token_ids for completions in self.backend.generate(requests)]


__all__ = ["VLLMRollouts"]
