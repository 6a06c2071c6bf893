"""uuid.generate: a random 128-bit UUID in string form.

https://cloud.google.com/workflows/docs/reference/stdlib/uuid/generate
"""
from __future__ import annotations

import uuid

from . import builtin


@builtin("uuid.generate")
def generate(context):
    return str(uuid.uuid4())
