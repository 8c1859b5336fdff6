"""rmsd: reliable multi-sample distillation of video vision-language models.

The repository root is this package: ``gen/`` is ``rmsd.gen``, ``filter/`` is ``rmsd.filter``,
``train/`` is ``rmsd.train`` and ``schemas/`` is ``rmsd.schemas``. Stages talk to each other only
through Parquet files whose schemas live in ``rmsd.schemas``. Beside the stages, and importing none
of them: ``rmsd.schemas``, ``rmsd.models`` (models and the checkpoint loader) and ``rmsd.synth``
(the embedded benchmark). The few stage modules another stage may import (frame decoding, the
generation backends, the prompts reader) are listed, with their reasons, in tests/test_boundaries.py.
"""

__version__ = "0.1.0"
