"""The C part of the package; everything else is declared in pyproject.toml.

cdc.source._rowdecode decodes binlog row images for the reader (cdc/source/row_decoder.py); gcc and the Python
headers build it, which deploy/setup.sh installs where they are missing. It is optional: where it
cannot be built, pip says so and installs the rest, and the reader decodes the same values in Python
(slower) and logs a warning naming the fix. deploy/setup.sh refuses an install without it.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cdc.source._rowdecode", sources=["cdc/source/_rowdecode.c"], extra_compile_args=["-O2"],
                             optional=True)])
