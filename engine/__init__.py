"""The engine: models, text, statistics, pruning methods, measurements, searches, the loop.

Importing it installs the engine's catalog into the schema, so study files and candidate specs
are checked against the registries (see ``prunestudio.schema.catalog``).
"""

from prunestudio.engine.catalog import install as _install_catalog

_install_catalog()
