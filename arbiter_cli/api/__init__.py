"""The HTTP API of ``arbiter serve`` (SPEC §15): the services of the CLI under ``/v1``.

Imported only by ``serve`` (FastAPI and uvicorn are heavy): ``arbiter --help`` never pays for
them.
"""
