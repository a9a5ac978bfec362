"""The one compiled part of the media path (media/_wire.c); everything else is in
pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("media._wire", ["media/_wire.c"], extra_compile_args=["-O2"])])
