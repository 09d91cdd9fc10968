"""Run pytest and leave with its exit code before interpreter teardown.

temporalio's Rust core can abort the process at interpreter exit
(PyGILState_Release, sdk-python#300); exiting explicitly after pytest has
reported keeps that from turning a passing run red.
"""

from __future__ import annotations

import os
import sys

import pytest

if __name__ == "__main__":
    code = int(pytest.main(sys.argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
