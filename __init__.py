"""rmsd: reliable multi-sample distillation of video vision-language models.

The repository root is this package: ``gen/`` is ``rmsd.gen``, ``filter/`` is ``rmsd.filter``,
``train/`` is ``rmsd.train`` and ``schemas/`` is ``rmsd.schemas``. Stages talk to each other only
through Parquet files whose schemas live in ``rmsd.schemas``.
"""

__version__ = "0.1.0"
