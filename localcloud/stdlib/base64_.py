"""base64.encode (bytes to text) and base64.decode (text to bytes), standard alphabet.

https://cloud.google.com/workflows/docs/reference/stdlib/base64/encode
https://cloud.google.com/workflows/docs/reference/stdlib/base64/decode
"""
from __future__ import annotations

import base64
import binascii

from ..errors import fail
from . import builtin
from ..values import expect


@builtin("base64.encode")
def encode(context, data, padding=True):
    expect(data, bytes, "data", "base64.encode")
    expect(padding, bool, "padding", "base64.encode")
    text = base64.b64encode(data).decode("ascii")
    return text if padding else text.rstrip("=")


@builtin("base64.decode")
def decode(context, data, padding=True):
    expect(data, str, "data", "base64.decode")
    expect(padding, bool, "padding", "base64.decode")
    text = data.replace("\r", "").replace("\n", "")   # documented: CR and LF are ignored
    if padding and len(text) % 4:
        fail("ValueError", "base64.decode: input is not padded to a multiple of 4 characters")
    if not padding:
        text = text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        fail("ValueError", "base64.decode: input is not valid Base64")
