"""Builds porting's optional compiled kernel (porting/families/orcahello/_winograd.c) at install; everything else is in pyproject.toml.

The kernel is plain C (no Python or torch API; loaded with ctypes), so it needs only the C compiler a fresh Linux
machine has. Where there is none, or it fails, the install goes on without it and porting.families.orcahello.winograd runs the same
arithmetic in torch ops (``optional=True``).
"""

import sys

from setuptools import Extension, setup

ext = Extension(
    "porting.families.orcahello._winograd",
    sources=["porting/families/orcahello/_winograd.c"],
    extra_compile_args=["-O3", "-std=gnu11", "-ffp-contract=off", "-pthread"],
    extra_link_args=["-pthread"],
    optional=True,
)
setup(ext_modules=[ext] if sys.platform.startswith("linux") else [])
